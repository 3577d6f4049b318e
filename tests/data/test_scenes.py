"""Tests of the 'scenes' TFDS builder."""
import itertools
import pathlib

import numpy as np
import pytest
from scipy import ndimage

from mmjax.data.builders import scenes
from mmjax.data.builders import speech

SPLITS = ('train', 'test')
TEXT_FIELDS = ('caption', 'text', 'transcript', 'question', 'answer')


def _build(data_dir):
  scenes.Scenes(config='tiny', data_dir=str(data_dir)).download_and_prepare()


def _record_files(data_dir):
  files = sorted(pathlib.Path(data_dir).glob('scenes/tiny/*/*.array_record*'))
  return {f.name: f.read_bytes() for f in files}


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  directory = tmp_path_factory.mktemp('scenes')
  _build(directory)
  return directory


@pytest.fixture(scope='module')
def examples(data_dir):
  """split -> feature -> list of the values of every example of 'tiny'."""
  builder = scenes.Scenes(config='tiny', data_dir=str(data_dir))
  out = {}
  for split in SPLITS:
    source = builder.as_data_source(split=split)
    rows = [source[i] for i in range(len(source))]
    out[split] = {k: [r[k] for r in rows] for k in rows[0]}
    for k in TEXT_FIELDS:
      out[split][k] = [t.decode() for t in out[split][k]]
  return out


def test_generation_is_deterministic(data_dir, tmp_path):
  _build(tmp_path)
  first, second = _record_files(data_dir), _record_files(tmp_path)
  assert len(first) == 2 and first == second


def test_example_depends_only_on_its_index():
  kwargs = dict(image_noise=0.06, audio_noise=0.03)
  together = scenes.generate('train', range(6), **kwargs)
  alone = scenes.generate('train', [5, 2], **kwargs)
  for k, v in alone.items():
    for row, index in enumerate([5, 2]):
      np.testing.assert_array_equal(v[row], together[k][index], err_msg=k)
  other_split = scenes.generate('test', [5, 2], **kwargs)
  assert not np.array_equal(other_split['image'], alone['image'])


def test_splits_shapes_and_dtypes(examples):
  assert {s: len(examples[s]['label']) for s in SPLITS} == {
      'train': 256, 'test': 100}
  ex = examples['train']
  assert all(x.shape == (32, 32, 3) and x.dtype == np.uint8
             for x in ex['image'])
  assert all(x.ndim == 1 and x.dtype == np.int16 for x in ex['audio'])


def _objects(image):
  """`scenes.read_objects` with colour and shape names."""
  return [(scenes.COLOURS[c], scenes.SHAPES[s], centre)
          for c, s, centre in scenes.read_objects(image)]


def _phrases(caption):
  """[(colour, shape)] of the noun phrases 'a/an <colour> <shape>'."""
  words = caption.split()
  return [(words[i + 1], words[i + 2]) for i, w in enumerate(words)
          if w in ('a', 'an')]


@pytest.mark.parametrize('split', SPLITS)
def test_caption_describes_the_image(examples, split):
  ex = examples[split]
  for image, caption, num_objects in zip(ex['image'], ex['caption'],
                                         ex['num_objects']):
    objects, phrases = _objects(image), _phrases(caption)
    assert len(objects) == len(phrases) == num_objects + 1, caption
    assert sorted((c, s) for c, s, _ in objects) == sorted(phrases), caption
    at = {(c, s): centre for c, s, centre in objects}
    first, second = (at[p] for p in phrases[:2]) if len(phrases) > 1 else (
        None, None)
    # Pixel centres are within 1 of the drawn ones: 2 of slack in |dx| - |dy|
    # (the generator keeps the two 3 apart).
    if ' left of ' in caption:
      dy, dx = second - first
      assert dx > 0 and abs(dx) >= abs(dy) - 2, caption
    elif ' above ' in caption:
      dy, dx = second - first
      assert dy > 0 and abs(dy) >= abs(dx) - 2, caption
    elif len(phrases) == 3:
      columns = [at[p][1] for p in phrases]
      assert columns == sorted(columns), caption
    words = caption.split()
    for article, noun in zip(words, words[1:]):
      if article in ('a', 'an'):
        assert (article == 'an') == (noun[0] in 'aeiou'), caption


@pytest.mark.parametrize('split', SPLITS)
def test_claims_and_labels(examples, split):
  ex = examples[split]
  for field, matches in (('text', 'text_matches'),
                         ('transcript', 'audio_matches')):
    for claim, caption, match in zip(ex[field], ex['caption'], ex[matches]):
      assert match == (claim == caption)
      if not match:
        # One colour or shape swapped for one that is not in the image.
        changed = set(claim.split()) - set(caption.split()) - {'a', 'an'}
        assert len(changed) == 1, (claim, caption)
        assert changed <= set(scenes.COLOURS + scenes.SHAPES)
        assert len(_phrases(claim)) == len(_phrases(caption))
  np.testing.assert_array_equal(
      ex['label'], 2 * np.array(ex['text_matches']) +
      np.array(ex['audio_matches']))


@pytest.mark.parametrize('split', SPLITS)
def test_object_is_the_first_named(examples, split):
  ex = examples[split]
  for caption, label in zip(ex['caption'], ex['object']):
    assert scenes.OBJECT_NAMES[label] == ' '.join(_phrases(caption)[0])


