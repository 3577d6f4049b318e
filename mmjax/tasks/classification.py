"""Single-label and multi-label classification from logits [B, C].

Config (`config.task`, see `default_task_config`):
  name             'classification'
  label_smoothing  in [0, 1). Single-label targets become
                   (1 - s) * one_hot + s / C; multi-label targets become
                   (1 - s) * multi_hot + s / 2. Training loss only: the eval
                   'loss' is the unsmoothed cross-entropy, comparable across
                   runs with different smoothing.
  topk             positive ints; eval reports 'top{k}_accuracy' for every
                   1 < k < num_classes ('accuracy' is top-1, and top-k for
                   k >= num_classes is always 1, so both are skipped).
                   Single-label only.

Batch keys: 'label' (int [B] class ids, or multi-hot [B, C] when the dataset
is multi-label) and optional '_mask' [B] (0 marks padding rows).

Eval metrics (and num_examples, the real examples counted):
  single-label  loss, accuracy, top{k}_accuracy, macro_precision,
                macro_recall, macro_f1.
  multi-label   loss, accuracy (exact match of the whole label set),
                label_accuracy (over every (example, label) pair),
                macro_precision, macro_recall, macro_f1. A label is
                predicted when its logit is > 0 (probability > 0.5).
Macro averages follow scikit-learn's
`precision_recall_fscore_support(average='macro', zero_division=0)`: a
precision, recall or F1 whose denominator is 0 counts as 0; single-label
averages over the classes that occur among the labels or the predictions,
multi-label over all C labels.
"""
import numbers
from typing import Dict, Mapping, Sequence, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from mmjax.errors import ConfigError, check_fields
from mmjax.registry import TASKS
from mmjax.tasks import base


def default_task_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      name='classification', label_smoothing=0.0, topk=(1, 5)))


def _check_config(
    cfg: ml_collections.ConfigDict) -> Tuple[float, Sequence[int]]:
  """Returns (label_smoothing, topk) from `cfg`, or raises ConfigError."""
  defaults = default_task_config()
  check_fields(cfg, defaults, 'task', 'classification')
  smoothing = cfg.get('label_smoothing', defaults.label_smoothing)
  if (not isinstance(smoothing, numbers.Real) or isinstance(smoothing, bool)
      or not 0 <= smoothing < 1):
    raise ConfigError('task.label_smoothing',
                      f'must be a number in [0, 1), got {smoothing!r}.')
  topk = cfg.get('topk', defaults.topk)
  if (not isinstance(topk, Sequence) or not all(
      isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in topk)):
    raise ConfigError('task.topk',
                      f'must be a sequence of positive ints, got {topk!r}.')
  return float(smoothing), topk


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
  """num / den elementwise; 0 where den is 0 (sklearn's zero_division=0)."""
  return np.where(den > 0, num / np.maximum(den, 1), 0.0)


def _macro(tp: np.ndarray, predicted: np.ndarray, actual: np.ndarray,
           included: np.ndarray) -> Dict[str, float]:
  """Macro precision / recall / F1 over `included` classes, from counts [C]."""
  per_class = {
      'macro_precision': _safe_div(tp, predicted),
      'macro_recall': _safe_div(tp, actual),
      # 2 tp / (2 tp + fp + fn): the harmonic mean of precision and recall,
      # and 0 where either is 0.
      'macro_f1': _safe_div(2 * tp, predicted + actual),
  }
  return {name: float(values[included].mean()) if included.any() else 0.0
          for name, values in per_class.items()}


