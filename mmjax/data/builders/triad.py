"""'triad': an embedded image + audio + text dataset that needs all three.

Each example carries three binary latent attributes, one per modality, and
its label is `4 * image_attribute + 2 * audio_attribute + text_attribute`
(8 classes). One modality alone predicts the label at best 25% of the time,
two modalities 50%, all three ~100%, so the dataset tells whether a fusion
model really combines its inputs.

- image: uint8 [32, 32, 3], one circle (0) or axis-aligned square (1) of the
  same area, with random size, position, colours and pixel noise.
- audio: int16 [4000] (0.5 s at 8 kHz), a tone in a low (0) or high (1)
  frequency band with random frequency, amplitude, onset and duration, plus a
  distractor tone in a mid band and white noise.
- text: 4 to 12 lowercase words in random order: filler words and one keyword
  from a 'cold' (0) or 'hot' (1) synonym set. Every word is in `VOCABULARY`.

Generated locally (nothing is downloaded) and stored as array_record so that
Grain reads `builder.as_data_source()` without TensorFlow. Example `i` of a
split is drawn from a numpy Generator seeded with (seed, split, i), so the data
is the same bytes every time and does not depend on generation order.
"""
import dataclasses
from typing import Dict

import numpy as np
import tensorflow_datasets as tfds

from mmjax import audio_io
from mmjax.data.builders import generated

IMAGE_SIZE = 32
SAMPLE_RATE = 8000
NUM_SAMPLES = 4000  # 0.5 s.

IMAGE_SHAPES = ('circle', 'square')
AUDIO_CLASSES = ('low', 'high')
# Frequency band (Hz) of the tone per audio attribute, and of the distractor
# tone; the gaps between them keep the attribute readable from a 40-bin log-mel
# spectrogram (n_fft=256, hop=128).
AUDIO_BANDS = ((250., 600.), (1800., 3000.))
DISTRACTOR_BAND = (900., 1400.)
TEXT_CLASSES = ('cold', 'hot')
KEYWORDS = (
    ('cold', 'icy', 'frozen', 'chilly', 'freezing', 'frosty'),
    ('hot', 'warm', 'burning', 'scorching', 'boiling', 'heated'),
)
FILLER_WORDS = (
    'the', 'a', 'an', 'of', 'on', 'in', 'under', 'near', 'with', 'and',
    'then', 'some', 'every', 'bright', 'small', 'large', 'old', 'new',
    'quiet', 'loud', 'river', 'house', 'road', 'tree', 'window', 'garden',
    'city', 'morning', 'evening', 'dog', 'cat', 'bird', 'child', 'friend',
    'walked', 'saw', 'found', 'carried', 'watched', 'stood', 'slowly',
    'softly', 'again', 'today', 'green', 'round', 'long', 'paper',
)
# Every word a triad sentence can contain, in a fixed order (the word
# tokenizer's ids follow it).
VOCABULARY = FILLER_WORDS + KEYWORDS[0] + KEYWORDS[1]
MIN_WORDS, MAX_WORDS = 4, 12

LABEL_NAMES = tuple(f'{shape}_{band}_{word}' for shape in IMAGE_SHAPES
                    for band in AUDIO_CLASSES for word in TEXT_CLASSES)
SPLIT_SEEDS = {'train': 0, 'test': 1}
_SEED = 20240611


def label_of(image_attribute, audio_attribute, text_attribute):
  """The class id of an attribute triple (works on ints and arrays)."""
  return 4 * image_attribute + 2 * audio_attribute + text_attribute


@dataclasses.dataclass(eq=False)
class TriadConfig(generated.NoisyConfig):
  """Sizes and noise of one 'triad' variant (see `generated.NoisyConfig`)."""
  image_noise: float = 0.08
  audio_noise: float = 0.05


