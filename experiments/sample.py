r"""Writes a PNG grid of images a trained text-to-image GAN draws for texts.

  python experiments/sample.py --workdir=runs/gan --text=seven --n=16
  python experiments/sample.py --workdir=runs/gan --text=zero,one,two \
      --n=8 --out=digits.png --step=3000

One row per text (comma-separated), `--n` images each, from the EMA
generator (mmjax/evaluators/gan.py `sample`); texts are tokenized by the
run's own preprocessing. Default output: <workdir>/samples/sample.png.
"""
from mmjax import host_memory

# First, before NumPy is imported: mmjax/host_memory.py says why.
host_memory.retain_freed_memory()

import os

from absl import app
from absl import flags
from absl import logging
import jax

import multihost_flags
from mmjax import experiment as experiment_lib
from mmjax import reporting
from mmjax.evaluators import gan
from mmjax.train.writers import quiet_library_logs

_WORKDIR = flags.DEFINE_string('workdir', None, 'Workdir of a GAN run.')
_TEXT = flags.DEFINE_list('text', None, 'Texts, one grid row each.')
_N = flags.DEFINE_integer('n', 8, 'Images per text.')
_OUT = flags.DEFINE_string('out', None, 'PNG path (default: '
                           '<workdir>/samples/sample.png).')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step (default: latest).')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the noise.')
flags.mark_flags_as_required(['workdir', 'text'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  multihost_flags.initialize()
  quiet_library_logs()
  config = experiment_lib.load_config(_WORKDIR.value)
  if config.task.name != 'gan':
    raise app.UsageError(f'{_WORKDIR.value} is a {config.task.name!r} run; '
                         'sample.py draws from a GAN run (task gan).')
  experiment, state, step = experiment_lib.restore(config, _WORKDIR.value,
                                                   _STEP.value)
  grid = gan.sample(experiment, state, _TEXT.value, _N.value, _SEED.value)
  out = _OUT.value or os.path.join(_WORKDIR.value, gan.SAMPLES_DIR,
                                   'sample.png')
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    reporting.write_png(out, grid)
    logging.info('step %d: wrote %d x %d samples to %s', step,
                 len(_TEXT.value), _N.value, out)


if __name__ == '__main__':
  app.run(main)