def test_single_has_one_object_of_every_kind():
  ex = scenes.generate('test', range(200), image_noise=0.06,
                       audio_noise=0.03, max_objects=1)
  assert set(ex['num_objects']) == {0}
  assert set(ex['object']) == set(range(len(scenes.OBJECT_NAMES)))
  for image, label in zip(ex['image'], ex['object']):
    (colour, shape, _), = scenes.read_objects(image)
    assert scenes.OBJECT_NAMES[label] == (
        f'{scenes.COLOURS[colour]} {scenes.SHAPES[shape]}')


def test_labels_and_object_counts_are_balanced(examples):
  ex = examples['train']
  assert 0.4 < np.mean(ex['text_matches']) < 0.6
  assert 0.4 < np.mean(ex['audio_matches']) < 0.6
  assert np.bincount(ex['label'], minlength=4).min() >= 45  # 64 expected.
  assert np.bincount(ex['num_objects'], minlength=3).min() >= 60  # 85.


@pytest.mark.parametrize('split', SPLITS)
def test_answers_are_correct_for_the_image(examples, split):
  ex = examples[split]
  kinds = set()
  for image, question, answer, answer_label in zip(
      ex['image'], ex['question'], ex['answer'], ex['answer_label']):
    assert scenes.ANSWERS[answer_label] == answer
    objects = _objects(image)
    colour_of = {s: c for c, s, _ in objects}
    shape_of = {c: s for c, s, _ in objects}
    column_of = {s: centre[1] for _, s, centre in objects}
    words = question.split()
    if question == 'how many objects are there':
      kinds.add('count')
      assert answer == scenes.COUNT_WORDS[len(objects) - 1]
    elif words[:3] == ['what', 'colour', 'is']:
      kinds.add('colour')
      assert answer == colour_of[words[-1]]
    elif words[:3] == ['what', 'shape', 'is']:
      kinds.add('shape')
      assert answer == shape_of[words[-2]]
    elif words[:2] == ['is', 'there']:
      kinds.add('exists')
      assert answer == ('yes' if (words[-2], words[-1]) in shape_of.items()
                        else 'no')
    else:
      kinds.add('left')
      assert words[3:5] == ['left', 'of'], question
      assert answer == ('yes' if column_of[words[2]] < column_of[words[-1]]
                        else 'no')
  if split == 'train':
    assert kinds == {'count', 'colour', 'shape', 'exists', 'left'}


def test_every_word_is_in_the_vocabulary(examples):
  assert len(set(scenes.VOCABULARY)) == len(scenes.VOCABULARY)
  words = {w for split in SPLITS for k in TEXT_FIELDS
           for t in examples[split][k] for w in t.split()}
  assert words <= set(scenes.VOCABULARY)
  assert {'an', 'above', 'left', 'orange'} <= words


def test_audio_fits_and_is_speech_of_the_transcript(examples):
  ex = examples['train']
  lengths = np.array([len(a) for a in ex['audio']])
  assert lengths.max() <= scenes.MAX_AUDIO_SAMPLES
  rms = np.array([np.sqrt(np.mean((a / 32767)**2)) for a in ex['audio']])
  assert rms.min() > 0.03  # Speakers talk at an RMS of 0.05 to 0.15.
  # More words take longer to say: lengths grow with the object count.
  num_words = np.array([len(t.split()) for t in ex['transcript']])
  by_count = [lengths[num_words == n].mean() for n in (3, 8, 11)]
  assert by_count == sorted(by_count)


def test_the_longest_transcript_fits_in_max_audio_samples():
  longest = 0
  for colours in itertools.permutations(scenes.COLOURS, 3):
    for shapes in itertools.permutations(scenes.SHAPES):
      phrases = [['a', c, s] for c, s in zip(colours, shapes)]
      for words in (phrases[0] + ['and'] + phrases[1] + ['and'] + phrases[2],
                    phrases[0] + ['left', 'of'] + phrases[1],
                    phrases[0] + ['above'] + phrases[1]):
        longest = max(longest, speech.max_num_samples(
            scenes.sentence(words).split(), scenes.SAMPLE_RATE))
  assert longest <= scenes.MAX_AUDIO_SAMPLES


def test_noisy_config_has_more_noise():
  configs = {c.name: c for c in scenes.Scenes.BUILDER_CONFIGS}
  kwargs = lambda c: dict(image_noise=c.image_noise, audio_noise=c.audio_noise)
  default = scenes.generate('train', range(64), **kwargs(configs['default']))
  noisy = scenes.generate('train', range(64), **kwargs(configs['noisy']))
  # Same scenes and speech, noise only: the pixel residual grows.
  assert list(default['caption']) == list(noisy['caption'])
  image_residual = lambda d: np.abs(
      ndimage.median_filter(d['image'].astype(float), (1, 3, 3, 1)) -
      d['image']).mean()
  assert image_residual(noisy) > 2 * image_residual(default)
  audio_gap = lambda d: np.mean([np.abs(a[:32]).mean() for a in d['audio']])
  assert audio_gap(noisy) > 2 * audio_gap(default)
