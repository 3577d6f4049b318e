"""Preemption: SIGTERM / SIGINT ask the training loop to checkpoint and stop.

Cluster schedulers send SIGTERM some seconds before they kill a preempted
job, and Ctrl-C sends SIGINT. Either sets a flag that the loop reads after
each step; the loop then saves the current step, waits for the save and
raises `Preempted`, which `experiments/train.py` turns into exit code
`EXIT_CODE`, so a job script can tell "resubmit me" from a failure. A second
signal gets the default behaviour (terminate / KeyboardInterrupt), for a user
who does not want to wait for the save.

With several processes, every process must stop at the same step (all take
part in the save): JAX's preemption sync point, which its coordination
service keeps in agreement across processes, replaces the local signal
handler (it only watches SIGTERM).
"""
import signal
import threading

import jax
from jax.experimental import multihost_utils

# EX_TEMPFAIL of sysexits.h: a temporary failure; run the same command again.
EXIT_CODE = 75
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
  """The run checkpointed at `step` and stopped on a signal; rerun to resume."""

  def __init__(self, step: int, signal_name: str):
    self.step = step
    super().__init__(f'{signal_name} received: checkpointed step {step} and '
                     'stopped; run the same command again to resume.')


class PreemptionWatcher:
  """Context manager: `requested(step)` tells whether to checkpoint and stop.

  In one process it installs SIGTERM / SIGINT handlers for its duration (in
  the main thread only: Python delivers signals there); the old handlers
  come back on exit, and after the first signal.
  """

  def __init__(self):
    self._received = None  # Name of the signal received, if any.
    self._previous = {}

  def __enter__(self) -> 'PreemptionWatcher':
    if (jax.process_count() == 1 and
        threading.current_thread() is threading.main_thread()):
      self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
    return self

  def __exit__(self, *exc) -> None:
    self._restore_handlers()

  def _restore_handlers(self) -> None:
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous = {}

  def _handle(self, signum, frame) -> None:
    del frame
    self._received = signal.Signals(signum).name
    self._restore_handlers()

  def requested(self, step: int) -> bool:
    """Whether the run should checkpoint `step` (just trained) and stop."""
    if jax.process_count() > 1:
      if multihost_utils.reached_preemption_sync_point(step):
        self._received = 'SIGTERM'
    return self._received is not None

  def stop(self, step: int) -> Preempted:
    """The exception to raise once `step` is saved."""
    return Preempted(step, self._received)
