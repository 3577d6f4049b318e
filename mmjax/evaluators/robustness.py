"""The MultiBench robustness protocol; the evaluator 'robustness'.

For one experiment and state (in training, or restored by
`mmjax.experiment.restore`):
- missing modalities: the task metric with every non-empty subset of the
  run's modalities given to the model (the others absent from every batch);
- noisy modalities: the metric with one modality corrupted by one noise at
  each level (`mmjax.robustness.corruptions`, inserted into the eval
  preprocessing by `mmjax.robustness.pipeline`), every other modality clean;
- relative robustness of each curve and, against a late-fusion baseline run,
  effective robustness (`mmjax.robustness.metrics`).

Every evaluation goes through the experiment's one runner, so its compiled
eval step is reused (missing modalities change the batch's keys, which
compiles the step once more per subset). The metric is the task's
`best_metric`. Results (`run`) are a JSON-ready dict:

  {"metric": "accuracy", "step": 3000, "seed": 0,
   "missing": {"image+text": 0.73, "image": 0.5, "text": 0.5},
   "noise": {"image": {"gaussian": [[0.0, 0.73], [0.1, 0.70], ...], ...}},
   "relative_robustness": {"image": {"gaussian": 0.61, ...}, ...},
   "effective_robustness": {"image": {"gaussian": -0.12, ...}, ...},
   "baseline": {"workdir": ..., "step": ..., "fusion": "late"}}

the last two only with a baseline (`add_effective_robustness`).
"""
import copy
import itertools
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from absl import logging

from mmjax.evaluators.task import evaluate
from mmjax.fileio import read_json_or_none
from mmjax.registry import EVALUATORS
from mmjax.robustness import metrics as metrics_lib
from mmjax.robustness.corruptions import NOISES
from mmjax.robustness.pipeline import corrupted
from mmjax.robustness.report import RESULTS_FILE

DEFAULT_LEVELS = tuple(i / 10 for i in range(10))  # 0, 0.1, ..., 0.9.

Curves = Dict[str, Dict[str, List[List[float]]]]


def subsets(modalities: Sequence[str]) -> List[Tuple[str, ...]]:
  """Every non-empty subset of `modalities`, largest first, in their order."""
  return [s for r in range(len(modalities), 0, -1)
          for s in itertools.combinations(modalities, r)]


def parse_noises(pairs: Optional[Sequence[str]]
                 ) -> Optional[Dict[str, List[str]]]:
  """['image:blur', 'text:typos'] -> {'image': ['blur'], 'text': ['typos']}
  (None for none: every noise)."""
  if not pairs:
    return None
  noises = {}
  for pair in pairs:
    modality, sep, noise = pair.partition(':')
    if not sep:
      raise ValueError(f'noises: expected modality:noise, got {pair!r}.')
    noises.setdefault(modality, []).append(noise)
  return noises


def check_levels(levels: Sequence[float]) -> Tuple[float, ...]:
  """`levels` as floats; at least two, increasing, in [0, 1]."""
  levels = tuple(float(x) for x in levels)
  if (len(levels) < 2 or any(b <= a for a, b in zip(levels, levels[1:]))
      or levels[0] < 0 or levels[-1] > 1):
    raise ValueError(f'noise levels must be at least two increasing values '
                     f'in [0, 1], got {list(levels)}.')
  return levels


def select_noises(modalities: Sequence[str],
                  noises: Optional[Mapping[str, Sequence[str]]] = None
                  ) -> Dict[str, Tuple[str, ...]]:
  """Modality -> the noise names to evaluate: `noises` (checked) or, by
  default, every noise of each of `modalities`."""
  if noises is None:
    return {m: tuple(NOISES[m]) for m in modalities if m in NOISES}
  for m, names in noises.items():
    if m not in modalities:
      raise ValueError(f'cannot corrupt {m!r}: the run\'s modalities are '
                       f'{", ".join(modalities)}.')
    unknown = set(names) - set(NOISES.get(m, ()))
    if unknown or not names:
      raise ValueError(f'unknown noises {sorted(unknown) or "(none)"} for '
                       f'{m!r}; valid: {", ".join(NOISES.get(m, ()))}.')
  return {m: tuple(n) for m, n in noises.items()}


def _value(experiment, metrics: Mapping[str, float]) -> float:
  return float(metrics[experiment.task.best_metric])


def evaluate_missing(experiment, state) -> Dict[str, float]:
  """'a+b' -> the metric with only modalities a and b, for every subset."""
  out = {}
  for subset in subsets(tuple(experiment.config.model.modalities)):
    out['+'.join(subset)] = _value(
        experiment, evaluate(experiment, state, subset))
    logging.info('robustness: %s only: %s=%.4f', '+'.join(subset),
                 experiment.task.best_metric, out['+'.join(subset)])
  return out


def noisy_batches(experiment, modality: str, noise: str,
                  level: float, seed: int = 0):
  """The experiment's eval batches with `modality` corrupted by `noise` at
  `level` (`pipeline.corrupted` of its `pp_eval`, read through a shallow
  copy of the experiment: same spec, batch size and hosts)."""
  view = copy.copy(experiment)
  view.pp_eval = corrupted(experiment.pp_eval, modality, noise, level, seed)
  return view.eval_batches()


