"""Orbax checkpointing behind one small class, so the Orbax API changes in one place.

A checkpoint holds two items: ``state`` (the train state: step, params,
batch statistics, optimizer state) and ``data`` (the Grain input iterator's
state, one JSON file per process, so a resumed run sees the batches the
uninterrupted run would have seen on every host).
Saves are asynchronous; the most recent `keep_last` steps are kept, plus the
`keep_best` steps with the best eval metric.

Crash safety. Orbax writes a step into a temporary directory and renames it
when complete, so a process killed during a save leaves the previous steps
intact and no partial step that `latest_step` would return; the temporary
directories it leaves behind are removed when the next run starts. Once a
save has finished, the size of every file it wrote is recorded in
`<step>/mmjax_files.json`, so a restore can tell a truncated or deleted file
(or an unfinished item directory) from a good checkpoint in milliseconds and
name it, instead of failing deep inside TensorStore or restoring garbage.
"""
import json
import os
import shutil
import time
from typing import Any, Mapping, Optional, Tuple

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers

from mmjax.errors import CheckpointError

ITEMS = ('state', 'data')
FILES = 'mmjax_files.json'  # Relative path -> size of every file of a step.
TMP_MARKER = '.orbax-checkpoint-tmp'  # Orbax's temporary directory suffix.
CORRUPT_PREFIX = 'corrupt-'  # Steps set aside by a fallback restore.
_FIX = ('Delete that step directory to resume from the previous step, or set '
        'config.checkpoint.fallback_on_corrupt=True to do so automatically.')


def _tmp_dirs(directory: str):
  """Orbax temporary directories directly under `directory`."""
  return [os.path.join(directory, n) for n in sorted(os.listdir(directory))
          if TMP_MARKER in n]


def _files(step_dir: str) -> Mapping[str, int]:
  """Relative path -> size of every file under `step_dir`."""
  sizes = {}
  for root, _, names in os.walk(step_dir):
    for name in names:
      path = os.path.join(root, name)
      sizes[os.path.relpath(path, step_dir)] = os.path.getsize(path)
  sizes.pop(FILES, None)
  return sizes


