"""Warm start: a new run begins from another run's parameters.

`checkpoint.warm_start_from=<workdir>` loads, from the newest checkpoint of
the run in that workdir, every parameter and batch statistic whose path,
shape and dtype match this run's; the others keep their fresh initialisation
and are listed in the log. Several workdirs, comma-separated, compose one
model from towers trained apart (e.g. an image-only and an audio-only
classifier under a fusion model): each array comes from the first listed run
that has it. The optimizer state and the step start afresh: this is a new
run that borrows weights, not a resume.
"""
from typing import Any, List, Sequence, Tuple

import jax
import numpy as np
from absl import logging

from mmjax.train.checkpoint import read_latest_state
from mmjax.train.steps import TrainState

WARM_STARTED = ('params', 'batch_stats')


def _by_path(tree) -> dict:
  return {jax.tree_util.keystr(path, simple=True, separator='/'): x
          for path, x in jax.tree_util.tree_leaves_with_path(tree)}


def merge_matching(fresh: Any, source: Any) -> Tuple[Any, List[str]]:
  """`fresh` with every leaf that `source` has at the same path, shape and
  dtype replaced by `source`'s, placed with the fresh leaf's sharding.

  Returns:
    (the merged tree, the paths of `fresh` left as they were).
  """
  source = _by_path(source)
  kept = []

  def take(path, x):
    name = jax.tree_util.keystr(path, simple=True, separator='/')
    y = source.get(name)
    if y is None or y.shape != x.shape or y.dtype != x.dtype:
      kept.append(name)
      return x
    host = np.asarray(y)
    # Works for a sharding over several processes too: each process fills
    # its own shards from the same host copy.
    return jax.make_array_from_callback(x.shape, x.sharding,
                                        lambda index: host[index])

  return jax.tree_util.tree_map_with_path(take, fresh), kept


def warm_start_sources(setting: str) -> List[str]:
  """The workdirs of `checkpoint.warm_start_from` ('a' or 'a,b,...')."""
  return [w.strip() for w in setting.split(',') if w.strip()]


def warm_start(state: TrainState, workdirs: Sequence[str]) -> TrainState:
  """`state` (fresh, in checkpoint form) with the parameters and batch
  statistics of the runs in `workdirs` wherever they match, each array from
  the first run that has it (see module doc)."""
  total = sum(len(jax.tree.leaves(getattr(state, n))) for n in WARM_STARTED)
  # Path -> the run it was loaded from; a later run fills only what is left.
  fresh = {f'{name}/{path}' for name in WARM_STARTED
           for path in _by_path(getattr(state, name))}
  for workdir in workdirs:
    step, saved = read_latest_state(workdir)
    updates, kept = {}, set()
    for name in WARM_STARTED:
      # A flat {path: array} has the same paths as the tree it came from.
      source = {p: x for p, x in _by_path(saved.get(name, {})).items()
                if f'{name}/{p}' in fresh}
      updates[name], missing = merge_matching(getattr(state, name), source)
      kept |= {f'{name}/{path}' for path in missing}
    state = state.replace(**updates)
    logging.info('Warm start from step %d of %s: %d arrays loaded.', step,
                 workdir, len(fresh - kept))
    fresh &= kept
  logging.info('Warm start: %d of %d arrays loaded.%s', total - len(fresh),
               total, ''.join(f'\n  not loaded (initialised afresh): {k}'
                              for k in sorted(fresh)))
  return state
