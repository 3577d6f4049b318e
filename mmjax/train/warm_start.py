"""Warm start: a new run begins from another run's parameters.

`checkpoint.warm_start_from=<workdir>` loads, from the newest checkpoint of
the run in that workdir, every parameter and batch statistic whose path,
shape and dtype match this run's; the others keep their fresh initialisation
and are listed in the log. The optimizer state and the step start afresh:
this is a new run that borrows weights, not a resume.
"""
from typing import Any, List, Tuple

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


def warm_start(state: TrainState, workdir: str) -> TrainState:
  """`state` (fresh, in checkpoint form) with the parameters and batch
  statistics of the run in `workdir` wherever they match (see module doc)."""
  step, saved = read_latest_state(workdir)
  updates, kept = {}, []
  for name in WARM_STARTED:
    updates[name], missing = merge_matching(getattr(state, name),
                                            saved.get(name, {}))
    kept += [f'{name}/{path}' for path in missing]
  loaded = sum(len(jax.tree.leaves(getattr(state, n))) for n in WARM_STARTED)
  logging.info('Warm start from step %d of %s: %d of %d arrays loaded.%s',
               step, workdir, loaded - len(kept), loaded,
               ''.join(f'\n  not loaded (initialised afresh): {k}'
                       for k in kept))
  return state.replace(**updates)
