r"""Runs an ablation: one config, many runs that differ in a few fields, then
a table of their final eval metrics, parameters, steps/s and wall time.

  # A grid on the command line: the product of every --grid.
  python experiments/ablate.py --config=configs/digits.py --outdir=runs/abl \
      --grid=model.head_dropout=0.0,0.3 --grid=seed=0,1,2
  # Explicit runs, each crossed with the grid (if any).
  python experiments/ablate.py --config=configs/digits.py --outdir=runs/abl \
      --list=model.dim=32,optimizer.learning_rate=3e-3 --list=model.dim=64
  # A sweep file (get_sweep() returns the runs' override dicts).
  python experiments/ablate.py --config=configs/digits.py \
      --sweep=configs/sweeps/fusion_dropout.py --outdir=runs/fusion_dropout \
      --parallel=2 --config.num_train_steps=1000

Keys are config fields as in --config.a.b=value; `--config.a.b=value` flags
of this script apply to every run. A key ':k' sets the config variant's k
(':modalities=image+text' picks those modalities and their preprocessing), and
'model.fusion.name' picks the fusion method through the variant, so each run
gets its method's knobs at their defaults. A value with a comma needs a sweep
file.

Each run works in <outdir>/<run name> (e.g. runs/abl/model.head_dropout=0.3,
seed=1): a finished run is not run again and an interrupted one resumes.
Launch with --parallel=N (subprocesses), submit to SLURM as one job array
with --sbatch (docs/scale.md#slurm), or write the commands for a scheduler
with --print_commands or --job_array=FILE, and get the table with
--report_only (it lists unfinished runs as pending, and runs whose SLURM
array task ended without a summary as failed, with the task's job id). The table is printed and
written to <outdir>/ablation.csv and ablation.md.
"""
from mmjax import host_memory

# First, before NumPy is imported: mmjax/host_memory.py says why.
host_memory.retain_freed_memory()

from absl import app
from absl import flags
from ml_collections import config_flags

import sweep_flags
from mmjax.sweeps import launch, overrides, runs as runs_lib
from mmjax.train.writers import quiet_library_logs

config_flags.DEFINE_config_file(
    'config', None, 'Config file, optionally with a variant: file.py:variant. '
    'Its --config.a.b=value overrides apply to every run.', lock_config=True)
_SWEEP = flags.DEFINE_string('sweep', None, 'Sweep file: a Python file whose '
                             'get_sweep() returns a list of override dicts.')
_GRID = flags.DEFINE_multi_string(
    'grid', [], 'key=value1,value2,...: one axis of a grid; several --grid '
    'give their product.')
_LIST = flags.DEFINE_multi_string(
    'list', [], 'key1=value1,key2=value2: one run; several --list give '
    'several runs.')
flags.mark_flag_as_required('config')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  quiet_library_logs()
  try:
    settings = overrides.sweep_settings(_SWEEP.value, _LIST.value, _GRID.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  config_flag = flags.FLAGS['config']
  runs = runs_lib.make_runs(config_flag.config_filename, settings,
                            config_flag.override_values)
  outdir = sweep_flags.OUTDIR.value
  statuses = launch.launch(runs, outdir, **sweep_flags.launch_kwargs())
  if statuses is None:
    return
  print(runs_lib.write_summary(runs, outdir, statuses))
  sweep_flags.exit_if_failed(runs_lib.failed(statuses))


if __name__ == '__main__':
  app.run(main)
