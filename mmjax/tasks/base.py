"""The interface the train loop drives every task through; batch helpers.

A task knows nothing about meshes or checkpoints. `loss` and `eval_stats` are
pure, jit-able functions of the model outputs and the batch; `finalize` runs
on the host. Rows whose `batch['_mask']` is 0 are padding (the last eval batch
is padded to a fixed shape so that nothing recompiles) and count for nothing.
"""
from typing import Any, Dict, Mapping, Protocol, Tuple

import jax
import jax.numpy as jnp
import numpy as np

Batch = Mapping[str, jax.Array]
Metrics = Dict[str, jax.Array]


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
    """Metrics over the whole eval set from the summed `eval_stats`."""


def example_weights(batch: Batch, batch_size: int) -> jax.Array:
  """[B] float32 weights: `batch['_mask']` where present, else all ones."""
  if '_mask' not in batch:
    return jnp.ones((batch_size,), jnp.float32)
  return batch['_mask'].astype(jnp.float32)


def weighted_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
  """Mean of [B] `values` under [B] `weights`; 0 (not NaN) when all weigh 0."""
  total = weights.sum()
  return (values * weights).sum() / jnp.where(total > 0, total, 1.0)
