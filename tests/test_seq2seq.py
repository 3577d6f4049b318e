"""Sequence tasks (captioning, speech recognition, generated answers): one
sharded train step equals one device's, CTC on hand cases, decoded ids back
to text and metrics, predictions written by a training run, config errors."""
import functools
import glob
import importlib
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny import gradient_step_config, one_step
from trees import assert_trees_close

from mmjax import data
from mmjax.data import tokenizers
from mmjax.data.builders import scenes
from mmjax.errors import ConfigError
from mmjax.metrics import text as text_metrics
from mmjax.models import decoders
from mmjax.tasks import seq2seq
from mmjax.experiment import Experiment, train_and_evaluate
from mmjax.validate import validate_config

# Config module, variant: together every decoder, both kinds of memory (one
# modality's tokens; cross-attention fusion of two) and both kinds of answer.
TASKS = {
    'captioning_lstm': ('captioning', 'size=tiny,decoder=lstm'),
    'asr_ctc': ('asr', 'size=tiny,decoder=ctc'),
    'vqa': ('vqa', 'size=tiny,text=embedding_bag'),
    'vqa_generate': ('vqa', 'answer=generate,size=tiny,text=embedding_bag'),
}


def _config(data_dir, task, mesh=None, **fields):
  """A tiny config of `task` (a TASKS key; see
  `tiny.gradient_step_config`)."""
  module, arg = TASKS[task]
  return gradient_step_config(
      importlib.import_module(f'configs.{module}').get_config(arg), data_dir,
      mesh, **fields)


@functools.lru_cache(maxsize=None)
def _step(data_dir, task, devices, mesh=None):
  """(loss, gradients as host arrays) of one step from the initial state."""
  experiment = Experiment(_config(data_dir, task, mesh),
                          devices=jax.devices()[:devices])
  return one_step(experiment, next(experiment.train_iterator()))


@pytest.mark.parametrize('task', ['captioning_lstm', 'asr_ctc', 'vqa'])
def test_one_sharded_train_step_equals_one_device(data_dir, task):
  """Data x fsdp mesh (2 x 4): the same loss and parameter update."""
  loss, grads = _step(data_dir, task, 8, mesh='2x4')
  ref_loss, ref_grads = _step(data_dir, task, 1)
  assert math.isfinite(ref_loss) and ref_loss > 0
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  assert_trees_close(grads, ref_grads, rtol=1e-4, atol=1e-6)
  assert max(np.abs(g).max() for g in jax.tree.leaves(ref_grads)) > 0


def test_ctc_loss_and_best_path_on_hand_cases():
  # One frame, target [t]: the loss is -log p(t) of that frame.
  probs = np.array([[[0.1, 0.6, 0.3]]])
  loss = seq2seq.ctc_losses(jnp.log(probs), jnp.ones((1, 1)),
                            jnp.array([[1]]), jnp.ones((1, 1)))
  np.testing.assert_allclose(loss, [-math.log(0.6)], rtol=1e-5)
  # Two frames, target [1]: paths 1 1, 1 _, _ 1 (blank 0).
  probs = np.array([[[0.2, 0.5, 0.3], [0.4, 0.4, 0.2]]])
  loss = seq2seq.ctc_losses(jnp.log(probs), jnp.ones((1, 2)),
                            jnp.array([[1, 0]]), jnp.array([[1, 0]]))
  expected = 0.5 * 0.4 + 0.5 * 0.4 + 0.2 * 0.4
  np.testing.assert_allclose(loss, [-math.log(expected)], rtol=1e-5)
  # A row without target tokens (padding) costs nothing.
  assert seq2seq.ctc_losses(jnp.zeros((1, 2, 3)), jnp.ones((1, 2)),
                            jnp.zeros((1, 1), jnp.int32),
                            jnp.zeros((1, 1)))[0] == 0
  # Best path: repeats merge, blanks split them, masked frames are ignored,
  # tokens beyond max_len are dropped.
  best = jnp.array([[3, 3, 0, 3, 2, 2, 0, 4]])
  logits = jax.nn.one_hot(best, 5)
  mask = jnp.array([[1, 1, 1, 1, 1, 1, 1, 0]])
  assert decoders.ctc_greedy(logits, mask, 5).tolist() == [[3, 3, 2, 0, 0]]
  assert decoders.ctc_greedy(logits, mask, 2).tolist() == [[3, 3]]


