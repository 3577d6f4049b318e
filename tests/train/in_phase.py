r"""Runs experiments/train.py with SIGTERM sent as one phase of the run starts,
or with a pause after the restore.

  python tests/train/in_phase.py PHASE [train.py flags]

A real signal, delivered by the kernel to the real training process; only
its timing is pinned to a phase, which sending it from outside could not do
reliably. PHASE:
  prepare     as the dataset preparation starts;
  restore     as the restore of the latest checkpoint starts;
  evaluate    after the first batch of every evaluation;
  final_save  as the save of the last step starts;
  twice       SIGTERM as the last step's save starts, and again once that
              asynchronous save is under way (the second signal must kill);
  pause:DIR   no signal: after the restore, creates DIR/paused and waits
              (up to 5 minutes) until DIR/resume exists, so a test can act
              while the run holds its workdir.
"""
import os
import runpy
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, 'experiments'))

from mmjax import data  # noqa: E402  (after sys.path)
from mmjax.train.checkpoint import Checkpointer  # noqa: E402
from mmjax.experiment import Experiment  # noqa: E402


def _term():
  os.kill(os.getpid(), signal.SIGTERM)


def _before(owner, name, when=lambda *args: True, after=None):
  """Makes `owner.name` send SIGTERM when it is called with arguments for
  which `when` holds (and call `after` once it returns)."""
  original = getattr(owner, name)

  def wrapped(*args, **kwargs):
    hit = when(*args)
    if hit:
      _term()
    result = original(*args, **kwargs)
    if hit and after:
      after()
    return result

  setattr(owner, name, wrapped)


def _after_first_batch(original):
  def eval_batches(self):
    for i, batch in enumerate(original(self)):
      if i == 1:
        _term()
      yield batch
  return eval_batches


def _pause_after(owner, name, directory):
  original = getattr(owner, name)

  def wrapped(*args, **kwargs):
    result = original(*args, **kwargs)
    open(os.path.join(directory, 'paused'), 'w').close()
    deadline = time.time() + 300
    while not os.path.exists(os.path.join(directory, 'resume')):
      if time.time() > deadline:
        raise SystemExit('in_phase.py: never told to resume')
      time.sleep(0.01)
    return result

  setattr(owner, name, wrapped)


def main():
  phase = sys.argv.pop(1)
  total = next(int(a.split('=', 1)[1]) for a in sys.argv
               if a.startswith('--config.num_train_steps='))
  last_save = lambda checkpointer, step, *rest: step == total  # noqa: E731
  if phase == 'prepare':
    _before(data, 'prepare')
  elif phase == 'restore':
    _before(Checkpointer, 'restore_latest')
  elif phase == 'evaluate':
    Experiment.eval_batches = _after_first_batch(Experiment.eval_batches)
  elif phase == 'final_save':
    _before(Checkpointer, 'save', last_save)
  elif phase == 'twice':
    _before(Checkpointer, 'save', last_save, after=_term)
  elif phase.startswith('pause:'):
    _pause_after(Checkpointer, 'restore_latest', phase.split(':', 1)[1])
  else:
    raise SystemExit(f'unknown phase {phase!r}')
  sys.argv[0] = os.path.join(REPO, 'experiments', 'train.py')
  runpy.run_path(sys.argv[0], run_name='__main__')


if __name__ == '__main__':
  main()
