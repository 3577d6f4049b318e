"""'interaction': the label is the XOR of an image bit and a text bit.

A dataset on which only fusion methods that model interactions between
modalities can beat chance. Each example draws three independent, uniform
bits, one per modality, and shows each bit only through nuisance variation
that the modality's encoder must learn to read past:

- image: uint8 [32, 32, 3], one light object (grey level 170-255, tinted)
  on a dark background (10-80, tinted), drawn by `scenes.render_images`;
  `image_bit` = its shape: round (a circle) or angular (a square or a
  triangle, equally often), at a random size and position, plus Gaussian
  pixel noise. Objects are not coloured: drawn in `scenes`' six saturated
  colours (with longer sentences), cross-attention was still at 0.52 after
  3,000 steps and concat after 2,000. Colour dominates what an untrained
  encoder sees, and XOR gives no single-modality gradient to learn past it.
- text: a short sentence (1 to 5 words) from one of TEMPLATES with
  distractor nouns and adjectives, naming one keyword from a 'calm' (0) or a
  'stormy' (1) synonym set (`text_bit`); every word is in VOCABULARY.
- audio: int16 [N <= MAX_AUDIO_SAMPLES] at SAMPLE_RATE, one word from a 'no'
  (0) or a 'yes' (1) set (`audio_bit`) spoken by a random speaker
  (`speech.synthesize_batch`) over white noise; `transcript` is the word.
- label = image_bit XOR text_bit (LABEL_NAMES: the parity of the two bits);
  xor3 = image_bit XOR text_bit XOR audio_bit; image_bit, text_bit and
  audio_bit are stored too, for diagnostics.

Why late fusion fails: the bits are independent and uniform, so the label is
independent of each modality's input (whatever image_bit is, label is
text_bit, a fair coin): every single-modality model is at chance, and the
marginals are 50/50. Late fusion adds per-modality logits, f(image) + g(text);
on the four (image_bit, text_bit) cells that is a + c, a + d, b + c, b + d,
and XOR needs the first and last above zero and the middle two below, which
their sums forbid ((a + c) + (b + d) = (a + d) + (b + c)). So any additive
model sits at 50% however well each encoder reads its bit, while a fusion
that combines modalities non-linearly (a hidden layer over the concatenation,
cross-attention, tensor or low-rank products) can reach ~100%. xor3 needs all
three modalities multiplied together: any model that misses one is at chance.

Generated locally, stored as array_record; example i of a split is drawn from
a numpy Generator seeded with (seed, split, i), so a build is the same bytes
every time.

Trained with configs/interaction.py: late fusion 0.505, concat 1.000 and
cross-attention 0.999 test accuracy (figures and commands in that file).
"""
import dataclasses
from typing import Dict

import numpy as np
import tensorflow_datasets as tfds

from mmjax.data.builders import generated
from mmjax.data.builders import scenes
from mmjax.data.builders import speech

IMAGE_SIZE = scenes.IMAGE_SIZE
SAMPLE_RATE = speech.SAMPLE_RATE

IMAGE_CLASSES = ('round', 'angular')
# scenes.SHAPES indices drawn for each image bit (angular: either, equally).
_SHAPES_OF_BIT = ((scenes.SHAPES.index('circle'),),
                  (scenes.SHAPES.index('square'),
                   scenes.SHAPES.index('triangle')))
TEXT_CLASSES = ('calm', 'stormy')
TEXT_KEYWORDS = (
    ('calm', 'quiet', 'still', 'gentle'),
    ('stormy', 'wild', 'fierce', 'rough'),
)
AUDIO_CLASSES = ('no', 'yes')
AUDIO_WORDS = (('no', 'never', 'nope', 'wrong'),
               ('yes', 'sure', 'okay', 'right'))
# Distractors: the keyword's position and neighbours vary, so a text encoder
# must find it among other content words.
TEMPLATES = (
    '{word}',
    'the {noun} was {word}',
    'a {word} {noun}',
    'it looked {word}',
    'a {adj} and {word} {noun}',
)
NOUNS = ('sea', 'lake', 'river', 'sky', 'wind', 'city', 'crowd', 'harbour',
         'forest', 'market', 'road', 'garden')
ADJECTIVES = ('old', 'small', 'large', 'grey', 'distant', 'northern',
              'empty', 'busy', 'green', 'bright')
# Every word a sentence can contain, in a fixed order (the word tokenizer's
# ids follow it).
VOCABULARY = (('the', 'was', 'a', 'an', 'it', 'looked', 'and') + NOUNS +
              ADJECTIVES + TEXT_KEYWORDS[0] + TEXT_KEYWORDS[1])
MAX_WORDS = 5  # The longest template.
# The longest word said by the slowest speaker fits.
MAX_AUDIO_SAMPLES = max(speech.max_num_samples([w], SAMPLE_RATE)
                        for words in AUDIO_WORDS for w in words)
