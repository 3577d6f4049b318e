"""Text generation: image captioning, speech recognition, generated answers.

Trains the 'seq2seq' model (mmjax/models/seq2seq.py) by teacher forcing
(cross-entropy of every target token, then the end id) or, with a CTC
decoder, by CTC; evaluates what the model decodes against the references
with corpus metrics over the whole eval split.

Config (`config.task`, see `default_task_config`):
  name             'seq2seq'
  label_smoothing  in [0, 1): training loss only (teacher forcing).
  metrics          names from METRICS: 'bleu4' and 'cider_d' (captions),
                   'wer' and 'cer' (speech), 'exact_match' (answers).
  best_metric      one of `metrics`, or 'loss'; selects the best checkpoint
                   (error rates and the loss minimised, the others
                   maximised).
  num_predictions  how many eval examples (the first of the split) have
                   their prediction and reference returned under
                   `base.PREDICTIONS` for the workdir's predictions JSONL.

Batch keys: 'target' int [B, T] and 'target_mask' [B, T] (the text to
produce, from `tokenize(T, key='target')`, whose tokenizer also turns the
decoded ids back into text), optional '_mask' [B].

Eval metrics: 'loss' (teacher-forced cross-entropy per target token,
unsmoothed; CTC: negative log-likelihood per target token), the configured
metrics on the decoded texts, 'num_examples'.
"""
from typing import Any, Dict, List, Mapping, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from mmjax.data.preprocess import Preprocess
from mmjax.errors import ConfigError, check_fields
from mmjax.metrics import text as text_metrics
from mmjax.models.seq2seq import decoder_inputs_and_targets
from mmjax.registry import TASKS
from mmjax.tasks import base
from mmjax.tokens import CTC_BLANK_ID, special_ids

# Metric -> (function of (hypotheses, references), mode, whether each
# reference is given as a list of accepted references).
METRICS = {
    'bleu4': (text_metrics.corpus_bleu, 'max', True),
    'cider_d': (text_metrics.cider_d, 'max', True),
    'wer': (text_metrics.wer, 'min', False),
    'cer': (text_metrics.cer, 'min', False),
    'exact_match': (text_metrics.exact_match, 'max', False),
}


def default_task_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      name='seq2seq', label_smoothing=0.0, metrics=('bleu4', 'cider_d'),
      best_metric='bleu4', num_predictions=64))


def _check_config(cfg: ml_collections.ConfigDict) -> None:
  check_fields(cfg, default_task_config(), 'task', 'seq2seq')
  smoothing = cfg.get('label_smoothing', 0.0)
  if not isinstance(smoothing, (int, float)) or not 0 <= smoothing < 1:
    raise ConfigError('task.label_smoothing',
                      f'must be a number in [0, 1), got {smoothing!r}.')
  metrics = tuple(cfg.get('metrics', ()))
  unknown = [m for m in metrics if m not in METRICS]
  if unknown or not metrics:
    raise ConfigError('task.metrics', f'got {metrics!r}; choose one or more '
                      f'of: {", ".join(METRICS)}.')
  if cfg.get('best_metric') not in metrics + ('loss',):
    raise ConfigError('task.best_metric', f'{cfg.get("best_metric")!r} is '
                      f'not computed; choose one of task.metrics {metrics} '
                      "or 'loss'.")
  count = cfg.get('num_predictions', 0)
  if not isinstance(count, int) or count < 0:
    raise ConfigError('task.num_predictions',
                      f'must be an integer >= 0, got {count!r}.')


def token_losses(logits: jax.Array, targets: jax.Array,
                 label_smoothing: float = 0.0) -> jax.Array:
  """Cross-entropy [B, T] of logits [B, T, V] against int targets [B, T];
  the target distribution is (1 - eps) on the target plus eps =
  label_smoothing spread uniformly over the V tokens."""
  labels = optax.smooth_labels(
      jax.nn.one_hot(targets, logits.shape[-1]), label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), labels)


def ctc_losses(logits: jax.Array, logit_mask: jax.Array, targets: jax.Array,
               target_mask: jax.Array) -> jax.Array:
  """CTC negative log-likelihood [B] of each target, blank = CTC_BLANK_ID.

  Args:
    logits: [B, S, V] per encoder token; logit_mask [B, S] its valid tokens.
    targets: int [B, T] (PAD_ID-padded, no end id); target_mask [B, T].
  Returns:
    [B]; 0 for an example without target tokens (a padding row).
  """
  losses = optax.ctc_loss(
      logits.astype(jnp.float32), 1.0 - logit_mask.astype(jnp.float32),
      targets, 1.0 - target_mask.astype(jnp.float32), blank_id=CTC_BLANK_ID)
  return jnp.where(target_mask.any(-1), losses, 0.0)