class Triad(generated.GeneratedBuilder):
  """Builder of the 'triad' dataset (see the module docstring)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [
      TriadConfig(name='default', description='8192 train, 2048 test.'),
      # Sizes deliberately not multiples of common batch sizes.
      TriadConfig(name='tiny', description='256 train, 100 test, for tests.',
                  train_size=256, test_size=100),
  ]

  def _features(self):
    return {
        'image': generated.bytes_tensor((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8),
        'audio': generated.bytes_tensor((NUM_SAMPLES,), np.int16),
        'text': tfds.features.Text(),
        'image_attribute': tfds.features.ClassLabel(names=IMAGE_SHAPES),
        'audio_attribute': tfds.features.ClassLabel(names=AUDIO_CLASSES),
        'text_attribute': tfds.features.ClassLabel(names=TEXT_CLASSES),
        'label': tfds.features.ClassLabel(names=LABEL_NAMES),
    }

  def _generate_chunk(self, split, indices):
    cfg = self.builder_config
    return generate(split, indices, image_noise=cfg.image_noise,
                    audio_noise=cfg.audio_noise)


def _draw(rng: np.random.Generator, image_noise: float,
          audio_noise: float) -> dict:
  """All random numbers of one example (rendering happens vectorised later)."""
  attributes = rng.integers(0, 2, size=3)
  # Area-equivalent size: a square of half-side r*sqrt(pi)/2 has the area of a
  # circle of radius r, so pixel counts do not give the shape away.
  radius = rng.uniform(4., 10.)
  centre = rng.uniform(radius, IMAGE_SIZE - 1 - radius, size=2)
  background = rng.uniform(0., 255., size=3)
  # Redraw the shape colour until it stands out from the background.
  while True:
    foreground = rng.uniform(0., 255., size=3)
    if np.abs(foreground - background).max() > 80.:
      break
  pixel_noise = np.float32(rng.uniform(0., image_noise * 255.)) * (
      rng.standard_normal((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.float32))

  def tone(band, amplitude):
    # frequency, amplitude, phase, onset (s), duration (s)
    return (rng.uniform(*band), rng.uniform(*amplitude),
            rng.uniform(0., 2 * np.pi), rng.uniform(0., 0.25),
            rng.uniform(0.1, 0.25))

  tones = (tone(AUDIO_BANDS[attributes[1]], (0.2, 0.5)),
           tone(DISTRACTOR_BAND, (0.05, 0.3)))
  background_noise = np.float32(rng.uniform(0.005, audio_noise)) * (
      rng.standard_normal(NUM_SAMPLES, dtype=np.float32))

  num_words = rng.integers(MIN_WORDS, MAX_WORDS + 1)
  words = list(rng.choice(FILLER_WORDS, size=num_words - 1))
  keywords = KEYWORDS[attributes[2]]
  words.insert(rng.integers(0, num_words), keywords[rng.integers(
      len(keywords))])
  return dict(attributes=attributes, radius=radius, centre=centre,
              background=background, foreground=foreground,
              pixel_noise=pixel_noise, tones=np.array(tones),
              background_noise=background_noise, text=' '.join(words))


def _render_images(shape_kind, radius, centre, background, foreground,
                   pixel_noise) -> np.ndarray:
  """[N] shape parameters -> uint8 images [N, 32, 32, 3]."""
  grid = np.arange(IMAGE_SIZE, dtype=np.float32)
  dy = grid[None, :, None] - centre[:, 0, None, None]
  dx = grid[None, None, :] - centre[:, 1, None, None]
  r = radius[:, None, None]
  circle = dx**2 + dy**2 <= r**2
  square = np.maximum(np.abs(dx), np.abs(dy)) <= r * np.sqrt(np.pi) / 2
  inside = np.where(shape_kind[:, None, None] == 1, square, circle)[..., None]
  images = np.where(inside, foreground[:, None, None].astype(np.float32),
                    background[:, None, None].astype(np.float32)) + pixel_noise
  return np.clip(np.round(images), 0, 255).astype(np.uint8)


def _render_audio(tones, noise) -> np.ndarray:
  """tones [N, T, 5] (frequency, amplitude, phase, onset, duration) -> int16."""
  # float32 keeps generation fast; its phase error (< 1e-3 rad) is inaudible.
  t = (np.arange(NUM_SAMPLES) / SAMPLE_RATE).astype(np.float32)
  frequency, amplitude, phase, onset, duration = (
      tones[..., i, None].astype(np.float32) for i in range(5))
  # 10 ms linear fade in and out, so tone edges do not click across bands.
  envelope = np.clip(np.minimum(t - onset, onset + duration - t) / 0.01, 0, 1)
  waves = amplitude * envelope * np.sin(2 * np.pi * frequency * t + phase)
  return audio_io.to_int16(np.clip(waves.sum(axis=1) + noise, -1., 1.))


def generate(split: str, indices, *, image_noise: float,
             audio_noise: float) -> Dict[str, np.ndarray]:
  """Examples `indices` of `split` as feature -> array with a leading axis."""
  draws = [_draw(np.random.default_rng((_SEED, SPLIT_SEEDS[split], i)),
                 image_noise, audio_noise) for i in indices]
  d = {k: np.stack([x[k] for x in draws]) for k in draws[0]}
  image_attr, audio_attr, text_attr = d['attributes'].T
  return {
      'image': _render_images(image_attr, d['radius'], d['centre'],
                              d['background'], d['foreground'],
                              d['pixel_noise']),
      'audio': _render_audio(d['tones'], d['background_noise']),
      'text': d['text'],
      'image_attribute': image_attr,
      'audio_attribute': audio_attr,
      'text_attribute': text_attr,
      'label': label_of(image_attr, audio_attr, text_attr),
  }
