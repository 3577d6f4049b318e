r"""Evaluates a saved checkpoint of a training run, with any subset of modalities.

  python experiments/evaluate.py --workdir=runs/default
  python experiments/evaluate.py --workdir=runs/default --step=2000 \
      --modalities=image --modalities=text --modalities=image,text

Each --modalities gives one evaluation with only those modalities (the others
are absent for every example); without it, all the run's modalities are
used. The run's config comes from <workdir>/config.json, or from --config
(with --config.a.b=value overrides, e.g. another eval split or batch size).
Results are printed and written to --output (default
<workdir>/eval/step_<N>.json; for a sequence task the file also holds the
first predictions next to their references). The checkpoints are opened read-only: this
works while the run is still training.
"""
from mmjax import host_memory

# First, before NumPy is imported: mmjax/host_memory.py says why.
host_memory.retain_freed_memory()

import json
import os

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

import multihost_flags
from mmjax import fileio
from mmjax.tasks.base import split_predictions
from mmjax import experiment as experiment_lib
from mmjax.evaluators import task as evaluation
from mmjax.train.writers import quiet_library_logs

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file (default: the run\'s own config.json).',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Workdir of a training run.')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step (default: latest).')
_MODALITIES = flags.DEFINE_multi_string(
    'modalities', None, 'Comma-separated modalities given to the model; '
    'repeat for several evaluations (default: all of the run\'s).')
_OUTPUT = flags.DEFINE_string('output', None, 'JSON file for the results '
                              '(default: <workdir>/eval/step_<N>.json).')
flags.mark_flags_as_required(['workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  multihost_flags.initialize()
  quiet_library_logs()
  config = _CONFIG.value or experiment_lib.load_config(_WORKDIR.value)
  experiment, state, step = experiment_lib.restore(config, _WORKDIR.value,
                                               _STEP.value)
  subsets = [tuple(filter(None, s.split(','))) for s in _MODALITIES.value
             ] if _MODALITIES.value else [tuple(config.model.modalities)]
  results = {'step': step, 'workdir': os.path.abspath(_WORKDIR.value),
             'evaluations': []}
  for modalities in subsets:
    metrics, predictions = split_predictions(
        evaluation.evaluate(experiment, state, modalities))
    results['evaluations'].append({'modalities': list(modalities),
                                   'metrics': metrics,
                                   **({'predictions': predictions}
                                      if predictions else {})})
    logging.info('step %d, %s: %s', step, '+'.join(modalities), ', '.join(
        f'{k}={v:.4f}' for k, v in sorted(metrics.items())))
  if jax.process_index() == 0:
    output = _OUTPUT.value or os.path.join(_WORKDIR.value, 'eval',
                                           f'step_{step}.json')
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    fileio.atomic_write_json(output, results)
    # Predictions (sequence tasks) go to the file only.
    print(json.dumps({**results, 'evaluations': [
        {k: v for k, v in e.items() if k != 'predictions'}
        for e in results['evaluations']]}, indent=2))


if __name__ == '__main__':
  app.run(main)