def _until_end(ids: np.ndarray, eos_id: int) -> np.ndarray:
  """The ids before the first eos_id (all of them without one)."""
  end = np.flatnonzero(ids == eos_id)
  return ids[:end[0]] if end.size else ids


@TASKS.register('seq2seq')
class Seq2SeqTask:
  """Teacher-forced (or CTC) training, whole-split generation metrics."""

  def __init__(self, cfg: ml_collections.ConfigDict, spec,
               preprocess: Preprocess):
    """`cfg`: `config.task`; `preprocess`: the train preprocessing, whose
    `tokenizers` must hold how it tokenizes 'target'."""
    del spec  # The target's vocabulary comes from its tokenizer.
    _check_config(cfg)
    tokenize = preprocess.tokenizers.get('target')
    if tokenize is None:
      raise ConfigError('input.pp_train', "task 'seq2seq' needs the target "
                        "text tokenized: add tokenize(LENGTH, key='target') "
                        'to input.pp_train and input.pp_eval, and map '
                        'dataset.features.target to the text feature.')
    self._tokenize = tokenize
    self.bos_id, self.eos_id, self.num_outputs = special_ids(
        tokenize.max_vocab_size)
    self.label_smoothing = float(cfg.label_smoothing)
    self.metrics = tuple(cfg.metrics)
    self.num_predictions = cfg.num_predictions
    self.best_metric = cfg.best_metric
    self.best_mode = ('min' if cfg.best_metric == 'loss'
                      else METRICS[cfg.best_metric][1])

  def _losses(self, outputs: Mapping[str, jax.Array], batch: base.Batch,
              smoothing: float) -> Tuple[jax.Array, jax.Array]:
    """(summed loss [B], number of target tokens [B]) per example."""
    if 'ctc_logits' in outputs:
      mask = batch['target_mask']
      return (ctc_losses(outputs['ctc_logits'], outputs['ctc_mask'],
                         batch['target'], mask),
              mask.sum(-1).astype(jnp.float32))
    _, targets, mask = decoder_inputs_and_targets(batch, self.eos_id,
                                                  self.bos_id)
    mask = mask.astype(jnp.float32)
    losses = token_losses(outputs['logits'], targets, smoothing)
    return (losses * mask).sum(-1), mask.sum(-1)

  def loss(self, outputs: Mapping[str, jax.Array],
           batch: base.Batch) -> Tuple[jax.Array, base.Metrics]:
    """Loss per target token over the real rows, and batch metrics."""
    losses, tokens = self._losses(outputs, batch, self.label_smoothing)
    weights = base.example_weights(batch, losses.shape[0])
    loss = (losses * weights).sum() / jnp.maximum((tokens * weights).sum(),
                                                  1.0)
    return loss, {'loss': loss}

  def eval_stats(self, outputs: Mapping[str, jax.Array],
                 batch: base.Batch) -> base.Metrics:
    """Real examples, target tokens and the summed unsmoothed loss."""
    losses, tokens = self._losses(outputs, batch, 0.0)
    weights = base.example_weights(batch, losses.shape[0])
    return {'count': (weights > 0).sum(dtype=jnp.int32),
            'tokens': (tokens * weights).sum(),
            'loss_sum': (losses * weights).sum()}

  def eval_examples(self, outputs: Mapping[str, jax.Array],
                    batch: base.Batch) -> Dict[str, jax.Array]:
    """Decoded ids [B, L] and the reference ids [B, T] of every example."""
    return {'prediction': outputs['tokens'], 'reference': batch['target']}

  def texts(self, ids: np.ndarray) -> List[str]:
    """Rows of ids [N, L] -> their texts (up to the first end id)."""
    tokenizer = self._tokenize.get_tokenizer()
    return [tokenizer.decode(_until_end(row, self.eos_id)) for row in ids]

  def finalize(self, stats: Mapping[str, np.ndarray],
               examples: Mapping[str, np.ndarray]) -> Dict[str, Any]:
    """Eval metrics over the whole split, and under `base.PREDICTIONS` the
    first `num_predictions` examples' prediction and reference texts."""
    hypotheses = self.texts(examples['prediction'])
    references = self.texts(examples['reference'])
    results: Dict[str, Any] = {
        'loss': float(stats['loss_sum']) / max(float(stats['tokens']), 1.0),
        'num_examples': int(stats['count'])}
    for name in self.metrics:
      fn, _, listed = METRICS[name]
      results[name] = fn(hypotheses, [[r] for r in references] if listed
                         else references)
    results[base.PREDICTIONS] = [
        {'index': i, 'prediction': h, 'reference': r}
        for i, (h, r) in enumerate(zip(hypotheses[:self.num_predictions],
                                       references))]
    return results

