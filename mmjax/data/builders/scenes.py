"""'scenes': coloured-shape scenes with captions, claims, speech and questions.

One dataset serves classification, captioning, speech recognition, visual
question answering and retrieval. Each example is a scene of 1 to 3 objects,
each a distinct shape from SHAPES in a distinct colour from COLOURS, placed
without overlap on a dark-ish or light-ish grey background:

- image: uint8 [32, 32, 3], the scene plus Gaussian pixel noise.
- caption: the deterministic description of the scene: "a red circle" ("an"
  before "orange"); for
  two objects "a red circle left of a blue square" (horizontal relation when
  |dx| >= |dy|, the left one first) or "a red circle above a blue square"
  (the upper one first); for three, left to right: "a red circle and a blue
  square and a green triangle".
- text: a claim about the scene: the caption (half of the time) or the
  caption with one colour or shape word replaced by one that is not in the
  scene, so a false claim is detectable even from a bag of words.
- transcript: another claim, drawn independently the same way; audio: int16
  [N <= MAX_AUDIO_SAMPLES] at SAMPLE_RATE, the transcript spoken by a random
  speaker (`speech.synthesize_batch`) over white noise.
- text_matches / audio_matches: whether text / transcript equal the caption.
- label: `2 * text_matches + audio_matches` (LABEL_NAMES), which needs the
  image, the text and the audio together.
- question / answer / answer_label: a question with a one-word answer from
  ANSWERS: "what colour is the circle", "what shape is the red object", "how
  many objects are there", "is there a blue square", "is the circle left of
  the square" (only with two or more objects).
- num_objects: one, two or three.
- object: the colour and shape of the object the caption names first
  (OBJECT_NAMES: 'red circle', ...); with config 'single' (one object per
  scene) the class of a text-to-image model's caption.

`read_objects` reads the objects back from an image's pixels alone (the
palette is known): the check of generated images (mmjax/evaluators/gan.py).

Every word of every text field is in VOCABULARY. Generated locally and stored
as array_record, like 'triad': example i of a split is drawn from a numpy
Generator seeded with (seed, split, i), so it is the same bytes every time.
"""
import dataclasses
import re
from typing import Dict, List, Tuple

import numpy as np
from scipy import ndimage
import tensorflow_datasets as tfds

from mmjax.data.builders import generated
from mmjax.data.builders import speech

IMAGE_SIZE = 32
SAMPLE_RATE = speech.SAMPLE_RATE
# Every transcript fits, said as slowly as a speaker can: the longest
# three-object one can take up to 29,943 samples (`speech.max_num_samples`,
# checked in tests/data/test_scenes.py). Clips average 1.8 s.
MAX_AUDIO_SAMPLES = 30000  # 3.75 s.

SHAPES = ('circle', 'square', 'triangle')
COLOURS = ('red', 'green', 'blue', 'yellow', 'purple', 'orange')
# Nominal RGB of COLOURS. Saturated: each has a channel >= 200 and one <= 40,
# so it stands out from any grey background; any two are > 100 apart, four
# times the most that an object's colour jitter (+-15 per channel) moves it.
COLOUR_RGB = np.array([(225, 25, 25), (30, 200, 40), (40, 70, 235),
                       (245, 235, 30), (165, 35, 205), (250, 125, 15)],
                      np.float32)
OBJECT_NAMES = tuple(f'{c} {s}' for c in COLOURS for s in SHAPES)
COUNT_WORDS = ('one', 'two', 'three')
ANSWERS = COLOURS + SHAPES + COUNT_WORDS + ('no', 'yes')
LABEL_NAMES = ('text_no_audio_no', 'text_no_audio_yes', 'text_yes_audio_no',
               'text_yes_audio_yes')
# Every word a caption, claim, question or answer can contain, in a fixed
# order (a word tokenizer's ids follow it).
VOCABULARY = (
    ('a', 'an', 'and', 'left', 'of', 'above', 'what', 'colour', 'shape', 'is',
     'the', 'object', 'how', 'many', 'objects', 'are', 'there') + ANSWERS)