class Checkpointer:
  """Saves and restores the train state and the data iterator state."""

  def __init__(self, directory: str, *, keep_last: int, keep_best: int,
               best_metric: str, best_mode: str, async_save: bool = True,
               fallback_on_corrupt: bool = False, read_only: bool = False):
    """Opens (or creates) the checkpoints in `directory`.

    Temporary directories left by a process killed during a save are removed
    first. With `fallback_on_corrupt`, `restore_latest` sets a corrupt step
    aside and uses the previous good one instead of raising. `read_only`
    (evaluation) changes nothing on disk, not even another run's unfinished
    save.
    """
    directory = os.path.abspath(directory)
    self._fallback = fallback_on_corrupt and not read_only
    self._pending: Optional[int] = None  # Step whose save may be running.
    if not read_only:
      if jax.process_index() == 0 and os.path.isdir(directory):
        for path in _tmp_dirs(directory):
          logging.warning('Removing %s, left by a save that did not finish.',
                          path)
          shutil.rmtree(path)
      multihost_utils.sync_global_devices('mmjax: checkpoint directory clean')
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
        cleanup_tmp_directories=not read_only, read_only=read_only)
    self._manager = ocp.CheckpointManager(
        directory, options=options, item_names=ITEMS)

  @property
  def directory(self) -> str:
    return str(self._manager.directory)

  def _step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def all_steps(self):
    return self._manager.all_steps()

  def save(self, step: int, state: Any, data: grain.DatasetIterator,
           metrics: Optional[Mapping[str, float]] = None) -> None:
    """Starts an (asynchronous) save of `state` and `data`'s position at `step`.

    The previous save is finished first (Orbax would wait for it anyway), so
    its failure is raised here, in the caller's thread.
    `metrics` (eval metrics of this step, host floats) rank checkpoints for
    the keep-best policy.
    """
    self.wait()
    if not os.path.isdir(self.directory):
      # Orbax would wait forever on the temporary directory it cannot make.
      raise CheckpointError(step, self.directory, (
          'the checkpoint directory is gone or is not a directory (storage '
          'unmounted or removed?); nothing can be saved.'))
    try:
      self._manager.save(
          step,
          args=ocp.args.Composite(
              state=ocp.args.StandardSave(state),
              data=grain.checkpoint.CheckpointSave(data)),
          metrics=dict(metrics) if metrics else None,
          force=True)
    except Exception as e:
      raise CheckpointError(step, self._step_dir(step),
                            f'saving failed: {e}') from e
    self._pending = step

  def check(self) -> None:
    """Raises CheckpointError if the pending save has already failed; does
    not wait for one still running (cheap: call it at every log step)."""
    if self._pending is None:
      return
    try:
      self._manager.check_for_errors()
    except Exception as e:
      step, self._pending = self._pending, None
      raise CheckpointError(step, self._step_dir(step),
                            f'saving failed: {e}') from e

  def wait(self) -> None:
    """Blocks until the pending asynchronous save has finished.

    Raises:
      CheckpointError naming the step if that save failed (disk full,
      permissions, ...): a failed save is never silently dropped.
    """
    if self._pending is None:
      return
    step, self._pending = self._pending, None
    try:
      self._manager.wait_until_finished()
      self._manager.check_for_errors()
    except Exception as e:
      raise CheckpointError(step, self._step_dir(step),
                            f'saving failed: {e}') from e
    if jax.process_index() == 0:
      # Written into the committed step: a step without it (killed between
      # the two) is complete, only unverified.
      step_dir = self._step_dir(step)
      with open(os.path.join(step_dir, FILES), 'w') as f:
        json.dump(_files(step_dir), f)

  def verify(self, step: int) -> None:
    """Checks that every file of `step` is as its save left it.

    Raises:
      CheckpointError naming the step and the first missing, truncated or
      unfinished file or directory.
    """
    step_dir = self._step_dir(step)
    for root, dirs, _ in os.walk(step_dir):
      for name in dirs:
        if TMP_MARKER in name:
          raise CheckpointError(step, os.path.join(root, name), (
              'an unfinished temporary directory: the save of this step '
              'did not complete. ' + _FIX))
    try:
      with open(os.path.join(step_dir, FILES)) as f:
        expected = json.load(f)
    except FileNotFoundError:
      logging.warning('Checkpoint step %d has no %s (the run stopped as its '
                      'save finished); restoring it unverified.', step, FILES)
      return
    except ValueError as e:
      raise CheckpointError(step, os.path.join(step_dir, FILES),
                            f'unreadable ({e}). ' + _FIX) from e
    for rel, size in sorted(expected.items()):
      path = os.path.join(step_dir, rel)
      if not os.path.exists(path):
        raise CheckpointError(step, path, (
            f'missing (the save wrote {size} bytes there). ' + _FIX))
      actual = os.path.getsize(path)
      if actual != size:
        raise CheckpointError(step, path, (
            f'has {actual} bytes where the save wrote {size}: truncated or '
            'overwritten. ' + _FIX))

  def restore(self, step: int, target: Any,
              data: Optional[grain.DatasetIterator] = None) -> Any:
    """Restores step `step`: returns the state, and moves `data` to its position.

    Args:
      target: a pytree of `jax.ShapeDtypeStruct`s with shardings (or arrays)
        describing the state to restore into, e.g. on another mesh.
      data: this process's input iterator, built as when it was saved; None
        restores the state alone (evaluation).
    Raises:
      CheckpointError naming the step and file when the step is corrupt.
    """
    self.verify(step)
    items = dict(state=ocp.args.StandardRestore(target))
    if data is not None:
      items['data'] = grain.checkpoint.CheckpointRestore(data)
    try:
      restored = self._manager.restore(step,
                                       args=ocp.args.Composite(**items))
    except Exception as e:
      # TensorStore's messages run to pages; the first line says what failed.
      first = str(e).strip().splitlines()[0][:500] if str(e).strip() else ''
      raise CheckpointError(step, self._step_dir(step), (
          f'could not be restored: {type(e).__name__}: {first}. ' + _FIX
      )) from e
    return restored.state

  def restore_latest(self, target: Any, data: Optional[grain.DatasetIterator]
                     = None) -> Tuple[Optional[int], Any]:
    """Restores the newest step (see `restore`); (None, None) if there is none.

    With `fallback_on_corrupt`, a corrupt step is renamed to
    `corrupt-<step>-<time>` (kept for inspection, out of the way of new
    saves) with a warning, and the previous step is tried.
    """
    for step in sorted(self.all_steps(), reverse=True):
      try:
        return step, self.restore(step, target, data)
      except CheckpointError as e:
        if not self._fallback:
          raise
        aside = os.path.join(self.directory,
                             f'{CORRUPT_PREFIX}{step}-{int(time.time())}')
        logging.warning('%s\nFalling back to the previous step; the corrupt '
                        'step is moved to %s.', e, aside)
        if jax.process_index() == 0:
          os.rename(self._step_dir(step), aside)
        multihost_utils.sync_global_devices(f'mmjax: set aside {step}')
        self._manager.reload()
    return None, None

  def close(self) -> None:
    self._manager.close()