def evaluate_noise(experiment, state, levels: Sequence[float],
                   noises: Mapping[str, Sequence[str]], seed: int = 0,
                   clean: Optional[float] = None) -> Curves:
  """modality -> noise -> [[level, metric], ...] over `levels`.

  Level 0 is the identity (tested), so `clean`, the metric with no noise,
  stands for it when given instead of evaluating again.
  """
  curves: Curves = {}
  for modality, names in noises.items():
    for noise in names:
      curve = []
      for level in levels:
        if level == 0 and clean is not None:
          value = clean
        else:
          value = _value(experiment, experiment.runner.evaluate(
              state, noisy_batches(experiment, modality, noise, level, seed)))
        curve.append([level, value])
        logging.info('robustness: %s %s %.2f: %s=%.4f', modality, noise,
                     level, experiment.task.best_metric, value)
      curves.setdefault(modality, {})[noise] = curve
  return curves


def relative(curves: Curves) -> Dict[str, Dict[str, float]]:
  """modality -> noise -> relative robustness of each curve."""
  return {m: {n: metrics_lib.relative_robustness(*zip(*c))
              for n, c in by_noise.items()}
          for m, by_noise in curves.items()}


def run(experiment, state, step: int,
        levels: Sequence[float] = DEFAULT_LEVELS,
        noises: Optional[Mapping[str, Sequence[str]]] = None,
        seed: int = 0) -> Dict:
  """The protocol's results (see the module doc) for `state` of `step`.

  Args:
    levels: noise levels, increasing in [0, 1].
    noises: modality -> noise names (default: all, `corruptions.NOISES`).
    seed: seeds the corruptions (with each example's content).
  """
  levels = check_levels(levels)
  modalities = tuple(experiment.config.model.modalities)
  noises = select_noises(modalities, noises)
  missing = evaluate_missing(experiment, state)
  curves = evaluate_noise(experiment, state, levels, noises, seed,
                          clean=missing['+'.join(modalities)])
  return {'metric': experiment.task.best_metric, 'step': step, 'seed': seed,
          'missing': missing, 'noise': curves,
          'relative_robustness': relative(curves)}


def load(workdir: str) -> Optional[Dict]:
  """The results saved in `workdir`, or None (none, or torn by a crash:
  they are computed again)."""
  return read_json_or_none(os.path.join(workdir, RESULTS_FILE))


def _covers(saved: Optional[Mapping], results: Mapping) -> bool:
  """Whether `saved` holds every curve of `results`, same metric, seed and
  levels."""
  if not saved or (saved.get('metric'), saved.get('seed')) != (
      results['metric'], results['seed']):
    return False
  for m, by_noise in results['noise'].items():
    for n, curve in by_noise.items():
      theirs = saved.get('noise', {}).get(m, {}).get(n)
      if not theirs or [l for l, _ in theirs] != [l for l, _ in curve]:
        return False
  return True


def _levels(results: Mapping) -> List[float]:
  """The levels of the curves of `results` (every curve shares them)."""
  curve = next(iter(next(iter(results['noise'].values())).values()))
  return [level for level, _ in curve]


def baseline_results(workdir: str, results: Mapping, config, restore: Callable,
                     step: Optional[int] = None) -> Dict:
  """The baseline run's curves for every curve of `results`.

  Reuses the `robustness.json` in `workdir` when it holds them (same metric,
  seed and levels; `step` then unchecked unless given); otherwise restores
  the run (`step`, default the latest) and evaluates them, writing nothing.
  `config` is the baseline run's, `restore` `mmjax.experiment.restore`.
  Returns {'noise': curves, 'step': N, 'fusion': name, 'workdir': path}.
  """
  fusion = config.model.fusion.name
  if fusion != 'late':
    logging.warning('robustness: the baseline %s uses %r fusion; MultiBench '
                    'measures effective robustness against late fusion.',
                    workdir, fusion)
  saved = load(workdir)
  if _covers(saved, results) and step in (None, saved['step']):
    logging.info('robustness: baseline curves from %s', workdir)
    curves, step = saved['noise'], saved['step']
  else:
    experiment, state, step = restore(config, workdir, step)
    if experiment.task.best_metric != results['metric']:
      raise ValueError(f'the baseline {workdir} reports '
                       f'{experiment.task.best_metric}, not '
                       f'{results["metric"]}; choose a run of the same task.')
    wanted = {m: tuple(by_noise) for m, by_noise in results['noise'].items()}
    curves = evaluate_noise(
        experiment, state, check_levels(_levels(results)),
        select_noises(tuple(config.model.modalities), wanted),
        results['seed'],
        clean=_value(experiment, evaluate(experiment, state)))
  return {'noise': curves, 'step': step, 'fusion': fusion,
          'workdir': os.path.abspath(workdir)}


def add_effective_robustness(results: Mapping, baseline: Mapping) -> Dict:
  """`results` with 'effective_robustness' (modality -> noise -> value)
  against `baseline` (from `baseline_results`) and 'baseline' (its workdir,
  step and fusion)."""
  effective = {}
  for m, by_noise in results['noise'].items():
    for n, curve in by_noise.items():
      theirs = baseline['noise'][m][n]
      effective.setdefault(m, {})[n] = metrics_lib.effective_robustness(
          *zip(*curve), *zip(*theirs))
  return {**results, 'effective_robustness': effective,
          'baseline': {k: baseline[k] for k in ('workdir', 'step', 'fusion')}}


@EVALUATORS.register('robustness')
class Robustness:
  """`run`'s results; `cfg.levels` (default `DEFAULT_LEVELS`), `cfg.noises`
  (modality -> noise names, default all) and `cfg.seed` (default 0)."""

  def __init__(self, cfg, experiment, workdir: Optional[str] = None):
    del workdir  # Results go to the metric records.
    self.experiment = experiment
    self.levels = tuple(cfg.get('levels', DEFAULT_LEVELS))
    self.noises = cfg.get('noises')
    self.seed = cfg.get('seed', 0)

  def run(self, state, step: int) -> Dict[str, Any]:
    return run(self.experiment, state, step, self.levels, self.noises,
               self.seed)
