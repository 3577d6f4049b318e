"""Tests of the 'av_digits' TFDS builder (real handwriting + real speech)."""
import pathlib

import numpy as np
import pytest
import soundfile
from sklearn import datasets as sklearn_datasets

from configs import av_digits as av_digits_config
from mmjax.data import datasets
from mmjax.data.builders import av_digits
from mmjax.data.builders import digits

SPLITS = tuple(av_digits.SPLIT_SEEDS)


def _build(data_dir, config='tiny'):
  builder = av_digits.AvDigits(config=config, data_dir=str(data_dir))
  builder.download_and_prepare()
  return builder


@pytest.fixture(scope='module')
def tiny_dir(tmp_path_factory):
  directory = tmp_path_factory.mktemp('av_digits')
  _build(directory)
  return directory


@pytest.fixture(scope='module')
def examples(tiny_dir):
  """split -> feature -> values of every example of the 'tiny' build."""
  builder = av_digits.AvDigits(config='tiny', data_dir=str(tiny_dir))
  out = {}
  for split in SPLITS:
    source = builder.as_data_source(split=split)
    rows = [source[i] for i in range(len(source))]
    out[split] = {k: [r[k] for r in rows] for k in rows[0]}
    for k in ('digit', 'spoken', 'same', 'speaker', 'take'):
      out[split][k] = np.array(out[split][k])
    out[split]['text'] = [t.decode() for t in out[split]['text']]
  return out


def test_generation_is_deterministic(tiny_dir, tmp_path):
  _build(tmp_path)
  files = lambda d: {f.name: f.read_bytes() for f in sorted(
      pathlib.Path(d).glob('av_digits/tiny/*/*.array_record*'))}
  first, second = files(tiny_dir), files(tmp_path)
  assert len(first) == len(SPLITS) and first == second


def test_split_sizes(examples):
  # tiny: takes 0-3 of 6 speakers x 10 digits; theo's 40 are test.
  for split, size in (('train', 200), ('test', 40), ('train_pairs', 200),
                      ('test_pairs', 40)):
    assert len(examples[split]['digit']) == size, split
  sizes = av_digits.AvDigitsConfig(name='x').split_sizes
  assert sizes == {'train': 2500, 'test': 500, 'train_pairs': 2500,
                   'test_pairs': 500}


def test_default_split_holds_out_a_speaker(examples):
  theo = av_digits.SPEAKERS.index('theo')
  for base in ('train', 'test'):
    for split in (base, f'{base}_pairs'):
      speakers = set(examples[split]['speaker'])
      assert (speakers == {theo}) == (base == 'test'), (split, speakers)
  for split in ('train', 'test'):
    full = av_digits.recordings().speaker[
        av_digits.split_recordings('speaker', 50, split)]
    assert (set(full) == {theo}) == (split == 'test')
  assert len(set(examples['train']['speaker'])) == 5


def test_takes_split_is_by_take():
  rec = av_digits.recordings()
  train = av_digits.split_recordings('take', 50, 'train')
  test = av_digits.split_recordings('take', 50, 'test')
  assert set(rec.take[test]) == set(range(5))
  assert set(rec.take[train]) == set(range(5, 50))
  assert len(set(rec.speaker[test])) == len(set(rec.speaker[train])) == 6
  assert sorted(np.concatenate([train, test])) == list(range(3000))
  with pytest.raises(ValueError, match='no split rule'):
    av_digits.split_recordings('random', 50, 'train')
  # Config 'takes', as benchmarks/av_digits/interaction.md uses it: 300 test
  # pairs, 150 of each `same` class, so chance is exactly 0.5.
  sizes = av_digits.AvDigitsConfig(name='x', split='take').split_sizes
  assert sizes == {'train': 2700, 'test': 300, 'train_pairs': 2700,
                   'test_pairs': 300}
  assert av_digits.pairing('take', 50, 'test_pairs').same.sum() == 150


def test_images_are_sklearn_images_disjoint_between_train_and_test(examples):
  sk = sklearn_datasets.load_digits()  # Loaded afresh, not cached.
  scaled = np.round(sk.images * 255 / 16).astype(np.uint8)
  used = {}
  for split in SPLITS:
    images = np.stack(examples[split]['image'])[..., 0]
    rows = av_digits.pairing('speaker', 4, split)
    np.testing.assert_array_equal(images, scaled[rows.image])
    np.testing.assert_array_equal(examples[split]['digit'],
                                  sk.target[rows.image])
    base = split.removesuffix('_pairs')
    assert set(rows.image) <= set(digits.split_image_ids(base))
    used.setdefault(base, set()).update(rows.image)
  assert not used['train'] & used['test']


