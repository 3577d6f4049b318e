r"""Input pipeline benchmark: examples/s of the pipeline alone, time per op, how
fast the config's training step consumes examples, and the training loop with
the one feeding the other.

  python experiments/bench_input.py --config=configs/default.py \
      --workdir=runs/bench_input [--num_workers=0] [--batches=100]

Prints a table and writes `bench_input.json` into --workdir. The pipeline
should deliver comfortably more than the step consumes (the aim is 1.5x);
otherwise the accelerator waits for the host (see mmjax/benchmarks/input.py).
"""
from mmjax import host_memory

# First, before NumPy is imported: mmjax/host_memory.py says why.
host_memory.retain_freed_memory()

from absl import app
from absl import flags
from ml_collections import config_flags

from mmjax.benchmarks import input as input_bench
from mmjax.train.writers import quiet_library_logs

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/default.py',
                                          'Config file (and :variant).')
_WORKDIR = flags.DEFINE_string('workdir', 'runs/bench_input',
                               'Where bench_input.json is written.')
_BATCHES = flags.DEFINE_integer('batches', 100,
                                'Timed batches of the pipeline.')
_STEPS = flags.DEFINE_integer('steps', 50, 'Timed training steps (of the '
                              'step alone, and of the loop).')
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Alternating rounds of the step '
                               'alone and the loop (medians are reported).')
_EXAMPLES = flags.DEFINE_integer('examples', 500,
                                 'Examples timed per preprocessing op.')
_NUM_WORKERS = flags.DEFINE_integer(
    'num_workers', None, 'Grain worker processes (default: the config\'s).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  quiet_library_logs()
  result = input_bench.benchmark(
      _CONFIG.value, batches=_BATCHES.value, steps=_STEPS.value,
      examples=_EXAMPLES.value, rounds=_ROUNDS.value, num_workers=_NUM_WORKERS.value)
  print(input_bench.report(result))
  input_bench.write(result, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
