r"""Trains an mmjax model described by a config file.

  python experiments/train.py --config=configs/default.py --workdir=runs/default
  python experiments/train.py --config=configs/default.py:fusion=gated \
      --config.num_train_steps=500 --workdir=runs/gated

A run resumes from the latest checkpoint in --workdir. On SIGTERM or SIGINT
it saves the current step and exits with code 75 (run the same command again
to resume); see docs/fault_tolerance.md.

Multi-host: start one process per host with the same flags, plus
--coordinator_address=HOST:PORT --num_processes=N --process_id=I (or none of
these under SLURM, which provides them: `srun python experiments/train.py
...`). Each process reads its rows of every global batch; logs, summaries and
TensorBoard events come from process 0; every process writes its part of each
checkpoint.
"""
from mmjax import host_memory

# First, before NumPy is imported: mmjax/host_memory.py says why.
host_memory.retain_freed_memory()

import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

import multihost_flags
from mmjax.train import preemption
from mmjax.experiment import train_and_evaluate
from mmjax.train.writers import quiet_library_logs

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file, optionally with a variant: file.py:variant.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, '
                               'logs and summary.json.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  multihost_flags.initialize()
  quiet_library_logs()
  if jax.process_index() != 0:  # Process 0 speaks for the run.
    logging.set_verbosity(logging.WARNING)
  try:
    train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except preemption.Preempted as e:
    logging.warning('%s', e)
    sys.exit(preemption.EXIT_CODE)


if __name__ == '__main__':
  app.run(main)
