"""'av_digits': real handwritten digits paired with real spoken digits.

Every example pairs two real recordings of people:

- image: uint8 [8, 8, 1], one of the 1,797 handwritten digits that ship with
  scikit-learn (`digits.source_images()`, values 0-16 scaled to 0-255), no
  added noise.
- audio: int16 [N] at SAMPLE_RATE (8 kHz), one recording of the Free Spoken
  Digit Dataset (FSDD, vendored in `fsdd/`): 6 English speakers with
  different accents, 50 takes of each digit each, trimmed, 1,148 to 18,262
  samples long (stored whole; CLIP_SAMPLES covers all but 20 of them).
- text: a short caption. 'neutral' captions (CAPTIONS['neutral']) name
  neither digit and carry no information about the labels; 'named' captions
  name the written digit (the image's), never the spoken one. Every word is
  in VOCABULARY.
- digit: the written digit (the image's); spoken: the recorded digit;
  speaker, take: of the recording.
- same: whether the spoken digit is the written one (LABEL_NAMES of
  SAME_NAMES: 'different', 'same').

Two kinds of splits, built from the same recordings and images:

- 'train' / 'test': the image shows the digit that is spoken (digit ==
  spoken, same is always 1): plain multimodal classification of `digit`,
  which each modality informs on its own.
- 'train_pairs' / 'test_pairs': `same` is the label, a pure interaction.
  Within the recordings of each spoken digit, every other one (in a seeded
  order) is paired with an image of that digit (same = 1), the others with
  an image of another digit, cycling through the nine others (same = 0). So
  `same` is 50/50 given the spoken digit, and, because each written digit
  gets each offset from the nine others equally often, 50/50 given the
  written digit too (exactly, where a split has an even number of
  recordings per digit): the image alone and the audio alone are at chance,
  and only a model that compares the two can beat it.

Each split uses each of its recordings once, in a seeded order. Images come
from `digits.split_image_ids` (stratified, seeded 80/20; no image is in both
train and test), cycling through a seeded order of the images of each digit.

Split rules (`AvDigitsConfig.split`):

- 'speaker' (configs 'default', 'named', 'tiny'): the recordings of
  TEST_SPEAKERS ('theo') are the test splits, the other five speakers train:
  the test speaker is never heard in training. theo has a USA/neutral accent,
  as does jackson in training, so the split measures generalisation to a new
  voice, not a new accent.
- 'take' (config 'takes'): upstream's split, takes 0-4 (TEST_TAKES) of every
  speaker are test and takes 5-49 train; every speaker is in both.

The recordings are CC BY-SA 4.0 (`fsdd/LICENSE`): data built from them
carries that license.

Stored as array_record; the pairing and the captions are drawn from numpy
Generators seeded with (seed, split), so a build is the same bytes every time.
"""
import dataclasses
import functools
import os
from typing import Dict, NamedTuple, Sequence

import numpy as np
import tensorflow_datasets as tfds

from mmjax import audio_io
from mmjax.data.builders import digits
from mmjax.data.builders import generated

DIGIT_WORDS = digits.DIGIT_WORDS
SAME_NAMES = ('different', 'same')
SAMPLE_RATE = 8000  # FSDD's rate; `read_recording` checks every file.
# Suggested length to pad or crop to: 1 s, longer than all but 20 of the
# 3,000 recordings (the longest is 18,262 samples; the median 3,358).
CLIP_SAMPLES = 8000
IMAGE_SHAPE = digits.IMAGE_SHAPE
FSDD_DIR = os.path.join(os.path.dirname(__file__), 'fsdd')
SPEAKERS = ('george', 'jackson', 'lucas', 'nicolas', 'theo', 'yweweler')
NUM_TAKES = 50
TEST_SPEAKERS = ('theo',)
TEST_TAKES = 5  # 'take' rule: takes below this are test (upstream's split).
SPLIT_RULES = ('speaker', 'take')
SPLIT_SEEDS = {'train': 0, 'test': 1, 'train_pairs': 2, 'test_pairs': 3}
# Caption templates; {digit} is the written digit's word.
CAPTIONS = {
    'neutral': ('a handwritten digit and a spoken digit',
                'someone wrote a digit and someone said a digit',
                'a digit on paper and a digit out loud'),
    'named': ('a handwritten {digit}',
              'someone wrote {digit}',
              'the digit on paper is {digit}'),
}
# Every word a caption can contain, in a fixed order.
VOCABULARY = ('a', 'and', 'digit', 'handwritten', 'is', 'loud', 'on', 'out',
              'paper', 'said', 'someone', 'spoken', 'the',
              'wrote') + DIGIT_WORDS
_SEED = 20261207


