"""Tests for mmjax.tasks.classification: losses, exact eval over padding."""
import types

import jax
import ml_collections
import numpy as np
import pytest

from mmjax import tasks  # noqa: F401  (registers the tasks)
from mmjax.errors import ConfigError
from mmjax.registry import TASKS


def make_task(num_classes, multilabel=False, **fields):
  cfg = ml_collections.ConfigDict(
      {'name': 'classification', 'label_smoothing': 0.0, 'topk': (1, 5),
       **fields})
  # The two fields of a DatasetSpec the task reads.
  spec = types.SimpleNamespace(num_classes=num_classes, multilabel=multilabel)
  return TASKS.get(cfg.name, field='task.name')(cfg, spec)


def log_softmax(logits):
  shifted = logits - logits.max(-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def evaluate(task, batches):
  """Sums jitted eval_stats over `batches` as the loop does; finalizes."""
  stats_fn = jax.jit(task.eval_stats)
  totals = None
  for logits, batch in batches:
    stats = stats_fn(logits, batch)
    totals = stats if totals is None else jax.tree.map(np.add, totals, stats)
  return task.finalize(jax.device_get(totals))


def split_padded(logits, batch, batch_size):
  """Cuts rows into batches of `batch_size`; pads the last, with '_mask' 0.

  Padding rows get large logits and label 0, so any leak into a metric shows.
  """
  n = len(logits)
  pad = -n % batch_size
  logits = np.concatenate([logits, np.full((pad, logits.shape[1]), 50.0,
                                           np.float32)])
  batch = {k: np.concatenate([v, np.zeros((pad, *v.shape[1:]), v.dtype)])
           for k, v in batch.items()}
  batch['_mask'] = np.arange(n + pad) < n
  return [(logits[i:i + batch_size],
           {k: v[i:i + batch_size] for k, v in batch.items()})
          for i in range(0, n + pad, batch_size)]


def reference_macro(tp, predicted, actual, included):
  """Per-class loop with scikit-learn's zero_division=0 convention."""
  p, r, f = [], [], []
  for c in np.flatnonzero(included):
    p.append(tp[c] / predicted[c] if predicted[c] else 0.0)
    r.append(tp[c] / actual[c] if actual[c] else 0.0)
    f.append(2 * p[-1] * r[-1] / (p[-1] + r[-1]) if p[-1] + r[-1] else 0.0)
  return {'macro_precision': np.mean(p), 'macro_recall': np.mean(r),
          'macro_f1': np.mean(f)}


@pytest.mark.parametrize('smoothing', [0.0, 0.2])
def test_loss_is_cross_entropy_over_real_rows(smoothing):
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(6, 4)).astype(np.float32)
  labels = np.array([0, 3, 1, 2, 2, 1])
  task = make_task(4, label_smoothing=smoothing)
  targets = np.eye(4)[labels] * (1 - smoothing) + smoothing / 4
  per_example = -(targets * log_softmax(logits)).sum(-1)

  loss, metrics = task.loss(logits, {'label': labels})
  np.testing.assert_allclose(loss, per_example.mean(), rtol=1e-5)
  np.testing.assert_allclose(
      metrics['accuracy'], np.mean(logits.argmax(-1) == labels))

  # Two padding rows (huge logits, wrong labels) change nothing.
  padded_logits = np.concatenate([logits, [[99., 0, 0, 0], [0, 99., 0, 0]]])
  batch = {'label': np.concatenate([labels, [3, 3]]),
           '_mask': np.array([1] * 6 + [0, 0])}
  padded_loss, padded_metrics = jax.jit(task.loss)(
      padded_logits.astype(np.float32), batch)
  np.testing.assert_allclose(padded_loss, loss, rtol=1e-5)
  np.testing.assert_allclose(padded_metrics['accuracy'], metrics['accuracy'])


def test_loss_of_an_all_padding_batch_is_zero_not_nan():
  loss, metrics = make_task(3).loss(
      np.zeros((2, 3), np.float32),
      {'label': np.array([0, 1]), '_mask': np.zeros(2)})
  assert float(loss) == 0.0 and float(metrics['accuracy']) == 0.0


