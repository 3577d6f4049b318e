"""Flags that experiments/ablate.py and experiments/benchmark_fusion.py share:
where a sweep's runs go and how they are launched (`mmjax.sweeps.launch`)."""
import os
import shlex
import sys
from typing import Any, Dict, Sequence

from absl import flags

OUTDIR = flags.DEFINE_string(
    'outdir', None, 'Directory of the sweep: one workdir per run, the tables. '
    'Rerunning with the same outdir skips finished runs and resumes '
    'interrupted ones.')
PARALLEL = flags.DEFINE_integer(
    'parallel', 0, '0: run in this process, one run after another; N: N '
    'subprocesses of experiments/train.py at a time (they inherit XLA_FLAGS '
    'and CUDA_VISIBLE_DEVICES from the environment).')
PRINT_COMMANDS = flags.DEFINE_bool(
    'print_commands', False, 'Print one experiments/train.py command per '
    'unfinished run and run nothing.')
JOB_ARRAY = flags.DEFINE_string(
    'job_array', None, 'Write one command per unfinished run to this file, '
    'one a line (line i for array task i: sed -n ${SLURM_ARRAY_TASK_ID}p), '
    'and run nothing.')
SBATCH = flags.DEFINE_bool(
    'sbatch', False, 'Submit the unfinished runs to SLURM as one job array '
    '(array task i trains run i; logs in <outdir>/slurm/) and return; '
    '--report_only then tables them, naming failed tasks by job id.')
SBATCH_ARGS = flags.DEFINE_string(
    'sbatch_args', '', 'More sbatch options with --sbatch, e.g. '
    '"--partition=gpu --gres=gpu:1 --time=4:00:00".')
REPORT_ONLY = flags.DEFINE_bool(
    'report_only', False, 'Run nothing: only the table of the runs finished '
    'so far (e.g. while a scheduler runs the others); runs whose SLURM array '
    'task (--sbatch) ended without a summary count as failed.')
PYTHON = flags.DEFINE_string('python', sys.executable,
                             'Interpreter of the subprocesses and commands.')
flags.mark_flag_as_required('outdir')
flags.register_validator('parallel', lambda n: n >= 0,
                         message='--parallel must be >= 0')

TRAIN_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                            'train.py')


def launch_kwargs() -> Dict[str, Any]:
  """The keyword arguments of `mmjax.sweeps.launch.launch` the flags give."""
  return dict(train_script=os.path.relpath(TRAIN_SCRIPT),
              parallel=PARALLEL.value, print_commands=PRINT_COMMANDS.value,
              job_array=JOB_ARRAY.value, report_only=REPORT_ONLY.value,
              sbatch=SBATCH.value, sbatch_args=shlex.split(SBATCH_ARGS.value),
              python=PYTHON.value)


def exit_if_failed(failed: Sequence[str], note: str = '') -> None:
  """Exits with a message naming the runs that failed, if any."""
  if failed:
    sys.exit(f'{len(failed)} run(s) failed: {", ".join(failed)} (logs in '
             f'their workdirs, or <outdir>/slurm/ for SLURM array tasks)'
             f'{"; " + note if note else ""}. Run the same command again to '
             'retry them.')
