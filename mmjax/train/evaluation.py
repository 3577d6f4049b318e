"""Evaluation of saved checkpoints: any step, any subset of the modalities.

Nothing in the workdir changes: the checkpoints are opened read-only (a
training run may be writing to them at the same time) and only the train
state is restored, not the input iterator.
"""
import json
import os
from typing import Dict, Iterable, Iterator, Mapping, Optional, Sequence, Tuple

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from mmjax import data
from mmjax.experiment import Experiment

CONFIG_FILE = 'config.json'  # Written by train_and_evaluate into the workdir.


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run in `workdir` was trained with."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f'{path} does not exist: {workdir} holds no mmjax training run. '
        'Pass the run\'s workdir, or its config with --config.')
  with open(path) as f:
    try:
      return ml_collections.ConfigDict(json.load(f))
    except ValueError as e:
      raise ValueError(f'{path} is not valid JSON ({e}); pass the run\'s '
                       'config with --config instead.') from e


def restore(config: ml_collections.ConfigDict, workdir: str,
            step: Optional[int] = None) -> Tuple[Experiment, object, int]:
  """Builds the run's experiment and restores the state of `step` (default:
  the latest) onto this config's devices and mesh.

  Returns:
    (experiment, state, step).
  Raises:
    CheckpointError naming the step and file when the step is corrupt;
    ValueError when the step does not exist, listing those that do.
  """
  if jax.process_index() == 0:
    data.prepare(config)
  multihost_utils.sync_global_devices('mmjax: dataset prepared')
  experiment = Experiment(config)
  checkpointer = experiment.make_checkpointer(workdir, read_only=True)
  steps = list(checkpointer.all_steps())
  if step is None and steps:
    step = steps[-1]
  if step not in steps:
    raise ValueError(f'{checkpointer.directory} has no checkpoint of step '
                     f'{step}; saved steps: {steps or "none"}.')
  state = experiment.runner.from_checkpoint(checkpointer.restore(
      step, experiment.runner.restore_target()))
  checkpointer.close()
  return experiment, state, step


def keep_modalities(batches: Iterable[Mapping[str, np.ndarray]],
                    missing: Sequence[str]
                    ) -> Iterator[Dict[str, np.ndarray]]:
  """`batches` without the keys of the `missing` modalities (and their masks),
  which the model then treats as absent in every example."""
  drop = {k for m in missing for k in (m, f'{m}_mask', f'{m}_present')}
  for batch in batches:
    yield {k: v for k, v in batch.items() if k not in drop}


def evaluate(experiment: Experiment, state,
             modalities: Optional[Sequence[str]] = None) -> Dict[str, float]:
  """The task's metrics over the whole eval split, with only `modalities`
  (default: all the model's) given to the model."""
  configured = tuple(experiment.config.model.modalities)
  modalities = configured if modalities is None else tuple(modalities)
  unknown = set(modalities) - set(configured)
  if unknown or not modalities:
    raise ValueError(
        f'cannot evaluate with modalities {list(modalities)}: choose a '
        f'non-empty subset of the trained ones, {", ".join(configured)}.')
  missing = [m for m in configured if m not in modalities]
  return experiment.runner.evaluate(
      state, keep_modalities(experiment.eval_batches(), missing))
