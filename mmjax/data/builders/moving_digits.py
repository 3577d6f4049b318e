"""'moving_digits': two handwritten digits moving across a 32 x 32 canvas,
whose labels need the order of the frames.

Every example is a short video of two of scikit-learn's real 8 x 8
handwritten digits (`digits.source_images()`, values 0-16 scaled to 0-255;
the stratified 80/20 image split of `digits.split_image_ids`, so no image is
in both train and test) of two different classes. One moves horizontally
(left or right), the other vertically (up or down), `speed` pixels a frame,
at a random height / column, on a 4-pixel grid. The digits appear in sequence: the first is on
screen in the first half of the frames, the second in the second half.

Features:
- video: uint8 [frames, 32, 32, 1] (raw bytes; no video codec).
- direction: the direction the first digit moves in (DIRECTION_NAMES:
  'left', 'right', 'up', 'down').
- first_digit: the class of the digit on screen first.
- digit: the class of the horizontally moving digit.
- caption: e.g. 'three moves left then seven moves up': the digits in the
  order they appear, each with its direction. Every word is in VOCABULARY.
- audio (config 'spoken' only): int16 [N] at SAMPLE_RATE, a Free Spoken
  Digit Dataset recording (vendored with 'av_digits') of the first digit;
  train uses the recordings of av_digits' train speakers, test those of its
  test speaker, each drawn at random per example.

Why the labels need temporal order: the segment of positions a digit covers
is drawn first (uniformly among those that fit) and the direction then says
which end it starts from; reversing a digit's motion therefore leaves the
set of frames it is seen in unchanged. The mean frame (or a shuffled clip)
shows a horizontal and a vertical path, each digit with the same weight:
it tells neither which digit came first nor which way either moved, so a
model that ignores the order is at chance (0.25) on `direction`, and can at
best pick one of the two digits (0.5) on `first_digit`.

Generated locally, stored as array_record; example i of a split is drawn from
a numpy Generator seeded with (seed, split, i), so a build is the same bytes
every time.
"""
import dataclasses
from typing import Dict

import numpy as np
import tensorflow_datasets as tfds

from mmjax.data.builders import av_digits
from mmjax.data.builders import digits
from mmjax.data.builders import generated

DIGIT_WORDS = digits.DIGIT_WORDS
HORIZONTAL = ('left', 'right')
VERTICAL = ('up', 'down')
DIRECTION_NAMES = HORIZONTAL + VERTICAL
CANVAS = 32
DIGIT_SIZE = digits.IMAGE_SHAPE[0]
SAMPLE_RATE = av_digits.SAMPLE_RATE
CAPTION = '{first} moves {first_direction} then {second} moves {second_direction}'
VOCABULARY = ('moves', 'then') + HORIZONTAL + VERTICAL + DIGIT_WORDS
SPLIT_SEEDS = {'train': 0, 'test': 1}
# Pixels a frame at most: 8 frames (4 per digit) on the 4-pixel grid move 4,
# which leaves a digit's 12-pixel path 4 places on the canvas.
MAX_SPEED = 6
_SEED = 20260414


@dataclasses.dataclass(eq=False)
class MovingDigitsConfig(tfds.core.BuilderConfig):
  """Length, speed, size and modalities of one 'moving_digits' variant.

  Attributes:
    frames: frames per video (8 to 16).
    speed: pixels a digit moves per frame (a multiple of `grid`); 0: the
      fastest that keeps it on the canvas for all its frames (capped at
      MAX_SPEED).
    grid: every position (row and column of a digit's corner) is a multiple
      of it: 4 keeps a digit on the 4-pixel patch grid of a ViT, so that
      where it is changes which patches it covers, never how it looks in
      them.
    train_size, test_size: examples per split.
    audio: add the spoken first digit (FSDD) as 'audio'.
  """
  frames: int = 8
  speed: int = 0
  grid: int = 4
  train_size: int = 8192
  test_size: int = 1024
  audio: bool = False

  @property
  def split_sizes(self) -> Dict[str, int]:
    return {'train': self.train_size, 'test': self.test_size}


