"""Tests of the 'digits' TFDS builder."""
import pathlib

import numpy as np
import pytest
from sklearn import datasets as sklearn_datasets

from mmjax import dsp
from mmjax.data.builders import digits
from mmjax.data.builders import speech

SPLITS = ('train', 'test')


def _build(config, data_dir):
  builder = digits.Digits(config=config, data_dir=str(data_dir))
  builder.download_and_prepare()
  return builder


def _examples(builder):
  """split -> feature -> values of every example."""
  out = {}
  for split in SPLITS:
    source = builder.as_data_source(split=split)
    rows = [source[i] for i in range(len(source))]
    out[split] = {k: [r[k] for r in rows] for k in rows[0]}
    out[split]['text'] = [t.decode() for t in out[split]['text']]
    out[split]['label'] = np.array(out[split]['label'])
  return out


@pytest.fixture(scope='module')
def default_dir(tmp_path_factory):
  directory = tmp_path_factory.mktemp('digits')
  _build('default', directory)
  return directory


@pytest.fixture(scope='module')
def examples(default_dir):
  return _examples(digits.Digits(config='default', data_dir=str(default_dir)))


@pytest.fixture(scope='module')
def clean(tmp_path_factory):
  return _examples(_build('clean', tmp_path_factory.mktemp('clean')))


def _expected_images(split, count):
  """The sklearn images of examples 0..count-1 of split, scaled to 0-255."""
  images = sklearn_datasets.load_digits().images  # Loaded afresh, not cached.
  ids = digits.split_image_ids(split)
  return np.round(images[ids[np.arange(count) % len(ids)]] * 255 / 16)


def test_generation_is_deterministic(default_dir, tmp_path):
  _build('default', tmp_path)
  files = lambda d: {f.name: f.read_bytes() for f in sorted(
      pathlib.Path(d).glob('digits/default/*/*.array_record*'))}
  first, second = files(default_dir), files(tmp_path)
  assert len(first) == 2 and first == second


def test_example_depends_only_on_its_index():
  kwargs = dict(pairs_per_image=4, image_noise=0.35, audio_noise=0.3)
  together = digits.generate('train', range(6), **kwargs)
  alone = digits.generate('train', [5, 2], **kwargs)
  for k, v in alone.items():
    for row, index in enumerate([5, 2]):
      np.testing.assert_array_equal(v[row], together[k][index], err_msg=k)


def test_split_is_stratified_disjoint_and_complete():
  labels = sklearn_datasets.load_digits().target
  train, test = digits.split_image_ids('train'), digits.split_image_ids('test')
  with pytest.raises(ValueError, match="no split 'validation'"):
    digits.split_image_ids('validation')
  assert not set(train) & set(test)
  assert sorted(np.concatenate([train, test])) == list(range(len(labels)))
  per_digit = np.bincount(labels, minlength=10)
  np.testing.assert_allclose(np.bincount(labels[test], minlength=10),
                             0.2 * per_digit, atol=0.5)


def test_split_sizes(examples):
  num_train = len(digits.split_image_ids('train'))
  num_test = len(digits.split_image_ids('test'))
  assert (num_train, num_test) == (1438, 359)
  assert len(examples['train']['label']) == 4 * num_train
  assert len(examples['test']['label']) == num_test


@pytest.mark.parametrize('split', SPLITS)
def test_labels_are_balanced(examples, split):
  counts = np.bincount(examples[split]['label'], minlength=10)
  assert counts.min() >= 0.85 * counts.mean(), counts


@pytest.mark.parametrize('split', SPLITS)
def test_clue_narrows_the_digit_without_naming_it(examples, split):
  ex = examples[split]
  templates_used = set()
  for text, label in zip(ex['text'], ex['label']):
    words = text.split()
    assert set(words) <= set(digits.VOCABULARY), text
    assert not set(words) & set(digits.DIGIT_WORDS), text
    # Parity and size (0-4 / 5-9) leave 2 or 3 digits, the label among them.
    odd, small = 'odd' in words, ('small' in words or 'lower' in words)
    assert odd == (label % 2 == 1) and small == (label < 5), (text, label)
    assert 'even' in words or odd
    assert 'large' in words or 'upper' in words or small
    assert label in digits.candidates(text)
    assert len(digits.candidates(text)) in (2, 3)
    templates_used.add(words[0])  # 'a', 'an' or 'it'.
  assert len(templates_used) == len(digits.CLUE_TEMPLATES)


