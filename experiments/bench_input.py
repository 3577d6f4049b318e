r"""Input pipeline benchmark: examples/s of the pipeline alone, time per op, and
how fast the config's training step consumes examples.

  python experiments/bench_input.py --config=configs/default.py \
      --workdir=runs/bench_input [--num_workers=0] [--batches=100]

Prints a table and writes `bench_input.json` into --workdir. The pipeline
should deliver comfortably more than the step consumes (the aim is 1.5x);
otherwise the accelerator waits for the host.
"""
import os
import time

import jax
import numpy as np
from absl import app
from absl import flags
from ml_collections import config_flags

from mmjax import data
from mmjax import fileio
from mmjax.experiment import Experiment

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/default.py',
                                          'Config file (and :variant).')
_WORKDIR = flags.DEFINE_string('workdir', 'runs/bench_input',
                               'Where bench_input.json is written.')
_BATCHES = flags.DEFINE_integer('batches', 100,
                                'Timed batches of the pipeline.')
_STEPS = flags.DEFINE_integer('steps', 50, 'Timed training steps.')
_EXAMPLES = flags.DEFINE_integer('examples', 500,
                                 'Examples timed per preprocessing op.')
_NUM_WORKERS = flags.DEFINE_integer(
    'num_workers', None, 'Grain worker processes (default: the config\'s).')


def time_ops(experiment, count):
  """Seconds per example of reading, selecting and each training op."""
  spec, pp = experiment.spec, experiment.pp_train
  source = spec.source(spec.train_split)
  rng = np.random.default_rng(0)
  totals = {'read': 0., 'select': 0.}
  totals.update({f'{i}:{type(op).__name__}': 0. for i, op in
                 enumerate(pp.ops)})
  for i in range(count):
    start = time.perf_counter()
    stored = source[i % len(source)]
    totals['read'] += time.perf_counter() - start
    start = time.perf_counter()
    example = spec.select(stored)
    totals['select'] += time.perf_counter() - start
    for j, op in enumerate(pp.ops):
      start = time.perf_counter()
      example = op(example, rng)
      totals[f'{j}:{type(op).__name__}'] += time.perf_counter() - start
  return {k: v / count for k, v in totals.items()}


def pipeline_rate(experiment, batches):
  """Examples/s of the training iterator alone (after 5 warm-up batches)."""
  iterator = experiment.train_iterator()
  for _ in range(5):
    next(iterator)
  start = time.perf_counter()
  for _ in range(batches):
    batch = next(iterator)
  seconds = time.perf_counter() - start
  rows = len(next(iter(batch.values())))
  return batches * rows / seconds


def step_rate(experiment, steps):
  """Examples/s the training step consumes, fed one device-resident batch."""
  runner = experiment.runner
  batch = runner.put(next(experiment.train_iterator()))
  state = runner.init(experiment.init_rng)
  for _ in range(3):  # Compile and warm up.
    state, metrics = runner.train_step(state, batch)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = runner.train_step(state, batch)
  jax.block_until_ready(metrics)
  seconds = time.perf_counter() - start
  return steps * experiment.config.input.global_batch_size / seconds


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  config = _CONFIG.value
  if _NUM_WORKERS.value is not None:
    config.input.num_workers = _NUM_WORKERS.value
  data.prepare(config)
  experiment = Experiment(config)
  per_op = time_ops(experiment, _EXAMPLES.value)
  pipeline = pipeline_rate(experiment, _BATCHES.value)
  consumed = step_rate(experiment, _STEPS.value)
  result = {
      'dataset': f'{config.dataset.name}/{config.dataset.builder_config}',
      'pp_train': config.input.pp_train,
      'num_workers': config.input.num_workers,
      'cpu_count': os.cpu_count(),
      'devices': f'{jax.device_count()} x {jax.devices()[0].device_kind}',
      'pipeline_examples_per_s': pipeline,
      'step_examples_per_s': consumed,
      'ratio': pipeline / consumed,
      'op_microseconds_per_example': {k: v * 1e6 for k, v in per_op.items()},
  }
  print(f'{"stage":<28}{"us / example":>14}')
  for name, us in result['op_microseconds_per_example'].items():
    print(f'{name:<28}{us:>14.1f}')
  print(f'pipeline alone ({config.input.num_workers} workers): '
        f'{pipeline:,.0f} examples/s')
  print(f'training step consumes: {consumed:,.0f} examples/s')
  print(f'ratio: {pipeline / consumed:.2f}x')
  os.makedirs(_WORKDIR.value, exist_ok=True)
  fileio.atomic_write_json(os.path.join(_WORKDIR.value, 'bench_input.json'),
                           result)


if __name__ == '__main__':
  app.run(main)
