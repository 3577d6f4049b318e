"""MultiBench's robustness metrics of a metric-vs-noise-level curve.

Both follow pliang279/MultiBench `eval_scripts/robustness.py` (Liang et al.,
"MultiBench", NeurIPS 2021 Datasets and Benchmarks, section on robustness),
for a curve of the task metric at increasing noise levels, level 0 first.
MultiBench then min-max normalises each metric across the methods it
compares on a task; these are the values before that step, so that a
benchmark can normalise over whichever runs it compares.
"""
from typing import Sequence

import numpy as np


def _curve(levels: Sequence[float], values: Sequence[float]):
  levels = np.asarray(levels, np.float64)
  values = np.asarray(values, np.float64)
  if levels.ndim != 1 or levels.shape != values.shape or len(levels) < 2:
    raise ValueError(f'a curve needs at least 2 levels and one value per '
                     f'level; got levels {levels.tolist()} and values '
                     f'{values.tolist()}.')
  if np.any(np.diff(levels) <= 0):
    raise ValueError(f'levels must increase, got {levels.tolist()}.')
  return levels, values


def relative_robustness(levels: Sequence[float],
                        values: Sequence[float]) -> float:
  """Area under the metric-vs-level curve (trapezoids), divided by the level
  range: the curve's mean height, in the metric's units (a method that keeps
  its clean accuracy a scores a).

  MultiBench's `relative_robustness_helper` sums the trapezoids of its 10
  levels 0, 0.1, ..., 0.9 with width 0.1, i.e. this value x 0.9 on those
  levels.
  """
  levels, values = _curve(levels, values)
  area = np.sum((values[1:] + values[:-1]) / 2 * np.diff(levels))
  return float(area / (levels[-1] - levels[0]))


def effective_robustness(levels: Sequence[float], values: Sequence[float],
                         baseline_levels: Sequence[float],
                         baseline_values: Sequence[float]) -> float:
  """How much less the metric falls with the noise than a late-fusion
  baseline's, MultiBench's `effective_robustness_helper`: the baseline curve
  shifted to this curve's first (clean) value, beta = lf + (f[0] - lf[0]),
  and the sum over the levels of f - beta, i.e. sum_i (f_i - f_0) -
  (lf_i - lf_0). Positive: more robust than the baseline. Both curves must
  be on the same levels.
  """
  levels, values = _curve(levels, values)
  baseline_levels, baseline_values = _curve(baseline_levels, baseline_values)
  if not np.array_equal(levels, baseline_levels):
    raise ValueError(f'the baseline curve is on levels '
                     f'{baseline_levels.tolist()}, not {levels.tolist()}; '
                     'evaluate both runs on the same levels.')
  shifted = baseline_values + (values[0] - baseline_values[0])
  return float(np.sum(values - shifted))
