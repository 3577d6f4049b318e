"""The loop's guard against non-finite training steps.

The train step itself never applies a non-finite update (`steps.train_step`
keeps the state) and counts such steps in the state (`steps.NonFiniteCounts`).
The loop reads the counts only where it syncs anyway (log, eval and
checkpoint steps) and this guard stops the run once `limit` came in a row,
before a state of a failing run is saved.
"""
from typing import Any, Mapping

from absl import logging
import numpy as np


class NonFiniteError(RuntimeError):
  """Too many consecutive training steps had a non-finite loss or gradient."""


class NonFiniteGuard:
  """Checks the non-finite counts of a train state.

  Attributes:
    total: non-finite steps up to the last check.
  """

  def __init__(self, limit: int):
    """`limit`: consecutive non-finite steps that stop the run."""
    self.limit = limit
    self.total = 0

  def check(self, step: int, counts: Any, metrics: Mapping[str, Any]) -> None:
    """Reads the host copies of a state's `NonFiniteCounts` after `step`.

    Args:
      step: the last step trained.
      counts: `state.nonfinite`, fetched to the host.
      metrics: step `step`'s metrics on the host, to name what was not finite.
    Raises:
      NonFiniteError: if `limit` consecutive steps up to now were non-finite.
    """
    new = int(counts.total) - self.total
    self.total = int(counts.total)
    if not new:
      return
    streak = int(counts.streak)
    if streak:
      bad = ', '.join(k for k, v in sorted(metrics.items())
                      if not np.all(np.isfinite(v)))
      message = (f'step {step}: non-finite {bad}; the update was skipped '
                 f'({streak} in a row, {self.total} in all)')
    else:
      message = (f'steps up to {step}: {new} non-finite steps were skipped '
                 f'({self.total} in all; the longest streak was '
                 f'{int(counts.longest)})')
    if int(counts.longest) >= self.limit:
      raise NonFiniteError(
          f'{message}. Stopping after {self.limit} consecutive non-finite '
          'steps: lower optimizer.learning_rate, check the data, or raise '
          'max_consecutive_nonfinite_steps.')
    logging.warning('%s.', message)