@dataclasses.dataclass(eq=False)
class AvDigitsConfig(tfds.core.BuilderConfig):
  """Split rule, captions and size of one 'av_digits' variant.

  Attributes:
    split: 'speaker' (TEST_SPEAKERS are test) or 'take' (takes below
      TEST_TAKES are test).
    caption: 'neutral' or 'named' (a key of CAPTIONS).
    takes: the takes 0..takes-1 of each speaker and digit are used (fewer
      for a small build).
  """
  split: str = 'speaker'
  caption: str = 'neutral'
  takes: int = NUM_TAKES

  @property
  def split_sizes(self) -> Dict[str, int]:
    return {s: len(pairing(self.split, self.takes, s)) for s in SPLIT_SEEDS}


class AvDigits(generated.GeneratedBuilder):
  """Builder of the 'av_digits' dataset (see the module docstring)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [
      AvDigitsConfig(name='default', description=(
          'Speaker-disjoint: theo is test; captions name no digit.')),
      AvDigitsConfig(name='named', caption='named', description=(
          'Speaker-disjoint; captions name the written digit.')),
      AvDigitsConfig(name='takes', split='take', description=(
          "Upstream's split: takes 0-4 are test; captions name no digit.")),
      AvDigitsConfig(name='tiny', takes=4, description=(
          'Speaker-disjoint, takes 0-3 only (240 recordings), for tests.')),
  ]

  def _features(self):
    return {
        'image': generated.bytes_tensor(IMAGE_SHAPE, np.uint8),
        'audio': generated.bytes_tensor((None,), np.int16),
        'text': tfds.features.Text(),
        'digit': tfds.features.ClassLabel(names=DIGIT_WORDS),
        'spoken': tfds.features.ClassLabel(names=DIGIT_WORDS),
        'same': tfds.features.ClassLabel(names=SAME_NAMES),
        'speaker': tfds.features.ClassLabel(names=SPEAKERS),
        'take': tfds.features.Scalar(dtype=np.int32),
    }

  def _generate_chunk(self, split, indices):
    cfg = self.builder_config
    return generate(split, indices, split_rule=cfg.split, takes=cfg.takes,
                    caption_kind=cfg.caption)


class Recordings(NamedTuple):
  """The FSDD recordings, sorted by (digit, speaker, take); each [3000].

  Attributes:
    digit: the spoken digit.
    speaker: index into SPEAKERS.
    take: 0..NUM_TAKES-1.
  """
  digit: np.ndarray
  speaker: np.ndarray
  take: np.ndarray


def recording_path(digit: int, speaker: int, take: int) -> str:
  """The vendored WAV file of one recording."""
  return os.path.join(FSDD_DIR, 'recordings',
                      f'{digit}_{SPEAKERS[speaker]}_{take}.wav')


@functools.lru_cache(maxsize=None)
def recordings() -> Recordings:
  """Every recording: the full digit x speaker x take grid (checked on disk).

  Read-only: they are cached and shared.
  """
  grid = np.stack(np.meshgrid(np.arange(len(DIGIT_WORDS)),
                              np.arange(len(SPEAKERS)), np.arange(NUM_TAKES),
                              indexing='ij'), -1).reshape(-1, 3)
  found = set(os.listdir(os.path.join(FSDD_DIR, 'recordings')))
  missing = [os.path.basename(recording_path(*row)) for row in grid
             if os.path.basename(recording_path(*row)) not in found]
  if missing:
    raise FileNotFoundError(
        f'av_digits: {len(missing)} FSDD recordings are missing from '
        f'{FSDD_DIR}/recordings (e.g. {missing[0]}); reinstall mmjax, whose '
        'package data includes them.')
  out = Recordings(*(np.ascontiguousarray(grid[:, k]) for k in range(3)))
  for values in out:
    values.setflags(write=False)
  return out


def split_recordings(split_rule: str, takes: int, split: str) -> np.ndarray:
  """Sorted indices into `recordings()` of `split` ('train' or 'test') under
  `split_rule`, among takes 0..takes-1."""
  if split_rule not in SPLIT_RULES:
    raise ValueError(f'av_digits: no split rule {split_rule!r}; the rules are '
                     f"{', '.join(SPLIT_RULES)}.")
  rec = recordings()
  if split_rule == 'speaker':
    is_test = np.isin(rec.speaker, [SPEAKERS.index(s) for s in TEST_SPEAKERS])
  else:
    is_test = rec.take < TEST_TAKES
  return np.flatnonzero((is_test == (split == 'test')) & (rec.take < takes))


class Pairing(NamedTuple):
  """The rows of one split, each [rows].

  Attributes:
    recording: index into `recordings()`.
    image: index into `digits.source_images()`.
    digit: the written digit (the image's).
    spoken: the recorded digit.
    same: 1 where they are equal.
    template: index into the caption templates.
  """
  recording: np.ndarray
  image: np.ndarray
  digit: np.ndarray
  spoken: np.ndarray
  same: np.ndarray
  template: np.ndarray

  def __len__(self):
    return len(self.recording)


@functools.lru_cache(maxsize=None)
def pairing(split_rule: str, takes: int, split: str) -> Pairing:
  """Which recording, image and caption template make each row of `split`
  (see the module docstring). Read-only: cached and shared."""
  if split not in SPLIT_SEEDS:
    raise ValueError(f"av_digits: no split {split!r}; the splits are "
                     f"{', '.join(SPLIT_SEEDS)}.")
  base = split.removesuffix('_pairs')
  rng = np.random.default_rng((_SEED, SPLIT_SEEDS[split]))
  ids = split_recordings(split_rule, takes, base)
  ids = ids[rng.permutation(len(ids))]
  spoken = recordings().digit[ids]
  digit, same = spoken.copy(), np.ones(len(ids), np.int64)
  if split != base:
    for d in range(len(DIGIT_WORDS)):
      rows = np.flatnonzero(spoken == d)
      # Alternate which digits get the odd row out, so that `same` stays
      # balanced overall when a digit has an odd number of recordings.
      is_same = (np.arange(len(rows)) + d) % 2 == 0
      same[rows[~is_same]] = 0
      # Offsets 1..9 in turn: each written digit gets each other spoken
      # digit equally often, so the written digit is uniform given same = 0.
      offsets = 1 + np.arange(np.sum(~is_same)) % (len(DIGIT_WORDS) - 1)
      digit[rows[~is_same]] = (d + offsets) % len(DIGIT_WORDS)
  _, labels = digits.source_images()
  pool_ids = digits.split_image_ids(base)
  image = np.empty(len(ids), np.int64)
  for d in range(len(DIGIT_WORDS)):
    rows = np.flatnonzero(digit == d)
    pool = rng.permutation(pool_ids[labels[pool_ids] == d])
    image[rows] = pool[np.arange(len(rows)) % len(pool)]
  out = Pairing(recording=ids, image=image, digit=digit, spoken=spoken,
                same=same,
                template=rng.integers(len(CAPTIONS['neutral']), size=len(ids)))
  for values in out:
    values.setflags(write=False)
  return out


def read_recording(index: int) -> np.ndarray:
  """Samples int16 [N] of recording `index` of `recordings()`."""
  rec = recordings()
  path = recording_path(rec.digit[index], rec.speaker[index], rec.take[index])
  audio, rate = audio_io.read(path)
  if rate != SAMPLE_RATE or audio.shape[1] != 1:
    raise ValueError(f'av_digits: {path} is not {SAMPLE_RATE} Hz mono.')
  return audio_io.to_int16(audio[:, 0])


def caption(digit: int, template: int, kind: str) -> str:
  """Caption `template` of CAPTIONS[kind] for written digit `digit`."""
  if kind not in CAPTIONS:
    raise ValueError(f"av_digits: no caption kind {kind!r}; the kinds are "
                     f"{', '.join(CAPTIONS)}.")
  return CAPTIONS[kind][template].format(digit=DIGIT_WORDS[digit])


def generate(split: str, indices: Sequence[int], *, split_rule: str,
             takes: int, caption_kind: str) -> Dict[str, np.ndarray]:
  """Rows `indices` of `split` as feature -> array with a leading axis.

  `audio` is an object array of int16 waveforms of varying length.
  """
  rows = pairing(split_rule, takes, split)
  indices = np.asarray(indices)
  if not 0 <= indices.min() <= indices.max() < len(rows):
    raise ValueError(f"av_digits: split '{split}' has {len(rows)} examples; "
                     f'got indices from {indices.min()} to {indices.max()}.')
  images, _ = digits.source_images()
  rec = recordings()
  ids = rows.recording[indices]
  audio = np.empty(len(indices), dtype=object)
  audio[:] = [read_recording(i) for i in ids]
  scaled = images[rows.image[indices], ..., None].astype(np.float32) * (
      255. / 16.)
  return {
      'image': np.round(scaled).astype(np.uint8),
      'audio': audio,
      'text': np.array([caption(d, t, caption_kind) for d, t in zip(
          rows.digit[indices], rows.template[indices])], dtype=object),
      'digit': rows.digit[indices],
      'spoken': rows.spoken[indices],
      'same': rows.same[indices],
      'speaker': rec.speaker[ids],
      'take': rec.take[ids].astype(np.int32),
  }

