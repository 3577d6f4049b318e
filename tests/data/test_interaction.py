"""Tests of the 'interaction' TFDS builder and its config."""
import numpy as np
import pytest
from scipy import ndimage

from configs import interaction as interaction_config
from mmjax import data
from mmjax import dsp
from mmjax.data.builders import interaction
from mmjax.data.builders import speech

SPLITS = ('train', 'test')
BITS = ('image_bit', 'text_bit', 'audio_bit')


@pytest.fixture(scope='module')
def examples(data_dir):
  """split -> feature -> values of every example of 'tiny' (arrays, except
  the variable-length audio: a list)."""
  builder = interaction.Interaction(config='tiny', data_dir=data_dir)
  builder.download_and_prepare()
  out = {}
  for split in SPLITS:
    source = builder.as_data_source(split=split)
    rows = [source[i] for i in range(len(source))]
    out[split] = {k: np.stack([r[k] for r in rows]) for k in rows[0]
                  if k != 'audio'}
    out[split]['audio'] = [r['audio'] for r in rows]
    for k in ('text', 'transcript'):
      out[split][k] = [t.decode() for t in out[split][k]]
  return out


def test_example_depends_only_on_its_index():
  kwargs = dict(image_noise=0.08, audio_noise=0.04)
  together = interaction.generate('train', range(6), **kwargs)
  alone = interaction.generate('train', [5, 2], **kwargs)
  for k, v in alone.items():
    for row, index in enumerate([5, 2]):
      np.testing.assert_array_equal(v[row], together[k][index], err_msg=k)
  other_split = interaction.generate('test', [5, 2], **kwargs)
  assert not np.array_equal(other_split['image'], alone['image'])


def test_splits_shapes_and_dtypes(examples):
  assert {s: len(examples[s]['label']) for s in SPLITS} == {
      'train': 320, 'test': 100}
  ex = examples['train']
  assert ex['image'].shape == (320, 32, 32, 3) and ex['image'].dtype == np.uint8
  assert all(a.ndim == 1 and a.dtype == np.int16 and
             0 < len(a) <= interaction.MAX_AUDIO_SAMPLES for a in ex['audio'])
  assert len({len(a) for a in ex['audio']}) > 10  # Speakers' rates vary.


@pytest.mark.parametrize('split', SPLITS)
def test_labels_are_xors_of_the_bits(examples, split):
  ex = examples[split]
  np.testing.assert_array_equal(ex['label'], ex['image_bit'] ^ ex['text_bit'])
  np.testing.assert_array_equal(
      ex['xor3'], ex['image_bit'] ^ ex['text_bit'] ^ ex['audio_bit'])


def test_bits_and_labels_are_balanced_and_independent(examples):
  ex = examples['train']
  # 320 fair coins: the mean is 0.5 +- 0.028 (std).
  for k in BITS + ('label', 'xor3'):
    assert 0.41 < ex[k].mean() < 0.59, k
  # Every (image, text) cell is populated (80 expected each), so neither bit
  # alone predicts the label: within each value of one bit, the label is
  # the other bit, a fair coin.
  cells = np.bincount(2 * ex['image_bit'] + ex['text_bit'], minlength=4)
  assert cells.min() >= 55, cells
  for bit in ('image_bit', 'text_bit'):
    for value in (0, 1):
      assert 0.35 < ex['label'][ex[bit] == value].mean() < 0.65, (bit, value)


def _shape_of(image):
  """'round' or 'angular' from pixels: the object is the region far from the
  background (the median border colour); a circle fills ~0.79 of its
  bounding box, a square all of it, a triangle half."""
  image = image.astype(np.float32)
  border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
  # Saturated colours differ from any grey by >= 100 in some channel; the
  # 'tiny' pixel noise (std <= 20) rarely moves a pixel 55 the other way.
  foreground = np.abs(image - np.median(border, 0)).max(-1) > 55
  regions, _ = ndimage.label(ndimage.binary_opening(foreground))
  largest = np.argmax(np.bincount(regions.ravel())[1:]) + 1
  box = ndimage.find_objects((regions == largest).astype(int))[0]
  fill = (regions[box] == largest).mean()
  return 'round' if 0.65 < fill < 0.9 else 'angular'


@pytest.mark.parametrize('split', SPLITS)
def test_image_bit_is_the_shape(examples, split):
  ex = examples[split]
  shapes = np.array([interaction.IMAGE_CLASSES.index(_shape_of(x))
                     for x in ex['image']])
  assert np.mean(shapes == ex['image_bit']) > 0.95


