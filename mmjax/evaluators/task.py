"""The task's own evaluation, with any subset of the modalities.

Evaluates a state in training (`config.evals` entries of type 'task') or a
saved checkpoint (`experiments/evaluate.py`, via `mmjax.experiment.restore`).
"""
from typing import Any, Dict, Iterable, Iterator, Mapping, Optional, Sequence

import ml_collections
import numpy as np

from mmjax.registry import EVALUATORS

def keep_modalities(batches: Iterable[Mapping[str, np.ndarray]],
                    missing: Sequence[str]
                    ) -> Iterator[Dict[str, np.ndarray]]:
  """`batches` without the keys of the `missing` modalities (and their masks),
  which the model then treats as absent in every example."""
  drop = {k for m in missing for k in (m, f'{m}_mask', f'{m}_present')}
  for batch in batches:
    yield {k: v for k, v in batch.items() if k not in drop}


def evaluate(experiment, state,
             modalities: Optional[Sequence[str]] = None) -> Dict[str, float]:
  """The task's metrics over the whole eval split of `experiment` (a
  `mmjax.experiment.Experiment`), with only `modalities` (default: all the
  model's) given to the model."""
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


@EVALUATORS.register('task')
class TaskEvaluator:
  """The task's metrics; `cfg.modalities` (optional, e.g. ('image',)) the
  modalities given to the model."""

  def __init__(self, cfg: ml_collections.ConfigDict, experiment,
               workdir: Optional[str] = None):
    del workdir  # Results are metrics only.
    self.experiment = experiment
    self.modalities = cfg.get('modalities')

  def run(self, state, step: int) -> Dict[str, Any]:
    del step
    return evaluate(self.experiment, state, self.modalities)