def test_eval_over_padded_batches_matches_concatenated_rows():
  rng = np.random.default_rng(1)
  num_classes, n = 6, 21  # Batches of 8: the last has 3 padding rows.
  logits = rng.normal(size=(n, num_classes)).astype(np.float32)
  labels = rng.integers(0, num_classes, n)
  task = make_task(num_classes, label_smoothing=0.3, topk=(1, 2, 3, 6, 9))
  metrics = evaluate(task, split_padded(logits, {'label': labels}, 8))

  # Top-1 is 'accuracy'; k >= num_classes is always 1 and not reported.
  assert sorted(metrics) == sorted([
      'loss', 'num_examples', 'accuracy', 'top2_accuracy', 'top3_accuracy',
      'macro_precision', 'macro_recall', 'macro_f1'])
  assert metrics['num_examples'] == n  # Padding rows are not counted.
  predictions = logits.argmax(-1)
  rank = (logits > logits[np.arange(n), labels][:, None]).sum(-1)
  # The eval loss is the unsmoothed cross-entropy.
  nll = -log_softmax(logits)[np.arange(n), labels]
  expected = {'loss': nll.mean(), 'accuracy': np.mean(predictions == labels),
              'top2_accuracy': np.mean(rank < 2),
              'top3_accuracy': np.mean(rank < 3)}
  confusion = np.zeros((num_classes, num_classes))
  np.add.at(confusion, (labels, predictions), 1)
  predicted, actual = confusion.sum(0), confusion.sum(1)
  expected.update(reference_macro(np.diag(confusion), predicted, actual,
                                  included=predicted + actual > 0))
  for name, value in expected.items():
    np.testing.assert_allclose(metrics[name], value, rtol=1e-5, err_msg=name)


def test_macro_metrics_hand_worked_with_unpredicted_and_absent_classes():
  # Labels 0 0 1 2, predictions 0 1 1 1 of 4 classes: class 2 is never
  # predicted (precision 0 by convention), class 3 never occurs (excluded).
  #   class 0: P 1,   R 1/2, F1 2/3
  #   class 1: P 1/3, R 1,   F1 1/2
  #   class 2: P 0,   R 0,   F1 0
  logits = 5.0 * np.eye(4, dtype=np.float32)[[0, 1, 1, 1]]
  batches = split_padded(logits, {'label': np.array([0, 0, 1, 2])}, 3)
  metrics = evaluate(make_task(4), batches)
  np.testing.assert_allclose(metrics['accuracy'], 0.5)
  np.testing.assert_allclose(metrics['macro_precision'], 4 / 9)
  np.testing.assert_allclose(metrics['macro_recall'], 1 / 2)
  np.testing.assert_allclose(metrics['macro_f1'], 7 / 18)


def test_multilabel_loss_and_metrics():
  rng = np.random.default_rng(2)
  num_labels, n = 5, 13
  logits = rng.normal(size=(n, num_labels)).astype(np.float32)
  labels = (rng.random((n, num_labels)) < 0.4).astype(np.float32)
  labels[:, 4] = 0  # Never a true label...
  logits[:, 4] = -1.0  # ...nor predicted: counts 0 in the macro average.
  logits[:3] = np.where(labels[:3] > 0, 2.0, -2.0)  # Some exact matches.
  task = make_task(num_labels, multilabel=True, label_smoothing=0.1)
  assert (task.num_outputs, task.best_metric) == (num_labels, 'macro_f1')

  def bce(targets):
    log_p, log_not_p = -np.logaddexp(0, -logits), -np.logaddexp(0, logits)
    return -(targets * log_p + (1 - targets) * log_not_p).mean(-1)

  loss, metrics = task.loss(logits, {'label': labels})
  np.testing.assert_allclose(loss, bce(labels * 0.9 + 0.05).mean(), rtol=1e-5)
  predicted = logits > 0
  truth = labels > 0
  exact = (predicted == truth).all(-1)
  np.testing.assert_allclose(metrics['accuracy'], exact.mean())

  metrics = evaluate(task, split_padded(logits, {'label': labels}, 4))
  tp = (predicted & truth).sum(0)
  expected = {'loss': bce(labels).mean(), 'accuracy': exact.mean(),
              'num_examples': len(labels),
              'label_accuracy': (predicted == truth).mean(),
              **reference_macro(tp, predicted.sum(0), truth.sum(0),
                                included=np.ones(num_labels, bool))}
  assert sorted(metrics) == sorted(expected)
  for name, value in expected.items():
    np.testing.assert_allclose(metrics[name], value, rtol=1e-5, err_msg=name)


@pytest.mark.parametrize('fields, field', [
    (dict(label_smoothing=1.0), 'task.label_smoothing'),
    (dict(label_smoothing=-0.1), 'task.label_smoothing'),
    (dict(label_smoothing='0.1'), 'task.label_smoothing'),
    (dict(topk=(1, -5)), 'task.topk'),
    (dict(topk=(0,)), 'task.topk'),
    (dict(topk=5), 'task.topk'),
    (dict(smoothing=0.1), 'task.smoothing'),
])
def test_bad_config_raises_config_error(fields, field):
  with pytest.raises(ConfigError) as error:
    make_task(4, **fields)
  assert error.value.field == field


def test_unknown_task_name_lists_valid_names():
  with pytest.raises(ConfigError, match='classification'):
    TASKS.get('clasification', field='task.name')
