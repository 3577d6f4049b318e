"""Sweeps: many training runs of one config, each with its own overrides and
work directory, run in this process, as parallel `experiments/train.py`
subprocesses, or written out as shell commands for a scheduler.

A run is (name, config file with its variant, overrides); the seed is the
override `seed`, like any other field. Its workdir is `<outdir>/<name>`. A run
whose workdir holds `summary.json` is finished and is not run again; an
interrupted one resumes from its checkpoints, because training resumes from
the workdir.

A sweep is a list of override dicts, `{'model.head_dropout': 0.1, 'seed': 0}`,
with the keys and values of `--config.a.b=value` flags: each value becomes the
text of that flag (`format_value`) and is parsed by ml_collections' config
flag, so a run in this process and its printed command get the same config,
and an unknown field or a value of the wrong type is a ConfigError naming the
field before any run starts. Two kinds of key change the config argument
instead (`file.py:variant`, see configs/default.py): ':key' sets the variant's
`key=value` (':modalities' also sets the preprocessing for those modalities),
and 'model.fusion.name' is taken as ':fusion', so that the run gets that
method's knobs at their defaults rather than the config's method's knobs.
"""
import csv
import dataclasses
import hashlib
import importlib.util
import io
import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from typing import (Any, Callable, Dict, List, Mapping, Optional, Sequence,
                    Tuple)

from absl import flags
from absl import logging
import jax
import ml_collections
from ml_collections import config_flags

from mmjax import fileio
from mmjax.errors import ConfigError
from mmjax import experiment
from mmjax.train import preemption
from mmjax.validate import validate_config

SUMMARY_FILE = 'summary.json'  # What train_and_evaluate writes at the end.
LOG_FILE = 'train.log'  # A subprocess run's stdout and stderr.
FUSION_NAME = 'model.fusion.name'
_NAME_LIMIT = 100  # Longer run names are cut and end in a hash of the whole.


# -- Overrides and configs ----------------------------------------------------


def format_value(value: Any) -> str:
  """The `--config.a.b=` text of an override value: strings as they are
  (the flag parser reads them by the field's type), anything else as its
  Python literal, which the parsers of bool, number, tuple and dict fields
  read back."""
  return value if isinstance(value, str) else repr(value)


def _parse(config: str, overrides: Mapping[str, Any]
           ) -> ml_collections.ConfigDict:
  """Loads `config` ('file.py:variant') with `--config.<key>=<value>` flags
  parsed exactly as experiments/train.py parses them (a private FlagValues,
  not absl's global FLAGS)."""
  argv = ['sweep', f'--config={config}'] + [
      f'--config.{key}={format_value(value)}'
      for key, value in overrides.items()]
  flag_values = flags.FlagValues()
  holder = config_flags.DEFINE_config_file(
      'config', flag_values=flag_values, sys_argv=argv, lock_config=True)
  flag_values(argv)
  return holder.value


def _check_field(config: ml_collections.ConfigDict, path: str) -> None:
  """Raises ConfigError(path) unless `path` names a field of `config`."""
  node = config
  parts = path.split('.')
  for i, part in enumerate(parts):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      parent = '.'.join(parts[:i])
      valid = (f'valid fields are {", ".join(sorted(node.keys()))}'
               if isinstance(node, ml_collections.ConfigDict) else
               f'{parent} is a {type(node).__name__}, not a group of fields')
      raise ConfigError(path, f'no such field ({parent or "the config"} '
                        f'has no {part!r}; {valid}); fix the override\'s '
                        'key.')
    node = node[part]


def load_config(config: str, overrides: Mapping[str, Any]
                ) -> ml_collections.ConfigDict:
  """The config `config` ('file.py:variant') with `overrides` applied.

  Raises:
    ConfigError naming the first override whose field does not exist or
    whose value does not parse as the field's type.
  """
  base = _parse(config, {})
  for key in overrides:
    _check_field(base, key)
  try:
    return _parse(config, overrides)
  except flags.Error:
    # absl stops at the first bad flag; find its field by parsing each alone.
    for key, value in overrides.items():
      try:
        _parse(config, {key: value})
      except flags.Error as e:
        raise ConfigError(key, f'cannot take {format_value(value)!r}: {e}'
                          ) from None
    raise