def test_clean_images_are_the_sklearn_images(clean):
  for split in SPLITS:
    images = np.stack(clean[split]['image'])
    assert images.shape[1:] == (8, 8, 1) and images.dtype == np.uint8
    np.testing.assert_array_equal(
        images[..., 0], _expected_images(split, len(images)))
    ids = digits.split_image_ids(split)
    np.testing.assert_array_equal(
        clean[split]['label'], sklearn_datasets.load_digits().target[
            ids[np.arange(len(images)) % len(ids)]])


def test_default_images_are_the_sklearn_images_plus_noise(examples):
  images = np.stack(examples['test']['image'])[..., 0].astype(np.float64)
  expected = _expected_images('test', len(images))
  # Where the clean pixel is 0, noise N(0, s) clipped at 0 gives 0 half of
  # the time and a mean of s / sqrt(2 pi) (the clip at 255 is > 2.8 s away).
  noise = images[expected == 0]
  assert abs(np.mean(noise == 0) - 0.5) < 0.02
  np.testing.assert_allclose(noise.mean(), 0.35 * 255 / np.sqrt(2 * np.pi),
                             rtol=0.05)
  # A noisy image is mostly still nearest to its own clean image (84% here;
  # chance 1/359): the noise hides the digit only in part.
  distances = ((images[:, None] - expected[None])**2).sum((-1, -2))
  assert np.mean(distances.argmin(1) == np.arange(len(images))) > 0.7


def test_train_pairs_of_an_image_have_different_audio(clean):
  ex = clean['train']
  num_images = len(digits.split_image_ids('train'))
  for k in range(5):
    pairs = [ex['audio'][k + p * num_images] for p in range(4)]
    assert all(np.array_equal(ex['image'][k], ex['image'][k + p * num_images])
               for p in range(4))
    assert len({a.tobytes() for a in pairs}) == 4


def _feature(waveform):
  """Log-mel of a clip, trimmed to its loud frames, resampled to 12 frames."""
  log_mel = dsp.log_mel_spectrogram(
      waveform[None].astype(np.float32) / 32767, digits.SAMPLE_RATE, 256,
      128, 40, log_offset=1e-4)[0]
  loud = log_mel.max(1) > log_mel.max() - 8
  log_mel = log_mel[np.argmax(loud):len(loud) - np.argmax(loud[::-1])]
  grid = np.linspace(0, len(log_mel) - 1, 12)
  resampled = np.stack([np.interp(grid, np.arange(len(log_mel)), band)
                        for band in log_mel.T], 1)
  return (resampled - resampled.mean()).ravel()


def test_clean_audio_speaks_the_label(clean):
  """Nearest template (the digit words by other speakers) is the label."""
  templates = np.array([[_feature(u.waveform) for u in speech.synthesize_batch(
      [[w]] * 3, [np.random.default_rng((99, k)) for k in range(3)],
      noise=0.)] for w in digits.DIGIT_WORDS])  # [10, 3, dim]
  ex = clean['test']
  features = np.array([_feature(a) for a in ex['audio']])
  distances = ((features[:, None, None] - templates[None])**2).sum(-1)
  predicted = distances.min(-1).argmin(-1)
  assert np.mean(predicted == ex['label']) > 0.9
  lengths = [len(a) for a in clean['train']['audio']]
  assert max(lengths) <= digits.MAX_AUDIO_SAMPLES


def test_default_audio_is_noisier_than_clean(examples, clean):
  # The same draws, plus white noise of std 0.3: compare the sample std.
  noisy = np.concatenate(examples['test']['audio'][:20]) / 32767
  quiet = np.concatenate(clean['test']['audio'][:20]) / 32767
  np.testing.assert_allclose(noisy.std(), np.hypot(quiet.std(), 0.3),
                             rtol=0.1)
