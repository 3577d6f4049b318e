"""Preemption: SIGTERM / SIGINT ask a run to checkpoint what is new and stop.

Cluster schedulers send SIGTERM some seconds before they kill a preempted
job, and Ctrl-C sends SIGINT. The watcher is installed for the whole of
`train_and_evaluate`; a signal sets a flag that the run reads between its
phases (dataset preparation, restore, every training step, every evaluation
batch, the final save). The run then saves the current step if it trained
since the last checkpoint, waits for the save and raises `Preempted`, which
`experiments/train.py` turns into exit code `EXIT_CODE`, so a job script can
tell "resubmit me" from a failure. A second signal gets the default
behaviour (terminate / KeyboardInterrupt) at once, for a user who does not
want to wait for the save.

With several processes, every process must stop at the same step (all take
part in the save): JAX's preemption sync point, which its coordination
service keeps in agreement across processes, replaces the local signal
handler (it only watches SIGTERM). It is reached once per training step, so
a multi-process run acts on a SIGTERM at the next step boundary: one
received during dataset preparation, restore or compilation stops the run
after its first step, one received during an evaluation after that
evaluation.
"""
import signal
import threading
from typing import Iterable, Iterator, Optional, TypeVar

import jax
from jax.experimental import multihost_utils

# EX_TEMPFAIL of sysexits.h: a temporary failure; run the same command again.
EXIT_CODE = 75
SIGNALS = (signal.SIGTERM, signal.SIGINT)


T = TypeVar('T')


class Preempted(Exception):
  """The run stopped on a signal with its progress checkpointed; rerun to
  resume. `step`: the step it resumes from (None: from the start)."""

  def __init__(self, step: Optional[int], signal_name: str,
               phase: Optional[str] = None):
    self.step = step
    if phase is None:
      done = f'checkpointed step {step}'
    else:
      done = (f'nothing new to checkpoint during {phase} ('
              + (f'the checkpoint of step {step} holds the progress)'
                 if step else 'no checkpoint yet)'))
    super().__init__(f'{signal_name} received: {done} and stopped; run the '
                     'same command again to resume.')


class Interrupted(Exception):
  """Raised by `PreemptionWatcher.interruptible` between two items."""


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

  @property
  def received(self) -> bool:
    """Whether a signal arrived (single process; a multi-process run learns
    of one at the next `requested`)."""
    return self._received is not None

  def check(self, phase: str, step: Optional[int]) -> None:
    """Raises Preempted after `phase` if a signal arrived; the checkpoint of
    `step` (None: none yet) already holds everything the run did."""
    if self.received:
      raise Preempted(step, self._received, phase)

  def interruptible(self, items: Iterable[T]) -> Iterator[T]:
    """`items`, raising Interrupted before the next one once a signal
    arrived (e.g. between evaluation batches)."""
    for item in items:
      if self.received:
        raise Interrupted()
      yield item

  def requested(self, step: int) -> bool:
    """Whether the run should checkpoint `step` (just trained) and stop."""
    if jax.process_count() > 1:
      if multihost_utils.reached_preemption_sync_point(step):
        self._received = 'SIGTERM'
    return self._received is not None

  def stop(self, step: int) -> Preempted:
    """The exception to raise once `step` is saved."""
    return Preempted(step, self._received or 'SIGTERM')
