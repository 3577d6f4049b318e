"""'digits': handwritten digits, spoken digit words and text clues.

An AV-MNIST-like fusion benchmark in which every modality is informative and
none suffices:

- image: uint8 [8, 8, 1], one of the 1,797 real handwritten digits that ship
  with scikit-learn (`sklearn.datasets.load_digits`, values 0-16 scaled to
  0-255) plus Gaussian pixel noise.
- audio: int16 [N <= MAX_AUDIO_SAMPLES] at SAMPLE_RATE, the digit's word
  ('zero'..'nine') spoken by a random speaker (`speech.synthesize_batch`) over
  white noise.
- text: a clue that narrows the digit to 2 or 3 candidates (its parity and
  whether it is below five, e.g. "a small odd number" -> one or three) but
  never names it; every word is in VOCABULARY.
- label: the digit (LABEL_NAMES = DIGIT_WORDS).

The images are split once, stratified by digit and seeded, into train (80%)
and test (20%); no image is in both. Train pairs each of its images with
`pairs_per_image` different clips and clues, test pairs each image once. The
'default' noise levels are meant to leave each modality alone short of all
three together; 'clean' adds no noise.

Generated locally, stored as array_record; example i of a split is drawn from
a numpy Generator seeded with (seed, split, i).
"""
import dataclasses
import functools
from typing import Dict, Tuple

import numpy as np
import tensorflow_datasets as tfds

from mmjax.data.builders import generated
from mmjax.data.builders import speech

DIGIT_WORDS = ('zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven',
               'eight', 'nine')
LABEL_NAMES = DIGIT_WORDS
SAMPLE_RATE = speech.SAMPLE_RATE
# The longest digit word by the slowest speaker fits.
MAX_AUDIO_SAMPLES = max(speech.max_num_samples([w], SAMPLE_RATE)
                        for w in DIGIT_WORDS)
IMAGE_SHAPE = (8, 8, 1)
TEST_FRACTION = 0.2
# Clue templates: {size} is small (0-4) or large (5-9), {half} lower or upper,
# {parity} odd or even; each clue leaves 2 or 3 candidate digits.
CLUE_TEMPLATES = ('a {size} {parity} number', 'an {parity} digit in the {half} '
                  'half', 'it is {parity} and {size}')
# Every word a clue can contain, in a fixed order.
VOCABULARY = ('a', 'an', 'it', 'is', 'and', 'in', 'the', 'number', 'digit',
              'half', 'odd', 'even', 'small', 'large', 'lower', 'upper')
SPLIT_SEEDS = {'train': 0, 'test': 1}
_SEED = 20251124


@dataclasses.dataclass(eq=False)
class DigitsConfig(tfds.core.BuilderConfig):
  """Pairing and noise levels of one 'digits' variant.

  Attributes:
    pairs_per_image: train examples per train image (each with its own
      audio clip and clue); test images appear once.
    image_noise: std of the Gaussian pixel noise, as a fraction of 255.
    audio_noise: std of the white background noise of the speech (full
      scale 1; the speech itself has an RMS of 0.05 to 0.15).
  """
  pairs_per_image: int = 4
  image_noise: float = 0.35
  audio_noise: float = 0.3

  @property
  def split_sizes(self) -> Dict[str, int]:
    return {'train': len(split_image_ids('train')) * self.pairs_per_image,
            'test': len(split_image_ids('test'))}