def with_variant(config: str, variant: Mapping[str, str]) -> str:
  """'file.py:a=1' + {'b': '2'} -> 'file.py:a=1,b=2' (configs read the
  variant left to right, so later keys win)."""
  if not variant:
    return config
  path, _, current = config.partition(':')
  items = [current] if current else []
  items += [f'{key}={value}' for key, value in variant.items()]
  return f'{path}:{",".join(items)}'


# -- Runs ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run of a sweep.

  Attributes:
    name: its directory under the sweep's outdir.
    config: the config argument, 'file.py:variant'.
    overrides: dotted config field -> value (`--config.<field>=<value>`).
    settings: what the sweep varies for this run (its keys as the sweep
      gives them), for tables.
  """
  name: str
  config: str
  overrides: Mapping[str, Any]
  settings: Mapping[str, Any]

  def workdir(self, outdir: str) -> str:
    return os.path.join(outdir, self.name)

  def load_config(self) -> ml_collections.ConfigDict:
    return load_config(self.config, self.overrides)

  def flags(self) -> List[str]:
    """experiments/train.py's config flags (--config first, as absl needs)."""
    return [f'--config={self.config}'] + [
        f'--config.{key}={format_value(value)}'
        for key, value in self.overrides.items()]

  def summary(self, outdir: str) -> Optional[Dict[str, Any]]:
    """The run's summary.json, or None while it is not finished (also when
    the file cannot be read: the run is then trained again, which rewrites
    it)."""
    return fileio.read_json_or_none(
        os.path.join(self.workdir(outdir), SUMMARY_FILE))


def run_name(settings: Mapping[str, Any]) -> str:
  """A directory name for a run: 'model.head_dropout=0.1,seed=0'. Characters
  other than letters, digits and . _ , = + - become '_'."""
  text = ','.join(f'{key.lstrip(":")}={format_value(value)}'
                  for key, value in settings.items()) or 'base'
  name = re.sub(r'[^A-Za-z0-9._,=+-]', '_', text)
  if len(name) > _NAME_LIMIT:
    digest = hashlib.sha1(text.encode()).hexdigest()[:8]
    name = f'{name[:_NAME_LIMIT - 9]}-{digest}'
  return name


def make_runs(config: str, sweep: Sequence[Mapping[str, Any]],
              base_overrides: Optional[Mapping[str, Any]] = None
              ) -> List[Run]:
  """The runs of `sweep` (one override dict each) on `config`, every one with
  `base_overrides` first, named by `run_name` of its sweep dict.

  Every run's config is loaded here, so that an unknown field or a bad value
  fails before anything runs.

  Raises:
    ConfigError for a bad override; ValueError for two runs of one name.
  """
  runs, seen = [], {}
  for settings in sweep:
    variant, overrides = {}, dict(base_overrides or {})
    for key, value in settings.items():
      key = ':fusion' if key == FUSION_NAME else key
      if key.startswith(':'):
        variant[key[1:]] = format_value(value)
      else:
        overrides[key] = value
    if 'fusion' in variant and FUSION_NAME in overrides:
      raise ValueError(
          f'{FUSION_NAME} is overridden for every run, which would replace '
          f'the method this run picks ({variant["fusion"]}); choose the '
          'method in one place.')
    run = Run(name=run_name(settings), config=with_variant(config, variant),
              overrides=overrides, settings=dict(settings))
    if run.name in seen:
      raise ValueError(f'runs {dict(seen[run.name])} and {dict(settings)} '
                       f'have the same name {run.name!r}; a sweep lists '
                       'each setting once.')
    seen[run.name] = settings
    run.load_config()
    runs.append(run)
  return runs


def grid(axes: Mapping[str, Sequence[Any]]) -> List[Dict[str, Any]]:
  """Every combination of the values of `axes` (the first key varies
  slowest): grid({'a': [1, 2], 'seed': [0, 1]}) -> 4 override dicts."""
  keys = list(axes)
  return [dict(zip(keys, values))
          for values in itertools.product(*(axes[k] for k in keys))]


