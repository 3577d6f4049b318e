"""Launching a sweep's runs: one after another in this process, as parallel
`experiments/train.py` subprocesses, submitted to SLURM as a job array, or
written out as shell commands for a scheduler (`launch` picks one)."""
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from typing import Dict, Iterable, List, Optional, Sequence

from absl import logging
import jax
import ml_collections

from mmjax import data
from mmjax import fileio
from mmjax.experiment import train_and_evaluate
from mmjax.sweeps.runs import (DONE, FAILED, FINISHED, PENDING, Run,
                               check_workdirs, pending)
from mmjax.train import preemption
from mmjax.validate import validate_config

LOG_FILE = 'train.log'  # A subprocess run's stdout and stderr.
# A sweep's SLURM submissions, in its outdir: the commands of each job array
# and each array task's log, and the last job's id and runs.
SLURM_DIR = 'slurm'
SLURM_JOB_FILE = 'slurm_job.json'
# SLURM job states after which a job (or array task) runs no more.
SLURM_FINAL_STATES = ('COMPLETED', 'FAILED', 'CANCELLED', 'TIMEOUT',
                      'NODE_FAIL', 'PREEMPTED', 'OUT_OF_MEMORY', 'BOOT_FAIL',
                      'DEADLINE')


def prepare_datasets(configs: Iterable[ml_collections.ConfigDict]) -> int:
  """Runs `mmjax.data.prepare` once for each distinct dataset of `configs`
  (dataset, modalities and preprocessing: what preparation depends on).

  Parallel runs that find their dataset missing would each generate it, and
  all but the first fail when TFDS renames its temporary directory into place
  (FileExistsError); prepared here first, each run finds it ready.
  Returns:
    How many distinct datasets there were.
  """
  seen = set()
  for config in configs:
    key = (config.dataset.to_json_best_effort(sort_keys=True),
           tuple(config.model.modalities), config.input.pp_train,
           config.input.pp_eval)
    if key not in seen:
      seen.add(key)
      data.prepare(config)
  return len(seen)


def run_in_process(runs: Sequence[Run], outdir: str,
                   progress: bool = True) -> Dict[str, str]:
  """Trains the unfinished runs one after another in this process.

  Every config is validated against this process's devices first, so a bad
  value fails before the first run. A run that raises is logged and marked
  FAILED and the others still run, except on a preemption (SIGTERM or Ctrl-C:
  the run saved its step), which stops the sweep; run it again to resume.
  Returns:
    run name -> FINISHED (before this call), DONE or FAILED.
  """
  todo = pending(runs, outdir)
  configs = {r.name: r.load_config() for r in todo}
  for config in configs.values():
    # This starts JAX's backend, which only this executor needs: printing
    # commands or launching subprocesses leaves the accelerators to them.
    validate_config(config, num_devices=jax.device_count())
  statuses = {r.name: FINISHED for r in runs}
  for i, run in enumerate(todo, 1):
    logging.info('[%d/%d] %s', i, len(todo), run.name)
    try:
      train_and_evaluate(configs[run.name], run.workdir(outdir),
                         progress=progress)
      statuses[run.name] = DONE
    except preemption.Preempted:
      raise
    except Exception:  # pylint: disable=broad-except
      logging.exception('Run %s failed.', run.name)
      statuses[run.name] = FAILED
  return statuses


def command(run: Run, outdir: str, train_script: str,
            python: str = sys.executable) -> List[str]:
  """The argv of experiments/train.py for `run`."""
  return [python, train_script, *run.flags(),
          f'--workdir={run.workdir(outdir)}']


def _last_line(path: str) -> str:
  """The last non-empty line of a text file (a failed run's error)."""
  with open(path, errors='replace') as f:
    lines = [line.strip() for line in f if line.strip()]
  return lines[-1] if lines else '(empty log)'


