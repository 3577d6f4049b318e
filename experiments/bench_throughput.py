r"""Benchmarks the training step of a config: compile time, step time,
examples/s, FLOPs per step (analytic and XLA's), MFU and peak memory.

  python experiments/bench_throughput.py --config=configs/bench.py \
      --steps=10 --warmup=2 --out=benchmarks/throughput.json
  python experiments/bench_throughput.py --config=configs/bench.py \
      --config.model.remat=full --label='remat full' \
      --out=benchmarks/throughput.json

Each run appends its result to the JSON list in --out and prints the table of
every result there, so several runs (say, remat off and on) make one table.
MFU is measured against a large matrix product timed on the same devices in
the same run; see mmjax/benchmarks/throughput.py for how every figure is
measured.
"""
from mmjax import host_memory

# First, before NumPy is imported: mmjax/host_memory.py says why.
host_memory.retain_freed_memory()

from absl import app
from absl import flags
from ml_collections import config_flags

from mmjax.benchmarks import throughput
from mmjax.train.writers import quiet_library_logs

_CONFIG = config_flags.DEFINE_config_file(
    'config', 'configs/bench.py', 'Config file, optionally with a variant.',
    lock_config=True)
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed steps (0: compile only).')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed steps after compiling.')
_OUT = flags.DEFINE_string('out', None, 'JSON file the result is appended to.')
_LABEL = flags.DEFINE_string('label', None, 'Name of this run in the table '
                             '(default: the config file and its settings).')
_PROFILE = flags.DEFINE_integer('profile_steps', 0, 'Steps traced to show '
                                'where the time goes (op kinds, model parts).')
_PEAK_SIZES = flags.DEFINE_list('peak_sizes', None, 'Matrix sizes of the '
                                'peak FLOP/s products (default by platform).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  quiet_library_logs()
  if _STEPS.value < 0 or _WARMUP.value < 0:
    raise app.UsageError('--steps and --warmup must be >= 0')
  result = throughput.benchmark(_CONFIG.value, steps=_STEPS.value,
                                warmup=_WARMUP.value,
                                peak_sizes=_PEAK_SIZES.value and [
                                    int(n) for n in _PEAK_SIZES.value],
                                profile_steps=_PROFILE.value)
  result['label'] = _LABEL.value or throughput.default_label(
      flags.FLAGS['config'].config_filename, result)
  results = (throughput.append_result(_OUT.value, result) if _OUT.value
             else [result])
  print(f'{result["device"]}; ' + ', '.join(
      f'{k}={result[k]}' for k in ('peak_memory_source', 'jax_version')))
  print(throughput.format_table(results))
  if 'op_profile' in result:
    print(throughput.format_op_profile(result['op_profile']))


if __name__ == '__main__':
  app.run(main)
