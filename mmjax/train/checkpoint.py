"""Orbax checkpointing behind one small class, so the Orbax API changes in one place.

A checkpoint holds two items: ``state`` (the train state: step, params,
batch statistics, optimizer state) and ``data`` (the Grain input iterator's
state, one JSON file per process, so a resumed run sees the batches the
uninterrupted run would have seen on every host).
Saves are asynchronous; the most recent `keep_last` steps are kept, plus the
`keep_best` steps with the best eval metric.
"""
import os
from typing import Any, Mapping, Optional

import grain
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

ITEMS = ('state', 'data')


class Checkpointer:
  """Saves and restores the train state and the data iterator state."""

  def __init__(self, directory: str, *, keep_last: int, keep_best: int,
               best_metric: str, best_mode: str, async_save: bool = True):
    policies = [checkpoint_managers.LatestN(n=keep_last)]
    if keep_best:
      policies.append(checkpoint_managers.BestN(
          get_metric_fn=lambda metrics: metrics[best_metric],
          reverse=best_mode == 'min', n=keep_best,
          keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=checkpoint_managers.AnyPreservationPolicy(
            policies),
        enable_async_checkpointing=async_save,
        cleanup_tmp_directories=True)
    self._manager = ocp.CheckpointManager(
        os.path.abspath(directory), options=options, item_names=ITEMS)

  @property
  def directory(self) -> str:
    return str(self._manager.directory)

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def all_steps(self):
    return self._manager.all_steps()

  def save(self, step: int, state: Any, data: grain.DatasetIterator,
           metrics: Optional[Mapping[str, float]] = None) -> None:
    """Starts an (asynchronous) save of `state` and `data`'s position at `step`.

    `metrics` (eval metrics of this step, host floats) rank checkpoints for
    the keep-best policy.
    """
    self._manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=grain.checkpoint.CheckpointSave(data)),
        metrics=dict(metrics) if metrics else None,
        force=True)

  def restore(self, step: int, target: Any,
              data: grain.DatasetIterator) -> Any:
    """Restores step `step`: returns the state, and moves `data` to its position.

    Args:
      target: a pytree of `jax.ShapeDtypeStruct`s with shardings (or arrays)
        describing the state to restore into, e.g. on another mesh.
      data: this process's input iterator, built as when it was saved.
    """
    restored = self._manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target),
            data=grain.checkpoint.CheckpointRestore(data)))
    return restored.state

  def wait(self) -> None:
    """Blocks until the pending asynchronous save has finished."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()

