"""The 'wordpiece' op gives the ids of the reference BERT tokenizers
(Hugging Face's BertTokenizerFast and the pure-Python BertTokenizerLegacy)
on the 'scenes' captions and on punctuation, unicode, accents and long
inputs, offline."""
import socket

import numpy as np
import pytest

import minilm_reference
from mmjax.data.builders import scenes
from mmjax.data.preprocess import Preprocess
from mmjax.errors import ConfigError

LENGTH = minilm_reference.golden_script().LENGTH


def tokenize(texts, pp=f'wordpiece({LENGTH})'):
  with minilm_reference.sockets_blocked():
    with pytest.raises(OSError):  # The block is in force.
      socket.create_connection(('pypi.org', 443), timeout=1)
    ops = Preprocess.parse(pp, {}, 'input.pp_train')
    examples = [ops({'text': t}) for t in texts]
  return (ops, np.stack([e['text'] for e in examples]),
          np.stack([e['text_mask'] for e in examples]))


def test_texts_are_scenes_captions():
  texts = minilm_reference.texts()
  rng = np.random.default_rng(0)
  assert texts['captions'] == [
      scenes.sentence(scenes.caption_words(scenes.draw_scene(rng)))
      for _ in texts['captions']]


def test_ids_equal_the_reference_tokenizers():
  texts = minilm_reference.texts()
  reference = minilm_reference.reference()
  _, ids, mask = tokenize(texts['captions'] + texts['edge_cases'])
  np.testing.assert_array_equal(ids, reference['ids_fast'])
  np.testing.assert_array_equal(ids, reference['ids_legacy'])
  # 0 is [PAD] and nothing else, so the mask is exactly the non-zero ids.
  np.testing.assert_array_equal(mask, ids != 0)
  # The very long inputs fill the length, keeping [CLS] ... [SEP].
  assert mask[-1].all() and ids[-1, 0] == 101 and ids[-1, -1] == 102
  # The empty text is [CLS] [SEP].
  empty = len(texts['captions'])
  assert ids[empty, :3].tolist() == [101, 102, 0]


def test_meta_vocab_size_and_decode():
  ops, ids, _ = tokenize(['Crème brûlée, please!'], 'wordpiece(16)')
  assert ops.meta['vocab_size'] == 30522
  op = ops.meta['tokenizers']['text']
  assert op.max_vocab_size == 30522
  assert op.get_tokenizer().decode(ids[0]) == 'creme brulee, please!'


@pytest.mark.parametrize('pp, match', [
    ('wordpiece(1)', 'length must be an int >= 2'),
    ("wordpiece(8, checkpoint='bert-base')", 'unknown checkpoint'),
])
def test_bad_arguments_name_the_field(pp, match):
  with pytest.raises(ConfigError, match=match) as error:
    Preprocess.parse(pp, {}, 'input.pp_train')
  assert error.value.field == 'input.pp_train'