def cross(left: Sequence[Mapping[str, Any]],
          right: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
  """Each dict of `left` merged with each of `right` (keys must differ)."""
  out = []
  for a in left:
    for b in right:
      shared = set(a) & set(b)
      if shared:
        raise ValueError(f'{", ".join(sorted(shared))} is set twice in one '
                         'run; give each field in one place.')
      out.append({**a, **b})
  return out


def parse_axis(text: str) -> Tuple[str, List[str]]:
  """A --grid axis: 'key=v1,v2,v3' -> (key, [v1, v2, v3]). Values stay
  strings (the field's type parses them); one holding a comma needs a sweep
  file."""
  key, sep, values = text.partition('=')
  if not sep or not key.strip() or not values:
    raise ValueError(f'{text!r}: expected key=value1,value2,...')
  return key.strip(), values.split(',')


def parse_settings(text: str) -> Dict[str, str]:
  """One --list run: 'k1=v1,k2=v2' -> {k1: v1, k2: v2}."""
  out = {}
  for item in text.split(','):
    key, sep, value = item.partition('=')
    if not sep or not key.strip():
      raise ValueError(f'{text!r}: expected key1=value1,key2=value2,...')
    out[key.strip()] = value
  return out


def load_sweep_file(path: str) -> List[Dict[str, Any]]:
  """The override dicts of a sweep file: a Python file whose `get_sweep()`
  returns a list of them (e.g. built with `grid`)."""
  spec = importlib.util.spec_from_file_location('mmjax_sweep_file', path)
  if spec is None or not os.path.exists(path):
    raise ValueError(f'sweep file {path!r} not found.')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, 'get_sweep'):
    raise ValueError(f'sweep file {path} has no get_sweep() function.')
  sweep = module.get_sweep()
  if not isinstance(sweep, (list, tuple)) or not all(
      isinstance(s, Mapping) for s in sweep):
    raise ValueError(f'get_sweep() of {path} must return a list of '
                     f'{{field: value}} dicts, got {type(sweep).__name__}.')
  return [dict(s) for s in sweep]


# -- Running ------------------------------------------------------------------

FINISHED, DONE, FAILED, PENDING = 'finished', 'done', 'failed', 'pending'