SPLIT_SEEDS = {'train': 0, 'test': 1}
_SEED = 20251123
_MAX_OBJECTS = 3
# Largest object radius (half the side of its bounding box, pixels) by number
# of objects, so that three objects still fit side by side.
_MAX_RADIUS = (7., 6., 5.)
_MIN_RADIUS = 3.5
# Placement margins (pixels) that keep the caption unambiguous: object
# centres differ by this much in x, and for two objects |dx| and |dy| differ
# by this much.
_MARGIN = 3.


@dataclasses.dataclass(eq=False)
class ScenesConfig(generated.NoisyConfig):
  """Sizes and noise of one 'scenes' variant (see `generated.NoisyConfig`);
  `max_objects` (1 to 3) bounds the objects per scene."""
  image_noise: float = 0.06
  audio_noise: float = 0.03
  max_objects: int = _MAX_OBJECTS


class Scenes(generated.GeneratedBuilder):
  """Builder of the 'scenes' dataset (see the module docstring)."""

  VERSION = tfds.core.Version('1.1.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.',
                   '1.1.0': "Feature 'object'; config 'single'."}
  BUILDER_CONFIGS = [
      ScenesConfig(name='default', description='8192 train, 2048 test.'),
      # Sizes deliberately not multiples of common batch sizes.
      ScenesConfig(name='tiny', description='256 train, 100 test, for tests.',
                   train_size=256, test_size=100),
      ScenesConfig(name='large', description='65536 train, 4096 test.',
                   train_size=65536, test_size=4096),
      ScenesConfig(name='noisy', description='default sizes, 3x the noise.',
                   image_noise=0.18, audio_noise=0.09),
      ScenesConfig(name='single', description=(
          'default sizes, one object per scene (text-to-image).'),
                   max_objects=1),
      ScenesConfig(name='single_tiny', description=(
          "'single' at the sizes of 'tiny', for tests."),
                   train_size=256, test_size=100, max_objects=1),
  ]

  def _features(self):
    no_yes = ('no', 'yes')
    return {
        'image': generated.bytes_tensor((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8),
        'audio': generated.bytes_tensor((None,), np.int16),
        'caption': tfds.features.Text(),
        'text': tfds.features.Text(),
        'transcript': tfds.features.Text(),
        'question': tfds.features.Text(),
        'answer': tfds.features.Text(),
        'answer_label': tfds.features.ClassLabel(names=ANSWERS),
        'text_matches': tfds.features.ClassLabel(names=no_yes),
        'audio_matches': tfds.features.ClassLabel(names=no_yes),
        'label': tfds.features.ClassLabel(names=LABEL_NAMES),
        'num_objects': tfds.features.ClassLabel(names=COUNT_WORDS),
        'object': tfds.features.ClassLabel(names=OBJECT_NAMES),
    }

  def _generate_chunk(self, split, indices):
    cfg = self.builder_config
    return generate(split, indices, image_noise=cfg.image_noise,
                    audio_noise=cfg.audio_noise, max_objects=cfg.max_objects)


@dataclasses.dataclass
class Scene:
  """The objects of one scene, in drawing order.

  Attributes:
    shapes, colours: [n] indices into SHAPES and COLOURS (distinct).
    centres: [n, 2] float (row, column) pixel coordinates.
    radii: [n] half the side of each object's bounding box, in pixels.
  """
  shapes: np.ndarray
  colours: np.ndarray
  centres: np.ndarray
  radii: np.ndarray

  def phrase(self, i: int) -> List[str]:
    """'a <colour> <shape>' of object i, as words."""
    return ['a', COLOURS[self.colours[i]], SHAPES[self.shapes[i]]]


def draw_scene(rng: np.random.Generator,
               max_objects: int = _MAX_OBJECTS) -> Scene:
  """1 to `max_objects` objects of distinct shapes and colours, apart
  (`_well_placed`)."""
  n = rng.integers(1, max_objects + 1)
  shapes, colours = rng.permutation(len(SHAPES))[:n], rng.permutation(
      len(COLOURS))[:n]
  # Rejection sampling: about 1 in 4 two-object and 1 in 18 three-object
  # draws pass, which costs microseconds.
  while True:
    radii = rng.uniform(_MIN_RADIUS, _MAX_RADIUS[n - 1], size=n)
    centres = rng.uniform(radii[:, None], IMAGE_SIZE - 1 - radii[:, None],
                          size=(n, 2))
    if _well_placed(centres, radii):
      return Scene(shapes, colours, centres, radii)


def _well_placed(centres: np.ndarray, radii: np.ndarray) -> bool:
  """Whether objects are apart and the caption's geometry is clear-cut.

  Args:
    centres: [n, 2] (row, column) of each object.
    radii: [n] half the side of each object's bounding box.
  """
  for i in range(len(radii)):
    for j in range(i):
      dy, dx = np.abs(centres[i] - centres[j])
      # Bounding boxes 2 pixels apart leave a background pixel between
      # objects, so that each object is its own connected region.
      gap = max(dx, dy) - radii[i] - radii[j]
      # Left-to-right order, and for two objects the choice between 'left
      # of' and 'above', must not hinge on a pixel.
      if gap < 2. or dx < _MARGIN or (len(radii) == 2 and
                                      abs(dx - dy) < _MARGIN):
        return False
  return True


def caption_words(scene: Scene) -> List[str]:
  """The deterministic description of `scene` (see the module docstring)."""
  order = np.argsort(scene.centres[:, 1])  # Left to right.
  if len(order) == 2:
    dy, dx = np.abs(scene.centres[0] - scene.centres[1])
    if dy > dx:
      return (scene.phrase(np.argmin(scene.centres[:, 0])) + ['above'] +
              scene.phrase(np.argmax(scene.centres[:, 0])))
    return scene.phrase(order[0]) + ['left', 'of'] + scene.phrase(order[1])
  words = scene.phrase(order[0])
  for i in order[1:]:
    words += ['and'] + scene.phrase(i)
  return words


def draw_claim(rng: np.random.Generator, scene: Scene,
               caption: List[str]) -> List[str]:
  """The caption, or (p = 1/2) the caption with one word made false.

  The replaced word is a colour or a shape, and its replacement is one that
  is not in the scene at all.
  """
  if rng.random() < 0.5:
    return list(caption)
  absent_colours = [c for i, c in enumerate(COLOURS) if i not in scene.colours]
  absent_shapes = [s for i, s in enumerate(SHAPES) if i not in scene.shapes]
  replaceable = [i for i, w in enumerate(caption)
                 if w in COLOURS or (w in SHAPES and absent_shapes)]
  position = replaceable[rng.integers(len(replaceable))]
  pool = absent_colours if caption[position] in COLOURS else absent_shapes
  claim = list(caption)
  claim[position] = pool[rng.integers(len(pool))]
  return claim


def draw_question(rng: np.random.Generator,
                  scene: Scene) -> Tuple[List[str], str]:
  """A question about `scene` (words) and its one-word answer (ANSWERS)."""
  n = len(scene.shapes)
  kinds = ('colour', 'shape', 'count', 'exists') + (('left',) if n > 1 else ())
  kind = kinds[rng.integers(len(kinds))]
  i = rng.integers(n)
  colour, shape = COLOURS[scene.colours[i]], SHAPES[scene.shapes[i]]
  if kind == 'colour':
    return f'what colour is the {shape}'.split(), colour
  if kind == 'shape':
    return f'what shape is the {colour} object'.split(), shape
  if kind == 'count':
    return 'how many objects are there'.split(), COUNT_WORDS[n - 1]
  if kind == 'exists':
    present = set(zip(scene.colours.tolist(), scene.shapes.tolist()))
    if rng.random() < 0.5:
      return f'is there a {colour} {shape}'.split(), 'yes'
    # Any absent pair: a colour or shape not in the scene, or two that are
    # but on different objects (which needs binding colour to shape).
    absent = [(c, s) for c in range(len(COLOURS)) for s in range(len(SHAPES))
              if (c, s) not in present]
    c, s = absent[rng.integers(len(absent))]
    return f'is there a {COLOURS[c]} {SHAPES[s]}'.split(), 'no'
  j = (i + rng.integers(1, n)) % n
  left = scene.centres[i, 1] < scene.centres[j, 1]
  return (f'is the {shape} left of the {SHAPES[scene.shapes[j]]}'.split(),
          'yes' if left else 'no')


def sentence(words: List[str]) -> str:
  """Joins words, with 'an' for 'a' before a vowel ("an orange circle")."""
  return re.sub(r'\ba (?=[aeiou])', 'an ', ' '.join(words))


def render_images(scenes: List[Scene], backgrounds: np.ndarray,
                  colours: np.ndarray, pixel_noise: np.ndarray) -> np.ndarray:
  """Draws scenes: uint8 [N, 32, 32, 3].

  Args:
    scenes: N scenes.
    backgrounds: float [N, 3] background RGB.
    colours: float [N, 3, 3] RGB of each object slot (slots past a scene's
      object count are ignored).
    pixel_noise: float [N, 32, 32, 3] added before rounding.
  """
  n = len(scenes)
  shape = np.full((n, _MAX_OBJECTS), -1)
  centre = np.zeros((n, _MAX_OBJECTS, 2), np.float32)
  radius = np.zeros((n, _MAX_OBJECTS), np.float32)
  for row, scene in enumerate(scenes):
    k = len(scene.shapes)
    shape[row, :k], centre[row, :k], radius[row, :k] = (
        scene.shapes, scene.centres, scene.radii)
  grid = np.arange(IMAGE_SIZE, dtype=np.float32)
  dy = grid[None, None, :, None] - centre[..., 0, None, None]
  dx = grid[None, None, None, :] - centre[..., 1, None, None]
  r = radius[..., None, None]
  masks = np.stack([
      dx**2 + dy**2 <= r**2,  # circle
      np.maximum(np.abs(dx), np.abs(dy)) <= r,  # square
      # Triangle: apex at the top of the box, base along its bottom edge.
      (dy <= r) & (2 * np.abs(dx) <= dy + r),
  ])  # [3 shapes, N, objects, 32, 32]
  inside = np.take_along_axis(
      masks, np.maximum(shape, 0)[None, ..., None, None], axis=0)[0]
  inside &= (shape >= 0)[..., None, None]
  images = np.broadcast_to(backgrounds[:, None, None], pixel_noise.shape)
  for k in range(_MAX_OBJECTS):
    images = np.where(inside[:, k, ..., None], colours[:, k, None, None],
                      images)
  return np.clip(np.round(images + pixel_noise), 0, 255).astype(np.uint8)


def generate(split: str, indices, *, image_noise: float, audio_noise: float,
             max_objects: int = _MAX_OBJECTS) -> Dict[str, np.ndarray]:
  """Examples `indices` of `split` as feature -> array with a leading axis.

  `audio` is an object array of int16 waveforms of varying length.
  """
  rngs = [np.random.default_rng((_SEED, SPLIT_SEEDS[split], i))
          for i in indices]
  rows = []
  for rng in rngs:
    scene = draw_scene(rng, max_objects)
    caption = caption_words(scene)
    # Dark-ish or light-ish grey with a slight tint.
    level = rng.uniform(*((10., 60.) if rng.random() < 0.5 else (190., 245.)))
    colours = np.zeros((_MAX_OBJECTS, 3), np.float32)
    colours[:len(scene.colours)] = COLOUR_RGB[scene.colours] + rng.uniform(
        -15., 15., size=(len(scene.colours), 3))
    question, answer = draw_question(rng, scene)
    rows.append(dict(
        scene=scene, caption=sentence(caption),
        background=level + rng.uniform(-10., 10., size=3),
        colours=colours,
        pixel_noise=np.float32(rng.uniform(0., image_noise * 255.)) *
        rng.standard_normal((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.float32),
        text=sentence(draw_claim(rng, scene, caption)),
        transcript=sentence(draw_claim(rng, scene, caption)),
        audio_noise=rng.uniform(0., audio_noise),
        question=sentence(question), answer=answer,
        # caption[1:3]: the colour and shape of the first 'a <colour> <shape>'.
        object=OBJECT_NAMES.index(' '.join(caption[1:3]))))
  utterances = speech.synthesize_batch(
      [r['transcript'].split() for r in rows], rngs, sample_rate=SAMPLE_RATE,
      noise=[r['audio_noise'] for r in rows])
  column = lambda k: [r[k] for r in rows]
  strings = lambda k: np.array(column(k), dtype=object)
  caption, text, transcript = (
      strings('caption'), strings('text'), strings('transcript'))
  text_matches = (text == caption).astype(np.int64)
  audio_matches = (transcript == caption).astype(np.int64)
  audio = np.empty(len(rows), dtype=object)
  audio[:] = [u.waveform for u in utterances]
  return {
      'image': render_images(column('scene'), np.stack(column('background')),
                             np.stack(column('colours')),
                             np.stack(column('pixel_noise'))),
      'audio': audio,
      'caption': caption,
      'text': text,
      'transcript': transcript,
      'question': strings('question'),
      'answer': strings('answer'),
      'answer_label': np.array([ANSWERS.index(a) for a in column('answer')]),
      'text_matches': text_matches,
      'audio_matches': audio_matches,
      'label': 2 * text_matches + audio_matches,
      'num_objects': np.array([len(r['scene'].shapes) - 1 for r in rows]),
      'object': np.array(column('object')),
  }


def read_objects(image: np.ndarray) -> List[Tuple[int, int, np.ndarray]]:
  """(colour, shape, centre) of each object of `image`, from pixels alone.

  Args:
    image: uint8 or float [32, 32, 3] RGB in 0..255.

  Returns:
    One (COLOURS index, SHAPES index, float [2] (row, column)) per object,
    largest object (in pixels) first. The centre is that of the object's
    bounding box, within a pixel of the drawn centre (rasterisation can drop
    a triangle's apex row).

  An object is a connected region of pixels far from the background (the
  median border colour); its colour is the nominal colour nearest to its
  mean. A square fills its bounding box (a circle fills pi / 4 of it); a
  triangle (apex up) has about a fifth as many pixels in the top third of its
  box as in the bottom third, a circle as many.
  """
  image = np.asarray(image, np.float32)
  border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
  # Colours differ from the grey background by >= 150 in some channel; the
  # pixel noise (std <= 15 in 'default') stays far below 75.
  foreground = np.abs(image - np.median(border, 0)).max(-1) > 75
  regions, _ = ndimage.label(foreground)
  out = []
  for i, box in enumerate(ndimage.find_objects(regions)):
    region = regions[box] == i + 1
    colour = np.linalg.norm(COLOUR_RGB - image[box][region].mean(0),
                            axis=-1).argmin()
    third = max(len(region) // 3, 1)
    top = region[:third].sum() / max(region[-third:].sum(), 1)
    shape = ('square' if region.mean() > 0.95 else
             'triangle' if top < 0.5 else 'circle')
    centre = np.array([(d.start + d.stop - 1) / 2 for d in box])
    out.append((region.sum(), int(colour), SHAPES.index(shape), centre))
  return [o[1:] for o in sorted(out, key=lambda o: -o[0])]
