"""The loop's guard against non-finite training steps.

The train step itself never applies a non-finite update (`steps.train_step`
keeps the state and reports `nonfinite`); this guard counts such steps and
stops the run when `limit` come in a row, naming the step and the metrics
that were not finite.
"""
from typing import Any, Callable, Mapping

from absl import logging
import numpy as np


class NonFiniteError(RuntimeError):
  """Too many consecutive training steps had a non-finite loss or gradient."""


class NonFiniteGuard:
  """Counts steps whose metrics say `nonfinite`.

  Attributes:
    total: non-finite steps so far.
    streak: consecutive non-finite steps up to the last one checked.
  """

  def __init__(self, limit: int, fetch: Callable[[Any], Any]):
    """`limit`: consecutive non-finite steps that stop the run; `fetch`:
    device values -> host values (the runner's)."""
    self.limit, self._fetch = limit, fetch
    self.total = self.streak = 0

  def check(self, step: int, metrics: Mapping[str, Any]) -> None:
    """Reads step `step`'s `nonfinite` flag (a sync on that step only).

    Raises:
      NonFiniteError: at the `limit`-th non-finite step in a row.
    """
    if not float(self._fetch(metrics['nonfinite'])):
      self.streak = 0
      return
    self.total += 1
    self.streak += 1
    host = self._fetch(metrics)
    bad = ', '.join(k for k, v in sorted(host.items())
                    if not np.all(np.isfinite(v)))
    message = (f'step {step}: non-finite {bad}; the update was skipped '
               f'({self.streak} in a row, {self.total} in all)')
    if self.streak >= self.limit:
      raise NonFiniteError(
          f'{message}. Stopping after {self.limit} consecutive non-finite '
          'steps: lower optimizer.learning_rate, check the data, or raise '
          'max_consecutive_nonfinite_steps.')
    logging.warning('%s.', message)