class Digits(generated.GeneratedBuilder):
  """Builder of the 'digits' dataset (see the module docstring)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [
      DigitsConfig(name='default', description='Noisy images and audio.'),
      DigitsConfig(name='clean', description='No added noise.',
                   image_noise=0., audio_noise=0.),
  ]

  def _features(self):
    return {
        'image': generated.bytes_tensor(IMAGE_SHAPE, np.uint8),
        'audio': generated.bytes_tensor((None,), np.int16),
        'text': tfds.features.Text(),
        'label': tfds.features.ClassLabel(names=LABEL_NAMES),
    }

  def _generate_chunk(self, split, indices):
    cfg = self.builder_config
    return generate(split, indices, pairs_per_image=cfg.pairs_per_image,
                    image_noise=cfg.image_noise, audio_noise=cfg.audio_noise)


@functools.lru_cache(maxsize=None)
def source_images() -> Tuple[np.ndarray, np.ndarray]:
  """scikit-learn's digits: images uint8 [1797, 8, 8] (0-16), labels [1797].

  Read-only: they are cached and shared.
  """
  # Imported here: scikit-learn takes about 1.5 s to import, which every
  # mmjax process (training, evaluation, each test subprocess) would pay
  # at start-up for a dataset most runs do not use.
  from sklearn import datasets as sklearn_datasets  # pylint: disable=g-import-not-at-top
  digits = sklearn_datasets.load_digits()
  images, labels = digits.images.astype(np.uint8), digits.target.astype(int)
  images.setflags(write=False)
  labels.setflags(write=False)
  return images, labels


@functools.lru_cache(maxsize=None)
def split_image_ids(split: str) -> np.ndarray:
  """Sorted indices into `source_images()` of `split`: a stratified 80/20 split.

  Read-only: they are cached and shared.
  """
  if split not in SPLIT_SEEDS:
    raise ValueError(f"digits: no split {split!r}; the splits are "
                     f"{', '.join(SPLIT_SEEDS)}.")
  _, labels = source_images()
  rng = np.random.default_rng(_SEED)
  test = np.sort(np.concatenate([
      rng.permutation(ids)[:round(TEST_FRACTION * len(ids))]
      for ids in (np.flatnonzero(labels == d) for d in range(len(DIGIT_WORDS)))
  ]))
  ids = test if split == 'test' else np.setdiff1d(np.arange(len(labels)), test)
  ids.setflags(write=False)
  return ids


def clue(digit: int, template: int) -> str:
  """The text clue of `digit` from CLUE_TEMPLATES[template]."""
  return CLUE_TEMPLATES[template].format(
      parity='odd' if digit % 2 else 'even',
      size='small' if digit < 5 else 'large',
      half='lower' if digit < 5 else 'upper')


def candidates(text: str) -> Tuple[int, ...]:
  """The digits whose clues (under any template) equal `text`."""
  return tuple(d for d in range(len(DIGIT_WORDS))
               if any(clue(d, t) == text for t in range(len(CLUE_TEMPLATES))))


def generate(split: str, indices, *, pairs_per_image: int, image_noise: float,
             audio_noise: float) -> Dict[str, np.ndarray]:
  """Examples `indices` of `split` as feature -> array with a leading axis.

  Train example i shows train image `i % num_train_images`, so consecutive
  examples are different images and image k's pairs are k, k + n, k + 2n...
  `pairs_per_image` only bounds the indices. `audio` is an object array of
  int16 waveforms of varying length.
  """
  images, labels = source_images()
  ids = split_image_ids(split)
  size = len(ids) * (pairs_per_image if split == 'train' else 1)
  indices = np.asarray(indices)
  if not 0 <= indices.min() <= indices.max() < size:
    raise ValueError(f"digits: split '{split}' has {size} examples; got "
                     f'indices from {indices.min()} to {indices.max()}.')
  image_ids = ids[indices % len(ids)]
  label = labels[image_ids]
  rngs = [np.random.default_rng((_SEED, SPLIT_SEEDS[split], i))
          for i in indices]
  text = np.array([clue(d, rng.integers(len(CLUE_TEMPLATES)))
                   for d, rng in zip(label, rngs)], dtype=object)
  pixel_noise = np.stack([rng.standard_normal(IMAGE_SHAPE, np.float32)
                          for rng in rngs]) * np.float32(image_noise * 255.)
  scaled = images[image_ids, ..., None].astype(np.float32) * (255. / 16.)
  utterances = speech.synthesize_batch(
      [[DIGIT_WORDS[d]] for d in label], rngs, sample_rate=SAMPLE_RATE,
      noise=audio_noise)
  audio = np.empty(len(indices), dtype=object)
  audio[:] = [u.waveform for u in utterances]
  return {
      'image': np.clip(np.round(scaled + pixel_noise), 0, 255).astype(np.uint8),
      'audio': audio,
      'text': text,
      'label': label,
  }