def _flatten(tree: Mapping[str, Any], prefix: str = '') -> Dict[str, Any]:
  out = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      out.update(_flatten(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


def _check_workdirs(runs: Sequence[Run], outdir: str) -> None:
  """A started run's workdir (config.json is written when training starts)
  must hold this run's config: resuming or reusing it for another config
  would mix two experiments under one name. Fields only one side has (the
  code gained or lost a field since) do not count."""
  for run in runs:
    stored = fileio.read_json_or_none(
        os.path.join(run.workdir(outdir), 'config.json'))
    if stored is None:  # Not started, or torn: training rewrites it.
      continue
    stored = _flatten(stored)
    wanted = _flatten(json.loads(run.load_config().to_json_best_effort()))
    differ = [k for k in stored if k in wanted and stored[k] != wanted[k]]
    if differ:
      raise ValueError(
          f'{run.workdir(outdir)} holds a run of another config (' + ', '.join(
              f'{k}: {stored[k]!r} there, {wanted[k]!r} here'
              for k in differ[:3]) + '); use another outdir, or delete that '
          'directory to run it again.')


def failed(statuses: Mapping[str, str]) -> List[str]:
  """The names of the runs that failed, from a `launch` result."""
  return [name for name, status in statuses.items() if status == FAILED]


def pending(runs: Sequence[Run], outdir: str) -> List[Run]:
  """The runs that are not finished (no readable summary.json in their
  workdir)."""
  return [r for r in runs if r.summary(outdir) is None]


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
      experiment.train_and_evaluate(configs[run.name], run.workdir(outdir),
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
  resumed run keeps its history).

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


def launch(runs: Sequence[Run], outdir: str, *, train_script: str,
           parallel: int = 0, print_commands: bool = False,
           job_array: Optional[str] = None, report_only: bool = False,
           python: str = sys.executable,
           progress: bool = True) -> Optional[Dict[str, str]]:
  """Runs a sweep's unfinished runs, or writes their commands.

  Args:
    runs: from `make_runs`.
    outdir: the sweep's directory; run r works in `<outdir>/<r.name>`.
    train_script: path of experiments/train.py, as the commands name it.
    parallel: 0 runs in this process, one run after another; N >= 1 runs N
      subprocesses of `train_script` at a time.
    print_commands: print one shell command per unfinished run instead.
    job_array: write them to this file instead, one a line, for a
      scheduler's job array (line i: `sed -n ${SLURM_ARRAY_TASK_ID}p FILE`
      with --array=1-N). With print_commands, both.
    report_only: run nothing; unfinished runs are PENDING (e.g. while a
      scheduler runs them).
    python: the interpreter of the subprocesses and commands.
    progress: show each in-process run's progress bar.
  Returns:
    run name -> FINISHED, DONE, FAILED or PENDING, or None when only
    commands were written.
  """
  _check_workdirs(runs, outdir)
  todo = pending(runs, outdir)
  if report_only:
    return {r.name: PENDING if r in todo else FINISHED for r in runs}
  if print_commands or job_array:
    lines = [shlex.join(command(r, outdir, train_script, python))
             for r in todo]
    if print_commands:
      print('\n'.join(lines))
    if job_array:
      fileio.atomic_write(job_array, ''.join(line + '\n' for line in lines))
      print(f'{job_array}: {len(lines)} commands; e.g. sbatch '
            f'--array=1-{len(lines)} --wrap \'eval "$(sed -n '
            f'${{SLURM_ARRAY_TASK_ID}}p {job_array})"\'')
    if len(todo) < len(runs):
      print(f'{len(runs) - len(todo)} finished runs left out.')
    return None
  if parallel:
    return run_subprocesses(runs, outdir, parallel=parallel,
                            train_script=train_script, python=python)
  return run_in_process(runs, outdir, progress=progress)


# -- Tables -------------------------------------------------------------------

Column = Tuple[str, str, Callable[[Any], str]]  # (key, header, formatter)


def format_number(value: Any) -> str:
  """Table cell text: '-' for None, ints with thousands separators, floats to
  4 significant digits."""
  if value is None:
    return '-'
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return str(value)
  if isinstance(value, int):
    return f'{value:,}'
  return f'{value:.4g}'


def markdown_table(rows: Sequence[Mapping[str, Any]],
                   columns: Sequence[Column]) -> str:
  """A Markdown table, one row per dict; a missing key shows as '-'."""
  lines = ['| ' + ' | '.join(c[1] for c in columns) + ' |',
           '|' + '---|' * len(columns)]
  for row in rows:
    lines.append('| ' + ' | '.join(
        fmt(row.get(key)) for key, _, fmt in columns) + ' |')
  return '\n'.join(lines)


def write_csv(rows: Sequence[Mapping[str, Any]], keys: Sequence[str],
              path: str) -> None:
  """`rows` as CSV with columns `keys` (a missing value is an empty cell)."""
  text = io.StringIO()
  writer = csv.DictWriter(text, fieldnames=list(keys), extrasaction='ignore')
  writer.writeheader()
  writer.writerows(rows)
  fileio.atomic_write(path, text.getvalue())


def summary_rows(runs: Sequence[Run], outdir: str,
                 statuses: Mapping[str, str]) -> List[Dict[str, Any]]:
  """One row per run: its settings, status, final eval metrics, parameter
  count, steps/s and wall time (of the run's last invocation: a resumed
  run counts from where it resumed)."""
  rows = []
  for run in runs:
    summary = run.summary(outdir) or {}
    row = {'run': run.name, **{k: format_value(v)
                               for k, v in run.settings.items()},
           'status': statuses[run.name]}
    row.update(summary.get('eval', {}))
    for key in ('num_params', 'steps_per_second', 'wall_time_seconds'):
      row[key] = summary.get(key)
    rows.append(row)
  return rows


def write_summary(runs: Sequence[Run], outdir: str,
                  statuses: Mapping[str, str], stem: str = 'ablation') -> str:
  """Writes `<outdir>/<stem>.csv` and `.md` of `summary_rows`; returns the
  Markdown table."""
  rows = summary_rows(runs, outdir, statuses)
  os.makedirs(outdir, exist_ok=True)  # Nothing may have run yet.
  settings = list(dict.fromkeys(k for r in runs for k in r.settings))
  metrics = sorted({k for r in runs for k in (r.summary(outdir) or {}).get(
      'eval', {})})
  keys = ['run', *settings, 'status', *metrics, 'num_params',
          'steps_per_second', 'wall_time_seconds']
  write_csv(rows, keys, os.path.join(outdir, f'{stem}.csv'))
  table = markdown_table(rows, [(k, k, format_number) for k in keys])
  fileio.atomic_write(os.path.join(outdir, f'{stem}.md'), table + '\n')
  return table
