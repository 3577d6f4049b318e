"""A one-line progress report for the training loop: step, rate and ETA.

On a terminal the line is redrawn in place at most `interval` seconds apart;
when stdout is a file or a pipe (a cluster job's log) it prints nothing, so
log files hold only the loop's own records.
"""
import sys
import time
from typing import Optional, TextIO


class Progress:
  """Reports the progress of steps `initial + 1 .. total`."""

  def __init__(self, total: int, initial: int = 0, enabled: bool = True,
               stream: Optional[TextIO] = None, interval: float = 0.5):
    self.stream = stream or sys.stdout
    self.enabled = enabled and self.stream.isatty()
    self.total, self.interval = total, interval
    self._start_step, self._start = initial, time.time()
    self._shown = 0.0
    self.postfix = ''

  def update(self, step: int) -> None:
    """Step `step` was dispatched; redraws the line if `interval` passed."""
    now = time.time()
    if not self.enabled or (now - self._shown < self.interval and
                            step != self.total):
      return
    self._shown = now
    rate = (step - self._start_step) / max(now - self._start, 1e-9)
    eta = (self.total - step) / rate if rate else float('inf')
    eta_text = (time.strftime('%H:%M:%S', time.gmtime(eta))
                if eta != float('inf') else '?')
    self.stream.write(f'\rstep {step}/{self.total} ({rate:.2f} steps/s, '
                      f'ETA {eta_text}) {self.postfix}\x1b[K')
    self.stream.flush()

  def write(self, line: str) -> None:
    """Prints `line` (e.g. eval metrics) on its own line."""
    if self.enabled:
      self.stream.write('\r\x1b[K')
    print(line, file=self.stream, flush=True)

  def close(self) -> None:
    if self.enabled:
      self.stream.write('\n')
      self.stream.flush()