@TASKS.register('classification')
class Classification:
  """Softmax (single-label) or sigmoid (multi-label) classification.

  Attributes:
    num_outputs: C, the width of the model head.
    best_metric, best_mode: eval metric that selects the best checkpoint
      ('accuracy' single-label, 'macro_f1' multi-label, where exact-match
      accuracy is too coarse), maximised.
  """
  best_mode = 'max'

  def __init__(self, cfg: ml_collections.ConfigDict, spec, preprocess=None):
    """`cfg`: `config.task`; `spec`: the `DatasetSpec`, whose label's
    `num_classes` and `multilabel` this reads."""
    del preprocess  # Nothing of the preprocessing is needed.
    num_classes, multilabel = spec.num_classes, spec.multilabel
    if num_classes < 1:
      raise ValueError(f'num_classes must be positive, got {num_classes}.')
    self.label_smoothing, topk = _check_config(cfg)
    self.num_outputs = num_classes
    self.multilabel = multilabel
    self.topk = tuple(sorted({k for k in topk if 1 < k < num_classes}))
    self.best_metric = 'macro_f1' if multilabel else 'accuracy'

  def _losses(self, logits: jax.Array, labels: jax.Array,
              smoothing: float) -> jax.Array:
    """Per-example cross-entropy [B] against smoothed targets."""
    if self.multilabel:
      targets = labels.astype(jnp.float32) * (1 - smoothing) + smoothing / 2
      # Mean over labels keeps the scale independent of C.
      return optax.sigmoid_binary_cross_entropy(logits, targets).mean(-1)
    targets = optax.smooth_labels(
        jax.nn.one_hot(labels, self.num_outputs), smoothing)
    return optax.softmax_cross_entropy(logits, targets)

  def _correct(self, logits: jax.Array, labels: jax.Array) -> jax.Array:
    """[B] bool: top-1 class right, or (multi-label) every label right."""
    if self.multilabel:
      return ((logits > 0) == labels.astype(bool)).all(-1)
    return logits.argmax(-1) == labels

  def loss(self, logits: jax.Array,
           batch: base.Batch) -> Tuple[jax.Array, base.Metrics]:
    """Mean training loss over real rows of logits [B, C], and batch metrics."""
    logits = logits.astype(jnp.float32)
    labels = batch['label']
    weights = base.example_weights(batch, logits.shape[0])
    loss = base.weighted_mean(
        self._losses(logits, labels, self.label_smoothing), weights)
    accuracy = base.weighted_mean(
        self._correct(logits, labels).astype(jnp.float32), weights)
    return loss, {'loss': loss, 'accuracy': accuracy}

  def eval_stats(self, logits: jax.Array, batch: base.Batch) -> base.Metrics:
    """Counts (int32) and loss sums over the real rows of logits [B, C].

    Single-label: 'confusion' [C, C] (rows: label, columns: prediction) and
    'top{k}_correct'. Multi-label: 'exact', and 'tp', 'fp', 'fn' [C].
    """
    logits = logits.astype(jnp.float32)
    labels = batch['label']
    valid = base.example_weights(batch, logits.shape[0]) > 0
    losses = self._losses(logits, labels, smoothing=0.0)
    stats = {'count': valid.sum(dtype=jnp.int32),
             'loss_sum': jnp.where(valid, losses, 0.0).sum()}
    if self.multilabel:
      truth = labels.astype(bool)
      predicted = logits > 0

      def count(x):  # [B, C] bool -> [C] real rows where x holds.
        return (x & valid[:, None]).sum(0, dtype=jnp.int32)

      stats.update(
          exact=((predicted == truth).all(-1) & valid).sum(dtype=jnp.int32),
          tp=count(predicted & truth), fp=count(predicted & ~truth),
          fn=count(~predicted & truth))
      return stats
    num_classes = self.num_outputs
    stats['confusion'] = jnp.zeros((num_classes, num_classes), jnp.int32).at[
        labels, logits.argmax(-1)].add(valid.astype(jnp.int32))
    if self.topk:
      # lax.top_k puts the lower index first among ties, like argmax.
      _, ranked = jax.lax.top_k(logits, max(self.topk))
      hits = ranked == labels[:, None]
      for k in self.topk:
        stats[f'top{k}_correct'] = (hits[:, :k].any(-1) & valid).sum(
            dtype=jnp.int32)
    return stats

  def finalize(self, stats: Mapping[str, np.ndarray]) -> Dict[str, float]:
    """Eval metrics (see the module docstring) from the summed `eval_stats`."""
    count = max(int(stats['count']), 1)
    # num_examples: the real (unpadded) examples evaluated.
    metrics = {'loss': float(stats['loss_sum']) / count,
               'num_examples': int(stats['count'])}
    if self.multilabel:
      tp, fp, fn = (np.asarray(stats[k], np.float64)
                    for k in ('tp', 'fp', 'fn'))
      metrics['accuracy'] = int(stats['exact']) / count
      metrics['label_accuracy'] = 1.0 - float((fp + fn).sum()) / (
          count * self.num_outputs)
      metrics.update(_macro(tp, tp + fp, tp + fn,
                            included=np.ones_like(tp, bool)))
      return metrics
    confusion = np.asarray(stats['confusion'], np.float64)
    tp = np.diag(confusion)
    predicted, actual = confusion.sum(0), confusion.sum(1)
    metrics['accuracy'] = float(tp.sum()) / count
    for k in self.topk:
      metrics[f'top{k}_accuracy'] = int(stats[f'top{k}_correct']) / count
    metrics.update(_macro(tp, predicted, actual,
                          included=(predicted + actual) > 0))
    return metrics