def test_token_losses_hand_cases():
  # Uniform logits: log V per token, whatever the target.
  losses = seq2seq.token_losses(jnp.zeros((1, 3, 4)), jnp.array([[1, 2, 3]]))
  np.testing.assert_allclose(losses, [[math.log(4)] * 3], rtol=1e-6)
  # p = (.75, .25), target 0, smoothing .2: labels (.9, .1).
  logits = jnp.log(jnp.array([[[0.75, 0.25]]]))
  loss = seq2seq.token_losses(logits, jnp.array([[0]]), label_smoothing=0.2)
  assert loss[0, 0] == pytest.approx(
      -(0.9 * math.log(.75) + 0.1 * math.log(.25)), rel=1e-5)


def test_tokenizers_decode_what_they_encode():
  word = tokenizers.WordTokenizer(scenes.VOCABULARY)
  ids, _ = word.encode('a red circle left of a blue square', 12)
  assert word.decode(ids) == 'a red circle left of a blue square'
  # Ids past the vocabulary (a decoder's begin / end ids) are not text.
  assert word.decode([2, word.vocab_size, word.vocab_size + 1, 0]) == 'a'
  assert word.decode(word.encode('a zebra', 4)[0]) == 'a <unk>'
  byte = tokenizers.ByteTokenizer()
  assert byte.decode(byte.encode('héllo', 10)[0]) == 'héllo'


def test_finalize_stops_at_the_end_id_and_scores_the_texts(data_dir):
  config = _config(data_dir, 'captioning_lstm')
  data.prepare(config)
  _, task = validate_config(config, num_devices=1)
  word = tokenizers.WordTokenizer(scenes.VOCABULARY)
  references = ['a red circle', 'a blue square left of a green triangle']
  hypotheses = ['a red circle', 'a blue square left of a green circle']

  def ids(texts, end):
    """Rows of 12 ids: the words, then (predictions) the end id and junk
    that must be ignored, or (references) padding."""
    rows = []
    for text in texts:
      row = list(word.encode(text, 12)[0][:len(text.split())])
      row += [task.eos_id] if end else []
      rows.append(row + [5 if end else 0] * (12 - len(row)))
    return np.array(rows)

  results = task.finalize(
      {'count': 2, 'tokens': 12.0, 'loss_sum': 6.0},
      {'prediction': ids(hypotheses, end=True),
       'reference': ids(references, end=False)})
  assert results['loss'] == 0.5 and results['num_examples'] == 2
  assert results['bleu4'] == pytest.approx(text_metrics.corpus_bleu(
      hypotheses, [[r] for r in references]))
  assert 0 < results['bleu4'] < 1
  assert results['predictions'][1] == {
      'index': 1, 'prediction': hypotheses[1], 'reference': references[1]}


def test_training_writes_predictions_next_to_references(data_dir, tmp_path):
  """Generated answers (a Transformer decoder over cross-attention fusion of
  image and question) on 8 devices, greedy decoding of the whole tiny test
  split (100 scenes in 4 padded batches); the first 64 predictions go to
  the JSONL file, a few to TensorBoard."""
  config = _config(data_dir, 'vqa_generate', num_train_steps=2,
                   eval_every_steps=2, checkpoint_every_steps=2,
                   model__decoding__method='greedy')
  summary = train_and_evaluate(config, str(tmp_path), progress=False)
  assert summary['eval']['num_examples'] == 100
  assert 0 <= summary['eval']['exact_match'] <= 1
  with open(tmp_path / 'predictions' / 'eval_step_2.jsonl') as f:
    records = [json.loads(line) for line in f]
  spec = data.DatasetSpec(config.dataset, config.model.modalities)
  source = spec.source('test', features=['answer'])
  assert [r['index'] for r in records] == list(range(64))
  assert [r['reference'] for r in records] == [
      source[i]['answer'].decode() for i in range(64)]
  assert all(isinstance(r['prediction'], str) for r in records)
  events = glob.glob(os.path.join(tmp_path, 'tensorboard', 'events*'))
  assert b'eval/predictions' in open(events[0], 'rb').read()


@pytest.mark.parametrize('fields, field', [
    # Pooled-vector fusion: nothing for a decoder to attend to.
    (dict(model__fusion={'name': 'concat'}), 'model.fusion.name'),
    (dict(model__decoding__method='sample'), 'model.decoding.method'),
    (dict(model__decoder__name='gru'), 'model.decoder.name'),
    (dict(input__pp_train='value_range(-1, 1)'), 'input.pp_train'),
    (dict(task__best_metric='wer'), 'task.best_metric'),
    (dict(model__name='classifier'), 'model.name'),
])
def test_config_errors_name_the_field(data_dir, fields, field):
  config = _config(data_dir, 'vqa_generate', **fields)
  with pytest.raises(ConfigError, match=field.replace('.', r'\.')):
    Experiment(config, devices=jax.devices()[:1])
