"""The interface the train loop drives every task through; batch helpers.

A task knows nothing about meshes or checkpoints. `loss` and `eval_stats` are
pure, jit-able functions of the model outputs and the batch; `finalize` runs
on the host. Rows whose `batch['_mask']` is 0 are padding (the last eval batch
is padded to a fixed shape so that nothing recompiles) and count for nothing.

A task is built as `TASKS.get(name)(config.task, spec, preprocess)` from its
config, the dataset's `DatasetSpec` (e.g. the label's `num_classes`,
`multilabel`, `label_names`) and the train preprocessing, a
`mmjax.data.preprocess.Preprocess` (e.g. its `tokenizers`: key -> how the
text of that key is tokenized, for tasks that turn ids back into text).

Whole-split evaluation: a task whose metrics are not sums over batches
(retrieval ranks every eval example against every other) also defines
`eval_examples(outputs, batch) -> Dict[str, jax.Array]` of per-example
values [B, ...]. The runner gathers them, real rows only, over every eval
batch and every process onto the host, concatenated in eval order, and calls
`finalize(stats, examples)`; a task without `eval_examples` gets
`finalize(stats)`.

`finalize` may also return, under the key `PREDICTIONS`, a list of
JSON-able records (a prediction next to its reference) for some examples;
`split_predictions` separates them from the scalar metrics, and the train
loop writes them to the workdir (see `mmjax.train.writers`).

A task whose loss couples the rows of a batch (a contrastive loss, where
every row is a negative of the others) sets `couples_examples = True`; the
train step then computes its loss on the model outputs of the whole global
batch, also under pmap and with gradient accumulation (see
`mmjax.train.steps.coupled_train_step`).
"""
from typing import Any, Dict, List, Mapping, Protocol, Tuple

import jax
import jax.numpy as jnp
import numpy as np

Batch = Mapping[str, jax.Array]
Metrics = Dict[str, jax.Array]
PREDICTIONS = 'predictions'


def split_predictions(results: Mapping[str, Any]
                      ) -> Tuple[Dict[str, float], List[Dict[str, Any]]]:
  """`finalize`'s results -> (scalar metrics, prediction records or [])."""
  metrics = dict(results)
  return metrics, metrics.pop(PREDICTIONS, [])


class Task(Protocol):
  """Loss, metrics and eval procedure for one objective.

  Eval is exact over any number of padded batches: the train loop sums
  `eval_stats` over the eval set on device, then calls `finalize` once.
  """
  num_outputs: int  # Width of the model head.
  best_metric: str  # Eval metric that selects the best checkpoint...
  best_mode: str  # ...'max' or 'min'.

  def loss(self, outputs: Any, batch: Batch) -> Tuple[jax.Array, Metrics]:
    """Returns (scalar loss to minimise, on-device metrics for this batch)."""

  def eval_stats(self, outputs: Any, batch: Batch) -> Metrics:
    """Additive sufficient statistics of this batch's real rows."""

  def finalize(self, stats: Mapping[str, np.ndarray]) -> Dict[str, float]:
    """Metrics over the whole eval set from the summed `eval_stats` (and,
    for a task with `eval_examples`, a second argument: the gathered
    per-example values)."""


def example_weights(batch: Batch, batch_size: int) -> jax.Array:
  """[B] float32 weights: `batch['_mask']` where present, else all ones."""
  if '_mask' not in batch:
    return jnp.ones((batch_size,), jnp.float32)
  return batch['_mask'].astype(jnp.float32)


def weighted_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
  """Mean of [B] `values` under [B] `weights`; 0 (not NaN) when all weigh 0."""
  total = weights.sum()
  return (values * weights).sum() / jnp.where(total > 0, total, 1.0)