@pytest.mark.parametrize('split', SPLITS)
def test_text_bit_is_the_keyword(examples, split):
  ex = examples[split]
  slots = set(interaction.NOUNS + interaction.ADJECTIVES +
              interaction.TEXT_KEYWORDS[0] + interaction.TEXT_KEYWORDS[1])
  templates_used = set()
  for text, bit in zip(ex['text'], ex['text_bit']):
    words = text.split()
    assert set(words) <= set(interaction.VOCABULARY), text
    assert len(words) <= interaction.MAX_WORDS
    assert len([w for w in words if w in interaction.TEXT_KEYWORDS[bit]]) == 1
    assert not set(words) & set(interaction.TEXT_KEYWORDS[1 - bit]), text
    # A template is known by its words outside the slots.
    templates_used.add(tuple('a' if w == 'an' else w for w in words
                             if w not in slots))
  assert templates_used <= {
      tuple(w for w in t.split() if w[0] != '{')
      for t in interaction.TEMPLATES}
  if split == 'train':
    assert len(templates_used) == len(interaction.TEMPLATES)


def _feature(waveform):
  """Log-mel of a clip, trimmed to its loud frames, resampled to 8 frames."""
  log_mel = dsp.log_mel_spectrogram(
      waveform[None].astype(np.float32) / 32767, interaction.SAMPLE_RATE, 256,
      128, 40, log_offset=1e-4)[0]
  loud = log_mel.max(1) > log_mel.max() - 8
  log_mel = log_mel[np.argmax(loud):len(loud) - np.argmax(loud[::-1])]
  grid = np.linspace(0, len(log_mel) - 1, 8)
  resampled = np.stack([np.interp(grid, np.arange(len(log_mel)), band)
                        for band in log_mel.T], 1)
  return (resampled - resampled.mean()).ravel()


def test_audio_bit_is_the_spoken_word(examples):
  """The transcript's word set is the bit, and the nearest template (each
  word said by other speakers, without noise) is the transcript."""
  ex = examples['test']
  for word, bit in zip(ex['transcript'], ex['audio_bit']):
    assert word in interaction.AUDIO_WORDS[bit]
  words = [w for ws in interaction.AUDIO_WORDS for w in ws]
  templates = np.array([[_feature(u.waveform) for u in speech.synthesize_batch(
      [[w]] * 3, [np.random.default_rng((99, k)) for k in range(3)],
      noise=0.)] for w in words])  # [words, 3, dim]
  features = np.array([_feature(a) for a in ex['audio']])
  distances = ((features[:, None, None] - templates[None])**2).sum(-1)
  heard = np.array(words)[distances.min(-1).argmin(-1)]
  assert np.mean(heard == np.array(ex['transcript'])) > 0.9


@pytest.mark.parametrize('variant, modalities, label, pp', [
    ('', ('image', 'text'), 'label',
     f'value_range(-1, 1)|tokenize({interaction.MAX_WORDS})'),
    ('modalities=image+audio+text,label=xor3,fusion=late',
     ('image', 'audio', 'text'), 'xor3',
     f'value_range(-1, 1)|decode_audio|pad_audio('
     f'{interaction.MAX_AUDIO_SAMPLES})|tokenize({interaction.MAX_WORDS})'),
])
def test_config_reads_the_dataset(data_dir, examples, variant, modalities,
                                  label, pp):
  del examples  # Prepares interaction/tiny in data_dir.
  config = interaction_config.get_config(variant)
  config.dataset.builder_config, config.dataset.data_dir = 'tiny', data_dir
  assert config.model.modalities == modalities
  assert config.input.pp_train == config.input.pp_eval == pp
  spec = data.DatasetSpec(config.dataset, config.model.modalities)
  assert spec.feature_map['label'] == label and spec.num_classes == 2
  assert spec.meta['vocabulary'] == interaction.VOCABULARY
  if 'audio' in modalities:
    assert spec.meta['sample_rate'] == interaction.SAMPLE_RATE
  # Every word is in the vocabulary: no unknown ids (1).
  pp_eval = data.preprocessing(config.input, spec)[1]
  source = spec.source('train')
  out = [pp_eval(spec.select(source[i])) for i in range(16)]
  assert all((x['text'] != 1).all() and x['text_mask'].any() for x in out)