def test_audio_is_the_vendored_recording(examples):
  for split, row in (('test', 0), ('train_pairs', 7)):
    ex = {k: v[row] for k, v in examples[split].items()}
    path = (pathlib.Path(av_digits.FSDD_DIR) / 'recordings' /
            f"{ex['spoken']}_{av_digits.SPEAKERS[ex['speaker']]}_"
            f"{ex['take']}.wav")
    samples, rate = soundfile.read(path, dtype='int16')
    assert rate == av_digits.SAMPLE_RATE == 8000
    assert ex['audio'].dtype == np.int16
    np.testing.assert_array_equal(ex['audio'], samples)
  # Each split uses each of its recordings once.
  for split in SPLITS:
    keys = set(zip(examples[split]['spoken'], examples[split]['speaker'],
                   examples[split]['take']))
    assert len(keys) == len(examples[split]['take'])


@pytest.mark.parametrize('split', ['train', 'test'])
def test_digit_is_both_written_and_spoken(examples, split):
  ex = examples[split]
  np.testing.assert_array_equal(ex['digit'], ex['spoken'])
  assert set(ex['same']) == {1}
  counts = np.bincount(ex['digit'], minlength=10)
  assert len(set(counts)) == 1, counts  # Every digit equally often.


def _check_same_is_interaction(digit, spoken, same):
  """`same` is spoken == written, 50/50, and independent of each digit."""
  np.testing.assert_array_equal(same, digit == spoken)
  assert same.mean() == 0.5
  for modality in (digit, spoken):
    # P(same | this modality's digit) = 1/2 for every digit, and the digit is
    # uniform given either label: the modality alone is at chance.
    for d in range(10):
      assert same[modality == d].mean() == 0.5, (d, same[modality == d])
    for label in (0, 1):
      counts = np.bincount(modality[same == label], minlength=10)
      assert len(set(counts)) == 1, (label, counts)


@pytest.mark.parametrize('split', ['train_pairs', 'test_pairs'])
def test_same_needs_both_modalities(examples, split):
  ex = examples[split]
  _check_same_is_interaction(ex['digit'], ex['spoken'], ex['same'])


@pytest.mark.parametrize('rule', av_digits.SPLIT_RULES)
def test_same_needs_both_modalities_in_full_builds(rule):
  for split in ('train_pairs', 'test_pairs'):
    rows = av_digits.pairing(rule, 50, split)
    _check_same_is_interaction(rows.digit, rows.spoken, rows.same)


def test_captions():
  neutral = {av_digits.caption(d, t, 'neutral') for d in range(10)
             for t in range(3)}
  assert len(neutral) == 3  # The same for every digit: no information.
  assert not set(' '.join(neutral).split()) & set(av_digits.DIGIT_WORDS)
  for d, word in enumerate(av_digits.DIGIT_WORDS):
    for t in range(3):
      named = av_digits.caption(d, t, 'named').split()
      assert word in named and set(named) <= set(av_digits.VOCABULARY)
      assert not set(named) & (set(av_digits.DIGIT_WORDS) - {word})
  assert all(set(c.split()) <= set(av_digits.VOCABULARY) for c in neutral)
  rows = av_digits.generate('test_pairs', range(40), split_rule='speaker',
                            takes=4, caption_kind='named')
  np.testing.assert_array_equal(
      [av_digits.DIGIT_WORDS.index(t.split()[-1]) for t in rows['text']],
      rows['digit'])  # The written digit, never the spoken one.


def test_tiny_captions_name_no_digit(examples):
  for split in SPLITS:
    for text in examples[split]['text']:
      assert not set(text.split()) & set(av_digits.DIGIT_WORDS)
      assert text in av_digits.CAPTIONS['neutral']


@pytest.mark.parametrize('variant', ['', 'label=same'])
def test_config_reads_the_dataset(tiny_dir, variant):
  c = av_digits_config.get_config(variant)
  c.dataset.builder_config, c.dataset.data_dir = 'tiny', str(tiny_dir)
  spec = datasets.DatasetSpec(c.dataset, c.model.modalities)
  assert spec.modalities == ('image', 'audio')
  assert spec.meta['sample_rate'] == 8000
  assert spec.num_classes == (2 if variant else 10)
  assert spec.num_examples(c.dataset.eval_split, 'dataset.eval_split') == 40
  example = spec.select(spec.source(c.dataset.train_split)[0])
  assert set(example) == {'image', 'audio', 'label'}
  assert c.model.fusion.name == 'cross_attention'