def run_subprocesses(runs: Sequence[Run], outdir: str, *, parallel: int,
                     train_script: str, python: str = sys.executable,
                     poll_seconds: float = 0.5) -> Dict[str, str]:
  """Trains the unfinished runs as `parallel` concurrent subprocesses of
  `train_script`, each logging to `<workdir>/train.log` (appended to, so a
  resumed run keeps its history). Their datasets are prepared here first
  (`prepare_datasets`), so that no two runs build one at once.

  Subprocesses inherit this environment: set XLA_FLAGS or
  CUDA_VISIBLE_DEVICES for them before calling. They run in their own
  session, so that Ctrl-C reaches this process only: on Ctrl-C or SIGTERM
  every running child gets one SIGTERM (train.py saves its step and exits;
  a second signal would stop it without saving), and KeyboardInterrupt is
  raised once they have exited.
  Returns:
    run name -> FINISHED (before this call), DONE or FAILED.
  """
  if parallel < 1:
    raise ValueError(f'parallel must be >= 1, got {parallel}.')
  queue = pending(runs, outdir)
  prepare_datasets(r.load_config() for r in queue)
  statuses = {r.name: FINISHED for r in runs}
  total, active = len(queue), {}  # Popen -> (run, log file, start time).

  def interrupt(signum, frame):
    del signum, frame
    raise KeyboardInterrupt

  # Signal handlers can only be set in the main thread.
  main = threading.current_thread() is threading.main_thread()
  previous = signal.signal(signal.SIGTERM, interrupt) if main else None
  try:
    while queue or active:
      while queue and len(active) < parallel:
        run = queue.pop(0)
        os.makedirs(run.workdir(outdir), exist_ok=True)
        log = open(os.path.join(run.workdir(outdir), LOG_FILE), 'a')
        process = subprocess.Popen(command(run, outdir, train_script, python),
                                   stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        active[process] = (run, log, time.time())
        logging.info('[%d/%d] started %s (pid %d)',
                     total - len(queue), total, run.name, process.pid)
      time.sleep(poll_seconds)
      for process in [p for p in active if p.poll() is not None]:
        run, log, start = active.pop(process)
        log.close()
        ok = process.returncode == 0 and run.summary(outdir) is not None
        statuses[run.name] = DONE if ok else FAILED
        if ok:
          logging.info('%s done in %.0f s', run.name, time.time() - start)
        else:
          logging.error('%s failed (exit code %d): %s\nIts log: %s',
                        run.name, process.returncode, _last_line(log.name),
                        log.name)
  except KeyboardInterrupt:
    if main:
      signal.signal(signal.SIGTERM, signal.SIG_IGN)  # One signal is enough.
    for process in active:
      process.send_signal(signal.SIGTERM)
    for process, (run, log, _) in active.items():
      process.wait()
      log.close()
      logging.warning('%s stopped (exit code %d); run again to resume it.',
                      run.name, process.returncode)
    raise
  finally:
    if main:
      signal.signal(signal.SIGTERM, previous)
  return statuses


def _command_lines(runs: Sequence[Run], outdir: str, train_script: str,
                   python: str) -> str:
  """`command` of each run as a shell line, each ending in a newline (line i
  of a job array's file is array task i's command)."""
  return ''.join(shlex.join(command(r, outdir, train_script, python)) + '\n'
                 for r in runs)


def write_commands(runs: Sequence[Run], outdir: str, *, train_script: str,
                   print_commands: bool, job_array: Optional[str],
                   python: str = sys.executable) -> None:
  """Prints one shell command per unfinished run (`print_commands`) and/or
  writes them to `job_array`, one a line, for a scheduler's job array (line
  i: `sed -n ${SLURM_ARRAY_TASK_ID}p FILE` with --array=1-N)."""
  todo = pending(runs, outdir)
  lines = _command_lines(todo, outdir, train_script, python)
  if print_commands:
    print(lines, end='')
  if job_array:
    fileio.atomic_write(job_array, lines)
    print(f'{job_array}: {len(todo)} commands; e.g. sbatch '
          f'--array=1-{len(todo)} --wrap \'eval "$(sed -n '
          f'${{SLURM_ARRAY_TASK_ID}}p {job_array})"\'')
  if len(todo) < len(runs):
    print(f'{len(runs) - len(todo)} finished runs left out.')


def submit_slurm(runs: Sequence[Run], outdir: str, *, train_script: str,
                 sbatch_args: Sequence[str] = (),
                 python: str = sys.executable) -> Optional[str]:
  """Submits the unfinished runs to SLURM as one job array (`sbatch`): task
  i trains run i, logging to `<outdir>/slurm/<job>_<i>.log`. Their datasets
  are prepared here first (`prepare_datasets`). The job id and its runs go
  to `<outdir>/slurm_job.json`, which `slurm_statuses` reads.

  Args:
    sbatch_args: more sbatch options (partition, time, GPUs, ...).
  Returns:
    The job id, or None when every run is finished.
  Raises:
    RuntimeError (with sbatch's message) if sbatch is missing or fails.
  """
  todo = pending(runs, outdir)
  if not todo:
    print('Every run is finished: nothing to submit.')
    return None
  prepare_datasets(r.load_config() for r in todo)
  directory = os.path.join(outdir, SLURM_DIR)
  os.makedirs(directory, exist_ok=True)
  commands = os.path.join(directory, f'commands_{time.time_ns()}.txt')
  fileio.atomic_write(commands, _command_lines(todo, outdir, train_script,
                                               python))
  argv = ['sbatch', '--parsable', f'--array=1-{len(todo)}',
          f'--job-name={os.path.basename(os.path.abspath(outdir))}',
          f'--output={os.path.join(directory, "%A_%a.log")}', *sbatch_args,
          '--wrap', f'eval "$(sed -n ${{SLURM_ARRAY_TASK_ID}}p '
          f'{shlex.quote(commands)})"']
  try:
    done = subprocess.run(argv, capture_output=True, text=True)
  except FileNotFoundError:
    raise RuntimeError('--sbatch needs SLURM\'s sbatch on PATH; without '
                       'SLURM use --parallel or --job_array.') from None
  if done.returncode:
    raise RuntimeError(f'sbatch refused the job array ({shlex.join(argv)}): '
                       f'{done.stderr.strip()}')
  # '<id>' or, on multi-cluster setups, '<id>;<cluster>'.
  job_id = done.stdout.strip().split(';')[0]
  fileio.atomic_write_json(os.path.join(outdir, SLURM_JOB_FILE), {
      'job_id': job_id, 'runs': [r.name for r in todo],
      'logs': os.path.join(directory, f'{job_id}_<task>.log')})
  print(f'Submitted SLURM job array {job_id}: {len(todo)} runs, logs in '
        f'{directory}/. When it is done, the same command with --report_only '
        'tables them.')
  return job_id


def _slurm_state(task: str) -> Optional[str]:
  """An array task's JobState from `scontrol`, or None if SLURM does not
  know it (any more)."""
  try:
    text = subprocess.run(['scontrol', '-o', 'show', 'job', task],
                          capture_output=True, text=True, timeout=60,
                          check=True).stdout
  except (OSError, subprocess.SubprocessError):
    return None
  state = re.search(r'\bJobState=(\S+)', text)
  return state.group(1) if state else None


def slurm_statuses(runs: Sequence[Run], outdir: str) -> Dict[str, str]:
  """The runs' statuses while or after the last `submit_slurm` job runs:
  FINISHED with a summary, FAILED when its array task is over without one
  (logged with the task's job id and log), else PENDING."""
  statuses = {r.name: FINISHED if r.summary(outdir) else PENDING
              for r in runs}
  job = fileio.read_json_or_none(os.path.join(outdir, SLURM_JOB_FILE))
  if not job:
    return statuses
  for i, name in enumerate(job['runs'], 1):
    if statuses.get(name) != PENDING:
      continue
    task = f'{job["job_id"]}_{i}'
    state = _slurm_state(task)
    if state in SLURM_FINAL_STATES:  # Over, and no summary.
      statuses[name] = FAILED
      logging.error('%s failed: SLURM job %s ended %s without a summary. '
                    'Its log: %s', name, task, state,
                    job['logs'].replace('<task>', str(i)))
  return statuses


def launch(runs: Sequence[Run], outdir: str, *, train_script: str,
           parallel: int = 0, print_commands: bool = False,
           job_array: Optional[str] = None, report_only: bool = False,
           sbatch: bool = False, sbatch_args: Sequence[str] = (),
           python: str = sys.executable,
           progress: bool = True) -> Optional[Dict[str, str]]:
  """Runs a sweep's unfinished runs, or writes their commands.

  Args:
    runs: from `mmjax.sweeps.runs.make_runs`.
    outdir: the sweep's directory; run r works in `<outdir>/<r.name>`.
    train_script: path of experiments/train.py, as the commands name it.
    parallel: 0 runs in this process, one run after another; N >= 1 runs N
      subprocesses of `train_script` at a time.
    print_commands: print one shell command per unfinished run instead.
    job_array: write them to this file instead (`write_commands`). With
      print_commands, both.
    report_only: run nothing; unfinished runs are PENDING (e.g. while a
      scheduler runs them), or FAILED if their SLURM array task (the last
      `sbatch` submission's) ended without a summary.
    sbatch: submit the unfinished runs to SLURM as one job array
      (`submit_slurm`, with `sbatch_args`) instead.
    python: the interpreter of the subprocesses and commands.
    progress: show each in-process run's progress bar.
  Returns:
    run name -> FINISHED, DONE, FAILED or PENDING, or None when only
    commands were written or submitted.
  Raises:
    ValueError if a run's workdir holds another config's run.
  """
  check_workdirs(runs, outdir)
  if report_only:
    return slurm_statuses(runs, outdir)
  if sbatch:
    submit_slurm(runs, outdir, train_script=train_script,
                 sbatch_args=sbatch_args, python=python)
    return None
  if print_commands or job_array:
    write_commands(runs, outdir, train_script=train_script,
                   print_commands=print_commands, job_array=job_array,
                   python=python)
    return None
  if parallel:
    return run_subprocesses(runs, outdir, parallel=parallel,
                            train_script=train_script, python=python)
  return run_in_process(runs, outdir, progress=progress)