LABEL_NAMES = ('even', 'odd')  # Parity of the bits: 'odd' is XOR = 1.
SPLIT_SEEDS = {'train': 0, 'test': 1}
_SEED = 20251125
_RADIUS = (5., 9.)  # Half the side of the object's bounding box, pixels.


@dataclasses.dataclass(eq=False)
class InteractionConfig(generated.NoisyConfig):
  """Sizes and noise of one 'interaction' variant (see
  `generated.NoisyConfig`)."""
  image_noise: float = 0.08
  audio_noise: float = 0.04


class Interaction(generated.GeneratedBuilder):
  """Builder of the 'interaction' dataset (see the module docstring)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [
      InteractionConfig(name='default', description='8192 train, 2048 test.'),
      # Sizes deliberately not multiples of common batch sizes.
      InteractionConfig(name='tiny',
                        description='320 train, 100 test, for tests.',
                        train_size=320, test_size=100),
  ]

  def _features(self):
    bit = lambda names: tfds.features.ClassLabel(names=names)
    return {
        'image': generated.bytes_tensor((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8),
        'audio': generated.bytes_tensor((None,), np.int16),
        'text': tfds.features.Text(),
        'transcript': tfds.features.Text(),
        'image_bit': bit(IMAGE_CLASSES),
        'text_bit': bit(TEXT_CLASSES),
        'audio_bit': bit(AUDIO_CLASSES),
        'label': bit(LABEL_NAMES),
        'xor3': bit(LABEL_NAMES),
    }

  def _generate_chunk(self, split, indices):
    cfg = self.builder_config
    return generate(split, indices, image_noise=cfg.image_noise,
                    audio_noise=cfg.audio_noise)


def sentence(rng: np.random.Generator, text_bit: int) -> str:
  """A random template filled with distractors and a keyword of `text_bit`
  ('an' before a vowel)."""
  pick = lambda words: words[rng.integers(len(words))]
  return scenes.sentence(TEMPLATES[rng.integers(len(TEMPLATES))].format(
      word=pick(TEXT_KEYWORDS[text_bit]), noun=pick(NOUNS),
      adj=pick(ADJECTIVES)).split())


def _draw(rng: np.random.Generator, image_noise: float,
          audio_noise: float) -> dict:
  """The bits and nuisance draws of one example (rendered later, vectorised)."""
  bits = rng.integers(0, 2, size=3)  # image, text, audio.
  shapes = _SHAPES_OF_BIT[bits[0]]
  radius = rng.uniform(*_RADIUS)
  # A light object on a dark background, both slightly tinted.
  colours = np.zeros((3, 3), np.float32)  # Slots past the first: unused.
  colours[0] = rng.uniform(170., 255.) + rng.uniform(-15., 15., size=3)
  words = AUDIO_WORDS[bits[2]]
  return dict(
      bits=bits,
      scene=scenes.Scene(
          shapes=np.array([shapes[rng.integers(len(shapes))]]),
          colours=np.array([0]),  # Colour names: unused by render_images.
          centres=rng.uniform(radius, IMAGE_SIZE - 1 - radius, size=(1, 2)),
          radii=np.array([radius])),
      colours=colours,
      background=rng.uniform(10., 80.) + rng.uniform(-10., 10., size=3),
      pixel_noise=np.float32(rng.uniform(0., image_noise * 255.)) *
      rng.standard_normal((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.float32),
      text=sentence(rng, bits[1]),
      transcript=words[rng.integers(len(words))],
      audio_noise=rng.uniform(0., audio_noise))


def generate(split: str, indices, *, image_noise: float,
             audio_noise: float) -> Dict[str, np.ndarray]:
  """Examples `indices` of `split` as feature -> array with a leading axis.

  `audio` is an object array of int16 waveforms of varying length.
  """
  rngs = [np.random.default_rng((_SEED, SPLIT_SEEDS[split], i))
          for i in indices]
  draws = [_draw(rng, image_noise, audio_noise) for rng in rngs]
  column = lambda k: [d[k] for d in draws]
  utterances = speech.synthesize_batch(
      [[w] for w in column('transcript')], rngs, sample_rate=SAMPLE_RATE,
      noise=column('audio_noise'))
  audio = np.empty(len(draws), dtype=object)
  audio[:] = [u.waveform for u in utterances]
  image_bit, text_bit, audio_bit = np.stack(column('bits')).T
  return {
      'image': scenes.render_images(
          column('scene'), np.stack(column('background')),
          np.stack(column('colours')), np.stack(column('pixel_noise'))),
      'audio': audio,
      'text': np.array(column('text'), dtype=object),
      'transcript': np.array(column('transcript'), dtype=object),
      'image_bit': image_bit,
      'text_bit': text_bit,
      'audio_bit': audio_bit,
      'label': image_bit ^ text_bit,
      'xor3': image_bit ^ text_bit ^ audio_bit,
  }
