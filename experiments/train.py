r"""Trains an mmjax model described by a config file.

  python experiments/train.py --config=configs/default.py --workdir=runs/default
  python experiments/train.py --config=configs/default.py:fusion=gated \
      --config.num_train_steps=500 --workdir=runs/gated

A run resumes from the latest checkpoint in --workdir.
"""
from absl import app
from absl import flags
from ml_collections import config_flags

from mmjax.train.loop import train_and_evaluate
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
  quiet_library_logs()
  train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
