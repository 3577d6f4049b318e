r"""Benchmarks fusion methods against each other: every variant x seed trained
on one config, then per variant the task metric (mean and 95% Student-t
confidence interval over seeds), parameters, and the training step's XLA
FLOPs per example, examples/s, memory and compile time.

  python experiments/benchmark_fusion.py --outdir=runs/fusion_bench
  python experiments/benchmark_fusion.py --config=configs/digits.py \
      --methods=concat,late,mbt:fusion_layer=1,num_bottlenecks=2,gated \
      --seeds=0,1,2,3,4 --config.num_train_steps=1000 --parallel=2 \
      --outdir=runs/fusion_bench

--methods lists variants: a method, optionally with knobs after ':' (fields
of model.fusion, or any dotted config field), e.g. 'mbt:fusion_layer=1'; the
default is every registered method at its default knobs. The method is set
through the config variant (`fusion=`), so the config must take one (every
config built on configs/default.py does). --config.a.b=value flags apply to
every run.

Runs work in <outdir>/<run name>; a rerun skips finished runs, resumes
interrupted ones and reuses the step measurements in <outdir>/bench/, so the
same command finishes an interrupted benchmark. With --print_commands or
--job_array the runs go to a scheduler; --report_only then reports the seeds
finished so far. The step is measured in this process after training, on a
batch already on the devices (input pipeline excluded), once per variant;
--nobench skips it (e.g. on a login node). With config.compilation_cache_dir
set, a cached step's compile time is the cache's load time. Writes
results.csv, results.md, metric_vs_flops.png, metric_vs_params.png and, where
runs hold a robustness.json, robustness_<modality>.png (see
mmjax/benchmarks/fusion.py).
"""
from mmjax import host_memory

# First, before NumPy is imported: mmjax/host_memory.py says why.
host_memory.retain_freed_memory()

from absl import app
from absl import flags
from ml_collections import config_flags

import sweep_flags
from mmjax.benchmarks import fusion
from mmjax.train.writers import quiet_library_logs

config_flags.DEFINE_config_file(
    'config', 'configs/digits.py', 'Config file, optionally with a variant: '
    'file.py:variant. Its --config.a.b=value overrides apply to every run.',
    lock_config=True)
_METHODS = flags.DEFINE_string(
    'methods', '', 'Variants, e.g. concat,gated,mbt:fusion_layer=1 (default: '
    'every registered fusion method).')
_SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2'], 'Seeds of every variant.')
_METRIC = flags.DEFINE_string('metric', '', 'Eval metric reported (default: '
                              "the task's best_metric, e.g. accuracy).")
_BENCH = flags.DEFINE_bool('bench', True, "Measure each variant's training "
                           'step (mmjax.benchmarks.throughput) in this '
                           'process.')
_BENCH_STEPS = flags.DEFINE_integer('bench_steps', 10, 'Timed steps.')
_BENCH_WARMUP = flags.DEFINE_integer('bench_warmup', 2, 'Untimed steps first.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  quiet_library_logs()
  variants = (fusion.parse_variants(_METHODS.value) if _METHODS.value
              else fusion.registered_variants())
  config_flag = flags.FLAGS['config']
  result = fusion.run_benchmark(
      config_flag.config_filename, variants, [int(s) for s in _SEEDS.value],
      sweep_flags.OUTDIR.value, base_overrides=config_flag.override_values,
      metric=_METRIC.value or None, bench=_BENCH.value,
      bench_steps=_BENCH_STEPS.value, bench_warmup=_BENCH_WARMUP.value,
      **sweep_flags.launch_kwargs())
  if result is None:
    return
  _, table, failed = result
  print(table)
  sweep_flags.exit_if_failed(failed, 'the table covers the finished ones')


if __name__ == '__main__':
  app.run(main)