class MovingDigits(generated.GeneratedBuilder):
  """Builder of the 'moving_digits' dataset (see the module docstring)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [
      MovingDigitsConfig(name='default', description='8 frames.'),
      MovingDigitsConfig(name='frames16', frames=16, grid=1, description=(
          '16 frames, 3 pixels a frame, any position.')),
      MovingDigitsConfig(name='spoken', audio=True, description=(
          '8 frames and the first digit spoken (FSDD).')),
      MovingDigitsConfig(name='tiny', train_size=128, test_size=64,
                         audio=True, description='A small build for tests.'),
  ]

  def _features(self):
    cfg = self.builder_config
    features = {
        'video': generated.bytes_tensor((cfg.frames, CANVAS, CANVAS, 1),
                                        np.uint8),
        'direction': tfds.features.ClassLabel(names=DIRECTION_NAMES),
        'first_digit': tfds.features.ClassLabel(names=DIGIT_WORDS),
        'digit': tfds.features.ClassLabel(names=DIGIT_WORDS),
        'caption': tfds.features.Text(),
    }
    if cfg.audio:
      features['audio'] = generated.bytes_tensor((None,), np.int16)
    return features

  def _generate_chunk(self, split, indices):
    cfg = self.builder_config
    return generate(split, indices, frames=cfg.frames, speed=cfg.speed,
                    grid=cfg.grid, audio=cfg.audio)


def visible_frames(frames: int) -> int:
  """Frames each digit is on screen: half of them."""
  return frames // 2


def default_speed(frames: int, grid: int = 1) -> int:
  """The fastest speed (at most MAX_SPEED pixels a frame, a multiple of
  `grid`) that keeps a digit on the canvas for all its visible frames."""
  fastest = min(MAX_SPEED, (CANVAS - DIGIT_SIZE) // (visible_frames(frames) - 1))
  return fastest // grid * grid


def trajectory(rng: np.random.Generator, steps: int, speed: int,
               forward: bool, grid: int = 1) -> np.ndarray:
  """Positions [steps] along one axis: a segment of length (steps - 1) *
  speed placed uniformly on the canvas (at a multiple of `grid`), run from
  its low end (`forward`) or from its high end. The segment is drawn before
  the direction is used, so the set of positions does not depend on the
  direction."""
  travel = (steps - 1) * speed
  low = grid * rng.integers(0, (CANVAS - DIGIT_SIZE - travel) // grid + 1)
  positions = low + speed * np.arange(steps)
  return positions if forward else positions[::-1]


def render(images, rows, cols, visible, frames: int) -> np.ndarray:
  """uint8 [frames, CANVAS, CANVAS, 1]: digit k (uint8 [8, 8]) at (rows[k][f],
  cols[k][f]) in the frames where visible[k][f] (overlaps: the brighter)."""
  video = np.zeros((frames, CANVAS, CANVAS), np.uint8)
  for image, row, col, shown in zip(images, rows, cols, visible):
    for f in np.flatnonzero(shown):
      window = video[f, row[f]:row[f] + DIGIT_SIZE, col[f]:col[f] + DIGIT_SIZE]
      np.maximum(window, image, out=window)
  return video[..., None]


def _example(rng: np.random.Generator, ids: np.ndarray, frames: int,
             speed: int, grid: int):
  """One example's features (without audio) and its first digit."""
  images, labels = digits.source_images()
  first = rng.integers(len(ids))
  second = rng.choice(np.flatnonzero(labels[ids] != labels[ids[first]]))
  right, down, horizontal_first = rng.integers(2, size=3)
  steps = visible_frames(frames)
  offset = frames - steps
  # Movers in appearance order: (image id, horizontal?, forward?).
  movers = [(ids[first], bool(horizontal_first)),
            (ids[second], not horizontal_first)]
  rows, cols, visible, scaled = [], [], [], []
  for k, (image_id, horizontal) in enumerate(movers):
    shown = np.zeros(frames, bool)
    shown[k * offset:k * offset + steps] = True
    along = np.zeros(frames, int)
    along[shown] = trajectory(rng, steps, speed,
                              bool(right if horizontal else down), grid)
    across = np.full(frames, grid * rng.integers(
        0, (CANVAS - DIGIT_SIZE) // grid + 1))
    rows.append(across if horizontal else along)
    cols.append(along if horizontal else across)
    visible.append(shown)
    scaled.append(np.round(images[image_id].astype(np.float32) * (255 / 16))
                  .astype(np.uint8))
  words = [DIGIT_WORDS[labels[i]] for i, _ in movers]
  moves = [(HORIZONTAL[right] if h else VERTICAL[down]) for _, h in movers]
  horizontal_id = movers[0][0] if horizontal_first else movers[1][0]
  return dict(
      video=render(scaled, rows, cols, visible, frames),
      direction=DIRECTION_NAMES.index(moves[0]),
      first_digit=labels[ids[first]],
      digit=labels[horizontal_id],
      caption=CAPTION.format(first=words[0], first_direction=moves[0],
                             second=words[1], second_direction=moves[1]),
  ), labels[ids[first]]


def generate(split: str, indices, *, frames: int = 8, speed: int = 0,
             grid: int = 4, audio: bool = False) -> Dict[str, np.ndarray]:
  """Examples `indices` of `split` as feature -> array with a leading axis
  (`audio`: an object array of int16 waveforms of varying length)."""
  if not 8 <= frames <= 16:
    raise ValueError(f'moving_digits: frames must be 8 to 16, got {frames}.')
  speed = speed or default_speed(frames, grid)
  if not speed or speed % grid:
    raise ValueError(f'moving_digits: speed {speed} is not a positive '
                     f'multiple of the grid {grid}.')
  travel = (visible_frames(frames) - 1) * speed
  if travel > CANVAS - DIGIT_SIZE:
    raise ValueError(f'moving_digits: at {speed} pixels a frame a digit '
                     f'travels {travel} pixels, more than the canvas leaves '
                     f'({CANVAS - DIGIT_SIZE}); use a lower speed.')
  ids = digits.split_image_ids(split)
  rows, spoken = [], []
  for i in indices:
    rng = np.random.default_rng((_SEED, SPLIT_SEEDS[split], i))
    row, first = _example(rng, ids, frames, speed, grid)
    rows.append(row)
    if audio:
      candidates = av_digits.split_recordings('speaker', av_digits.NUM_TAKES,
                                              split)
      candidates = candidates[av_digits.recordings().digit[candidates] ==
                              first]
      spoken.append(av_digits.read_recording(rng.choice(candidates)))
  out = {k: np.stack([r[k] for r in rows]) if k != 'caption' else
         np.array([r[k] for r in rows], dtype=object) for k in rows[0]}
  if audio:
    out['audio'] = np.empty(len(rows), dtype=object)
    out['audio'][:] = spoken
  return out
