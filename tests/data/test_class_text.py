"""Tests of the class_text op on the session's 'tiny' scenes dataset (label
target 'label', four named classes)."""
import numpy as np
import pytest

from mmjax.data import tokenizers
from mmjax.data.builders import scenes
from mmjax.data.preprocess import Preprocess
from mmjax.errors import ConfigError

TEMPLATE = 'a scene where {}'


def _examples(spec, pp, n=12):
  source = spec.source(spec.eval_split)
  return [(spec.select(source[i]), pp(spec.select(source[i])))
          for i in range(n)]


def test_meta_has_the_label_names(spec):
  assert spec.meta['label_names'] == scenes.LABEL_NAMES
  assert spec.meta['multilabel'] is False


def test_text_is_the_template_of_the_class_name(spec):
  pp = Preprocess.parse(f'class_text({TEMPLATE!r})', spec.meta,
                        'input.pp_eval')
  labels = set()
  for raw, out in _examples(spec, pp):
    label = int(raw['label'])
    labels.add(label)
    assert out['text'] == TEMPLATE.format(scenes.LABEL_NAMES[label])
    assert out['label'] == raw['label']
    assert raw['text'] != out['text']  # The dataset's own text is replaced.
  assert len(labels) > 1


def test_default_template_and_key(spec):
  pp = Preprocess.parse('class_text(key="caption")', spec.meta,
                        'input.pp_eval')
  for raw, out in _examples(spec, pp, n=4):
    assert out['caption'] == scenes.LABEL_NAMES[int(raw['label'])]
    assert out['text'] == raw['text']


def test_tokenized_after_class_text(spec):
  pp = Preprocess.parse("class_text|tokenize(8, tokenizer='byte')", spec.meta,
                        'input.pp_eval')
  assert pp.meta['vocab_size'] == tokenizers.ByteTokenizer.vocab_size
  byte = tokenizers.ByteTokenizer()
  for raw, out in _examples(spec, pp, n=6):
    name = scenes.LABEL_NAMES[int(raw['label'])]
    assert out['text'].dtype == np.int32 and out['text'].shape == (8,)
    assert out['text_mask'].all()  # Every name is longer than 8 bytes.
    assert byte.decode(out['text']) == name[:8]


@pytest.mark.parametrize('meta,match', [
    ({'label_names': ()}, 'has none'),
    ({}, 'has none'),
    ({'label_names': ('a', 'b'), 'multilabel': True}, 'multi-label'),
])
def test_dataset_without_label_names_raises(meta, match):
  with pytest.raises(ConfigError, match='input.pp_train: op ClassText: '
                     f'class_text needs.*{match}'):
    Preprocess.parse('class_text', meta, 'input.pp_train')


@pytest.mark.parametrize('template', ['no field', '{0} {1}', '{name}'])
def test_template_without_one_name_field_raises(template):
  with pytest.raises(ConfigError, match="input.pp_train.*one field '{}'"):
    Preprocess.parse(f'class_text({template!r})', {'label_names': ('a',)},
                     'input.pp_train')


def test_bad_label_raises():
  pp = Preprocess.parse('class_text', {'label_names': ('a', 'b')},
                        'input.pp_train')
  assert pp({'label': np.int32(1)})['text'] == 'b'
  with pytest.raises(ValueError, match='label 2 is outside the 2'):
    pp({'label': np.int32(2)})
  with pytest.raises(ValueError, match='int class id'):
    pp({'label': np.array([0., 1.], np.float32)})
  with pytest.raises(KeyError, match="ClassText.*no key 'label'"):
    pp({'text': 'x'})
