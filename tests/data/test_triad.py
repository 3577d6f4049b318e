"""Tests of the 'triad' TFDS builder and its dataset spec."""
import pathlib

import numpy as np
import pytest
from scipy import ndimage

from mmjax import data
from mmjax.data import pipeline
from mmjax.data.builders import triad

SPLITS = ('train', 'test')


@pytest.fixture(scope='module')
def examples(data_dir):
  """split -> feature -> array stacked over every example of 'tiny'."""
  builder = triad.Triad(config='tiny', data_dir=data_dir)
  builder.download_and_prepare()
  out = {}
  for split in SPLITS:
    source = builder.as_data_source(split=split)
    rows = [source[i] for i in range(len(source))]
    out[split] = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
  return out


def _record_files(data_dir):
  files = sorted(pathlib.Path(data_dir).glob('triad/tiny/*/*.array_record*'))
  return {f.name: f.read_bytes() for f in files}


def test_generation_is_deterministic(examples, data_dir, tmp_path):
  del examples  # Prepares triad/tiny in data_dir.
  triad.Triad(config='tiny', data_dir=str(tmp_path)).download_and_prepare()
  first, second = _record_files(data_dir), _record_files(tmp_path)
  assert len(first) == 2 and first == second


def test_example_depends_only_on_its_index():
  kwargs = dict(image_noise=0.08, audio_noise=0.05)
  together = triad.generate('train', range(6), **kwargs)
  alone = triad.generate('train', [5, 2], **kwargs)
  for k, v in alone.items():
    np.testing.assert_array_equal(v, together[k][[5, 2]], err_msg=k)
  other_split = triad.generate('test', [5, 2], **kwargs)
  assert not np.array_equal(other_split['image'], alone['image'])


def test_splits_shapes_and_dtypes(examples):
  assert {s: len(examples[s]['label']) for s in SPLITS} == {
      'train': 256, 'test': 100}
  ex = examples['train']
  assert ex['image'].shape == (256, 32, 32, 3) and ex['image'].dtype == np.uint8
  assert ex['audio'].shape == (256, 4000) and ex['audio'].dtype == np.int16
  assert all(isinstance(t, bytes) for t in ex['text'])


@pytest.mark.parametrize('split', SPLITS)
def test_label_combines_the_three_attributes(examples, split):
  ex = examples[split]
  np.testing.assert_array_equal(
      ex['label'], 4 * ex['image_attribute'] + 2 * ex['audio_attribute'] +
      ex['text_attribute'])


def test_attributes_and_labels_are_balanced(examples):
  ex = examples['train']
  for m in ('image', 'audio', 'text'):
    assert 0.4 < ex[f'{m}_attribute'].mean() < 0.6, m
  assert np.bincount(ex['label'], minlength=8).min() >= 16  # 32 expected.


def _square_fill(image):
  """Fraction of its bounding box that the shape fills (~0.79 circle, 1 square)."""
  image = ndimage.median_filter(image.astype(np.float32), size=(3, 3, 1))
  border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
  to_background = np.linalg.norm(image - np.median(border, 0), axis=-1)
  # The most shape-like 5x5 window lies inside the shape: its colour.
  centre = np.unravel_index(
      np.argmax(ndimage.uniform_filter(to_background, 5)), image.shape[:2])
  is_shape = np.linalg.norm(image - image[centre], axis=-1) < to_background
  parts, _ = ndimage.label(is_shape)
  shape = parts == parts[centre]
  return shape.sum() / shape[ndimage.find_objects(shape.astype(int))[0]].size


def test_image_attribute_is_the_shape(examples):
  ex = examples['train']
  squares = np.array([_square_fill(x) > 0.9 for x in ex['image']])
  assert np.mean(squares == ex['image_attribute']) > 0.95


def test_audio_attribute_is_the_tone_band(examples):
  ex = examples['train']
  spectrum = np.abs(np.fft.rfft(ex['audio'].astype(np.float32), axis=1))
  freqs = np.fft.rfftfreq(triad.NUM_SAMPLES, 1 / triad.SAMPLE_RATE)
  low, high = (spectrum[:, (freqs >= lo) & (freqs <= hi)].max(1)
               for lo, hi in triad.AUDIO_BANDS)
  np.testing.assert_array_equal(high > low, ex['audio_attribute'])
  assert np.abs(ex['audio']).max() > 0.2 * 32767  # Not silence.


def test_text_attribute_is_the_keyword(examples):
  ex = examples['train']
  for text, attribute in zip(ex['text'], ex['text_attribute']):
    words = text.decode().split()
    assert triad.MIN_WORDS <= len(words) <= triad.MAX_WORDS
    assert set(words) <= set(triad.VOCABULARY)
    assert [w for w in words if w in triad.KEYWORDS[attribute]], text
    assert not [w for w in words if w in triad.KEYWORDS[1 - attribute]], text


def test_preprocess_matches_example_spec_and_ranges(make_config, examples):
  config = make_config(dataset__name='triad', input__pp_train=(
      'value_range(-1, 1)|decode_audio|pad_audio(4000)|tokenize(16)'))
  spec = data.DatasetSpec(config.dataset)
  pp, _ = data.preprocessing(config.input, spec)
  source = spec.source('train')
  example_spec = pipeline.example_spec(spec, pp)
  out = [pp(spec.select(source[i])) for i in range(32)]
  for k, s in example_spec.items():
    for x in out:
      assert (x[k].shape, x[k].dtype) == (s.shape, s.dtype), k
  batch = {k: np.stack([x[k] for x in out]) for k in out[0]}
  assert -1 <= batch['image'].min() < -0.5 and 0.5 < batch['image'].max() <= 1
  assert -1 <= batch['audio'].min() and batch['audio'].max() <= 1
  assert batch['audio_mask'].all()
  np.testing.assert_array_equal(batch['text_mask'], batch['text'] != 0)
  # Every triad word is in the vocabulary: no unknown ids (1).
  assert batch['text'].max() < pp.meta['vocab_size']
  assert (batch['text'] != 1).all()
  np.testing.assert_array_equal(batch['text_mask'].sum(1), [
      min(len(t.split()), 16) for t in examples['train']['text'][:32]])
  np.testing.assert_array_equal(batch['label'], examples['train']['label'][:32])
  assert spec.num_classes == 8 and pp.meta['sample_rate'] == 8000
