r"""Robustness of a trained run to missing and noisy modalities (MultiBench).

  python experiments/robustness.py --workdir=runs/default
  python experiments/robustness.py --workdir=runs/x --step=2000 \
      --baseline_workdir=runs/late --levels=0,0.25,0.5,0.75 \
      --noises=image:gaussian,image:blur,text:typos

Evaluates the checkpoint (default: the latest) with every non-empty subset of
the run's modalities, and with each modality corrupted by each noise at each
level (default 0, 0.1, ..., 0.9): images Gaussian noise, salt-and-pepper,
blur, contrast; audio white noise (at SNR (1 - level) / level) and time
masking; text typos and word drops (see mmjax/robustness/corruptions.py).
Writes robustness.json, robustness.md and robustness_<modality>.png into
--output_dir (default: the workdir). With --baseline_workdir (a late-fusion
run of the same task), adds effective robustness; the baseline's curves come
from mmjax import host_memory

# First, before NumPy is imported: mmjax/host_memory.py says why.
host_memory.retain_freed_memory()

from its robustness.json when that holds them on the same levels and seed
(run this script on the baseline first to evaluate it once), otherwise they
are evaluated here. The checkpoints are opened read-only.
"""
import os

from absl import app
from absl import flags
from absl import logging
import jax

import multihost_flags
from mmjax.evaluators import robustness as protocol
from mmjax.robustness import report
from mmjax import experiment as experiment_lib
from mmjax.train.writers import quiet_library_logs

_WORKDIR = flags.DEFINE_string('workdir', None, 'Workdir of a training run.')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step (default: latest).')
_BASELINE = flags.DEFINE_string(
    'baseline_workdir', None, 'Workdir of a late-fusion run of the same task, '
    'for effective robustness.')
_BASELINE_STEP = flags.DEFINE_integer(
    'baseline_step', None, 'Checkpoint step of the baseline (default: latest).')
_LEVELS = flags.DEFINE_list(
    'levels', [str(x) for x in protocol.DEFAULT_LEVELS],
    'Noise levels, increasing in [0, 1].')
_NOISES = flags.DEFINE_list(
    'noises', None, 'modality:noise pairs to evaluate, e.g. '
    'image:blur,text:typos (default: every noise of every modality).')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the corruptions.')
_OUTPUT_DIR = flags.DEFINE_string(
    'output_dir', None, 'Where the results go (default: --workdir).')
flags.mark_flags_as_required(['workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  multihost_flags.initialize()
  quiet_library_logs()
  config = experiment_lib.load_config(_WORKDIR.value)
  experiment, state, step = experiment_lib.restore(config, _WORKDIR.value,
                                               _STEP.value)
  results = protocol.run(experiment, state, step,
                         levels=[float(x) for x in _LEVELS.value],
                         noises=protocol.parse_noises(_NOISES.value), seed=_SEED.value)
  baseline = None
  if _BASELINE.value:
    baseline = protocol.baseline_results(
        _BASELINE.value, results,
        experiment_lib.load_config(_BASELINE.value), experiment_lib.restore,
        _BASELINE_STEP.value)
    results = protocol.add_effective_robustness(results, baseline)
  if jax.process_index() == 0:
    paths = report.write(results, _OUTPUT_DIR.value or _WORKDIR.value,
                         baseline)
    print(report.markdown(results))
    logging.info('Wrote %s', ', '.join(os.path.abspath(p) for p in paths))


if __name__ == '__main__':
  app.run(main)
