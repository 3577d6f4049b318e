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
directories it leaves behind are removed when the next run starts. As soon
as a save has committed (Orbax's post-finalization callback, in its
background thread), the size of every file it wrote is recorded in
`<step>/mmjax_files.json`, so a restore can tell a truncated or deleted file
(or an unfinished item directory) from a good checkpoint in milliseconds and
name it, instead of failing deep inside TensorStore or restoring garbage.

Restore errors are classified: `CheckpointCorrupt` (storage damage: the only
kind `fallback_on_corrupt` sets aside) and `CheckpointMismatch` (an intact
step whose state does not fit the current model or optimizer: a config
change, which must never cost the user a checkpoint).
"""
import glob
import json
import os
import time
from typing import Any, Mapping, Optional, Tuple

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from absl import logging
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers

from mmjax.errors import CheckpointCorrupt, CheckpointError, CheckpointMismatch
from mmjax.fileio import atomic_write_json

ITEMS = ('state', 'data')
FILES = 'mmjax_files.json'  # Relative path -> size of every file of a step.
# Files at a step's top level that Orbax (re)writes as it commits the step,
# after the size record is taken: not in the record.
COMMIT_FILES = ('_CHECKPOINT_METADATA', 'commit_success.txt')
TMP_MARKER = '.orbax-checkpoint-tmp'  # Orbax's temporary directory suffix.
CORRUPT_PREFIX = 'corrupt-'  # Steps set aside by a fallback restore.
_FIX = ('Delete that step directory to resume from the previous step, or set '
        'config.checkpoint.fallback_on_corrupt=True to do so automatically.')
_MISMATCH_FIX = (
    'The step was saved by a run of another model, optimizer or task '
    'config, and is left as it is. Train into a new --workdir, or start a new '
    "one from this run's parameters with "
    '--config.checkpoint.warm_start_from=<this workdir>.')
# Differences named in a CheckpointMismatch message.
_SHOWN_DIFFERENCES = 5


def _tmp_dirs(directory: str):
  """Orbax temporary directories directly under `directory`."""
  return [os.path.join(directory, n) for n in sorted(os.listdir(directory))
          if TMP_MARKER in n]


def _files(step_dir: str) -> Mapping[str, int]:
  """Relative path -> size of every file under `step_dir` that the record
  covers (the items' files)."""
  sizes = {}
  for root, _, names in os.walk(step_dir):
    for name in names:
      path = os.path.join(root, name)
      sizes[os.path.relpath(path, step_dir)] = os.path.getsize(path)
  for name in (FILES, *COMMIT_FILES):
    sizes.pop(name, None)
  return sizes


def _saved_state_metadata(step_dir: str) -> Any:
  """The tree of ArrayMetadata (shape, dtype) of a step's saved state."""
  return ocp.StandardCheckpointHandler().metadata(
      epath.Path(step_dir) / 'state').tree


def _first_line(error: Exception) -> str:
  """The first line of an error's message: TensorStore's run to pages."""
  text = str(error).strip()
  return text.splitlines()[0][:500] if text else ''


def _leaf_specs(tree) -> Mapping[str, Tuple[Tuple[int, ...], str]]:
  """'params/dense/kernel' -> (shape, dtype) of every array leaf of `tree`
  (arrays, ShapeDtypeStructs or Orbax ArrayMetadata alike)."""
  leaves = jax.tree_util.tree_leaves_with_path(
      tree, is_leaf=lambda x: hasattr(x, 'shape'))
  return {jax.tree_util.keystr(path, simple=True, separator='/'):
          (tuple(x.shape), str(np.dtype(x.dtype))) for path, x in leaves}


def _differences(stored, current) -> list:
  """Lines naming how the leaf specs `stored` and `current` differ."""
  order = lambda k: (k.startswith('opt_state'), k)  # noqa: E731  Model first.
  lines = [f'{k}: saved {stored[k][1]}{list(stored[k][0])}, this run '
           f'{current[k][1]}{list(current[k][0])}'
           for k in sorted(stored.keys() & current.keys(), key=order)
           if stored[k] != current[k]]
  lines += [f'{k}: saved, not in this run'
            for k in sorted(stored.keys() - current.keys(), key=order)]
  lines += [f'{k}: in this run, not saved'
            for k in sorted(current.keys() - stored.keys(), key=order)]
  return lines


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
    self._record_files = jax.process_index() == 0 and not read_only
    self._async = async_save
    self._committing: Optional[int] = None  # Step of the latest save.
    if not read_only and jax.process_index() == 0 and os.path.isdir(directory):
      for path in _tmp_dirs(directory):  # Orbax removes them (below).
        logging.warning('Removing %s, left by a save that did not finish.',
                        path)
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
        # Verifiable from the moment it commits, not from the next save.
        async_options=ocp.AsyncOptions(
            post_finalization_callback=self._record_pending)
        if async_save else None,
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
    self._committing = step
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
    if not self._async:  # Committed already.
      self._record_pending()

  def _record_pending(self) -> None:
    """Writes the size record of the step being saved (process 0).

    Runs in Orbax's background thread once every item is written and before
    the step's temporary directory is renamed into place, so the record
    commits with the step (a synchronous save: in the caller's thread, just
    after the commit). A failure is logged, not raised: the step is good,
    only unverified.
    """
    step = self._committing
    if not self._record_files or step is None:
      return
    uncommitted = glob.glob(os.path.join(self.directory,
                                         f'{step}{TMP_MARKER}*'))
    # Storage without renames (object stores) writes the final directory.
    step_dir = uncommitted[0] if uncommitted else self._step_dir(step)
    try:
      atomic_write_json(os.path.join(step_dir, FILES), _files(step_dir),
                        indent=None)
    except OSError as e:
      logging.error('Could not write the size record of checkpoint step %d '
                    '(%s); the step will be restored unverified.', step, e)

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

  def verify(self, step: int) -> None:
    """Checks that every file of `step` is as its save left it.

    Raises:
      CheckpointCorrupt naming the step and the first missing, truncated or
      unfinished file or directory.
    """
    step_dir = self._step_dir(step)
    for root, dirs, _ in os.walk(step_dir):
      for name in dirs:
        if TMP_MARKER in name:
          raise CheckpointCorrupt(step, os.path.join(root, name), (
              'an unfinished temporary directory: the save of this step '
              'did not complete. ' + _FIX))
    try:
      with open(os.path.join(step_dir, FILES)) as f:
        expected = json.load(f)
    except FileNotFoundError:
      logging.warning('Checkpoint step %d has no %s (the run stopped as its '
                      'save committed); restoring it unverified.', step,
                      FILES)
      return
    except ValueError as e:
      raise CheckpointCorrupt(step, os.path.join(step_dir, FILES),
                              f'unreadable ({e}). ' + _FIX) from e
    for rel, size in sorted(expected.items()):
      path = os.path.join(step_dir, rel)
      if not os.path.exists(path):
        raise CheckpointCorrupt(step, path, (
            f'missing (the save wrote {size} bytes there). ' + _FIX))
      actual = os.path.getsize(path)
      if actual != size:
        raise CheckpointCorrupt(step, path, (
            f'has {actual} bytes where the save wrote {size}: truncated or '
            'overwritten. ' + _FIX))

  def check_fits(self, step: int, target: Any) -> None:
    """Checks that the state saved at `step` has `target`'s tree structure,
    shapes and dtypes (read from the step's metadata; no array is read).

    Raises:
      CheckpointMismatch listing the first differing leaves.
      CheckpointCorrupt if the metadata cannot be read.
    """
    try:
      stored = _saved_state_metadata(self._step_dir(step))
    except Exception as e:  # Orbax raises many types for unreadable files.
      raise CheckpointCorrupt(step, os.path.join(self._step_dir(step),
                                                 'state'), (
          f'its metadata could not be read ({type(e).__name__}: '
          f'{_first_line(e)}). ' + _FIX)) from e
    differences = _differences(_leaf_specs(stored), _leaf_specs(target))
    if differences:
      shown = differences[:_SHOWN_DIFFERENCES]
      more = len(differences) - len(shown)
      raise CheckpointMismatch(step, self._step_dir(step), (
          'the saved state does not fit this run (' + '; '.join(shown) +
          (f'; and {more} more' if more else '') + '). ' + _MISMATCH_FIX))

  def restore(self, step: int, target: Any,
              data: Optional[grain.DatasetIterator] = None) -> Any:
    """Restores step `step`: returns the state, and moves `data` to its position.

    Args:
      target: a pytree of `jax.ShapeDtypeStruct`s with shardings (or arrays)
        describing the state to restore into, e.g. on another mesh.
      data: this process's input iterator, built as when it was saved; None
        restores the state alone (evaluation).
    Raises:
      CheckpointCorrupt naming the step and file when the step is damaged;
      CheckpointMismatch when it is intact but does not fit `target`.
    """
    self.verify(step)
    self.check_fits(step, target)
    items = dict(state=ocp.args.StandardRestore(target))
    if data is not None:
      items['data'] = grain.checkpoint.CheckpointRestore(data)
    try:
      restored = self._manager.restore(step,
                                       args=ocp.args.Composite(**items))
    except Exception as e:  # The structure fits: the bytes are bad.
      raise CheckpointCorrupt(step, self._step_dir(step), (
          f'could not be restored: {type(e).__name__}: {_first_line(e)}. ' +
          _FIX)) from e
    return restored.state

  def restore_latest(self, target: Any, data: Optional[grain.DatasetIterator]
                     = None) -> Tuple[Optional[int], Any]:
    """Restores the newest step (see `restore`); (None, None) if there is none.

    With `fallback_on_corrupt`, corrupt steps are skipped until one
    restores; they are then renamed to `corrupt-<step>-<time>` (kept for
    inspection, out of the way of new saves) with a warning. A mismatching
    step is never skipped, and when every step is corrupt nothing is renamed
    and the error is raised: starting over from step 0 is for the user to
    decide.
    """
    corrupt = []
    for step in sorted(self.all_steps(), reverse=True):
      try:
        restored = self.restore(step, target, data)
      except CheckpointCorrupt as e:
        if not self._fallback:
          raise
        logging.warning('%s', e)
        corrupt.append(e)
        continue
      for error in corrupt:
        self._set_aside(error.step, f'resuming from step {step} instead')
      return step, restored
    if corrupt:
      raise CheckpointCorrupt(corrupt[0].step, self.directory, (
          f'every checkpoint step ({", ".join(str(e.step) for e in corrupt)})'
          ' is corrupt, so there is nothing to resume from; each is left as '
          'it is. Repair or restore the files, or train into a new '
          '--workdir.' + ''.join(f'\n  {e}' for e in corrupt)))
    return None, None

  def _set_aside(self, step: int, why: str) -> None:
    """Renames the corrupt `step` out of the way of new saves."""
    aside = os.path.join(self.directory,
                         f'{CORRUPT_PREFIX}{step}-{int(time.time())}')
    logging.warning('Falling back to the previous step (%s); the corrupt '
                    'step %d is moved to %s.', why, step, aside)
    if jax.process_index() == 0:
      os.rename(self._step_dir(step), aside)
    multihost_utils.sync_global_devices(f'mmjax: set aside {step}')
    self._manager.reload()

  def close(self) -> None:
    self._manager.close()


def read_latest_state(workdir: str) -> Tuple[int, Any]:
  """(step, state as saved) of the newest step of the run in `workdir`, on
  one local device, for a warm start; the step's files are verified first.

  Raises:
    CheckpointError if the run has no checkpoint or the step is corrupt.
  """
  directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
  steps = sorted(int(n) for n in (os.listdir(directory) if os.path.isdir(
      directory) else []) if n.isdigit())
  if not steps:
    raise CheckpointError(0, directory, (
        'no checkpoint to warm-start from; checkpoint.warm_start_from must '
        'name the workdir of a run that saved at least one step.'))
  step = steps[-1]
  checkpointer = Checkpointer(directory, keep_last=1, keep_best=0,
                              best_metric='', best_mode='max', read_only=True)
  try:
    checkpointer.verify(step)
    path = os.path.join(directory, str(step), 'state')
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
        _saved_state_metadata(os.path.join(directory, str(step))),
        is_leaf=lambda x: hasattr(x, 'shape'))
    return step, ocp.StandardCheckpointer().restore(path, target)
  finally:
    checkpointer.close()
