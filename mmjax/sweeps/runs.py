"""The runs of a sweep, their status and their summary table.

A run is (name, config file with its variant, overrides); the seed is the
override `seed`, like any other field. Its workdir is `<outdir>/<name>`. A run
whose workdir holds `summary.json` is finished and is not run again; an
interrupted one resumes from its checkpoints, because training resumes from
the workdir.
"""
import dataclasses
import hashlib
import json
import os
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence

import ml_collections
from flax import traverse_util

from mmjax import fileio
from mmjax import reporting
from mmjax.experiment import SUMMARY_FILE
from mmjax.sweeps import overrides as overrides_lib

FUSION_NAME = 'model.fusion.name'
_NAME_LIMIT = 100  # Longer run names are cut and end in a hash of the whole.

# A run's status in a launch's result: finished before the launch, trained
# by it, failed in it, or not run (commands written, or report only).
FINISHED, DONE, FAILED, PENDING = 'finished', 'done', 'failed', 'pending'


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
    return overrides_lib.load_config(self.config, self.overrides)

  def flags(self) -> List[str]:
    """experiments/train.py's config flags."""
    return overrides_lib.config_flags_of(self.config, self.overrides)

  def summary(self, outdir: str) -> Optional[Dict[str, Any]]:
    """The run's summary.json, or None while it is not finished (also when
    the file cannot be read: the run is then trained again, which rewrites
    it)."""
    return fileio.read_json_or_none(
        os.path.join(self.workdir(outdir), SUMMARY_FILE))


def run_name(settings: Mapping[str, Any]) -> str:
  """A directory name for a run: 'model.head_dropout=0.1,seed=0'. Characters
  other than letters, digits and . _ , = + - become '_'."""
  text = ','.join(f'{key.lstrip(":")}={overrides_lib.format_value(value)}'
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
        variant[key[1:]] = overrides_lib.format_value(value)
      else:
        overrides[key] = value
    if 'fusion' in variant and FUSION_NAME in overrides:
      raise ValueError(
          f'{FUSION_NAME} is overridden for every run, which would replace '
          f'the method this run picks ({variant["fusion"]}); choose the '
          'method in one place.')
    run = Run(name=run_name(settings),
              config=overrides_lib.with_variant(config, variant),
              overrides=overrides, settings=dict(settings))
    if run.name in seen:
      raise ValueError(f'runs {dict(seen[run.name])} and {dict(settings)} '
                       f'have the same name {run.name!r}; a sweep lists '
                       'each setting once.')
    seen[run.name] = settings
    run.load_config()
    runs.append(run)
  return runs


def pending(runs: Sequence[Run], outdir: str) -> List[Run]:
  """The runs that are not finished (no readable summary.json in their
  workdir)."""
  return [r for r in runs if r.summary(outdir) is None]


def failed(statuses: Mapping[str, str]) -> List[str]:
  """The names of the runs that failed, from a launch's result."""
  return [name for name, status in statuses.items() if status == FAILED]


def check_workdirs(runs: Sequence[Run], outdir: str) -> None:
  """A started run's workdir (config.json is written when training starts)
  must hold this run's config: resuming or reusing it for another config
  would mix two experiments under one name. Fields only one side has (the
  code gained or lost a field since) do not count.

  Raises:
    ValueError naming the workdir and the first fields that differ.
  """
  for run in runs:
    stored = fileio.read_json_or_none(
        os.path.join(run.workdir(outdir), 'config.json'))
    if stored is None:  # Not started, or torn: training rewrites it.
      continue
    stored = traverse_util.flatten_dict(stored, sep='.')
    wanted = traverse_util.flatten_dict(
        json.loads(run.load_config().to_json_best_effort()), sep='.')
    differ = [k for k in stored if k in wanted and stored[k] != wanted[k]]
    if differ:
      raise ValueError(
          f'{run.workdir(outdir)} holds a run of another config (' + ', '.join(
              f'{k}: {stored[k]!r} there, {wanted[k]!r} here'
              for k in differ[:3]) + '); use another outdir, or delete that '
          'directory to run it again.')


def summary_rows(runs: Sequence[Run], outdir: str,
                 statuses: Mapping[str, str]) -> List[Dict[str, Any]]:
  """One row per run: its settings, status, final eval metrics, parameter
  count, steps/s and wall time (of the run's last invocation: a resumed
  run counts from where it resumed)."""
  rows = []
  for run in runs:
    summary = run.summary(outdir) or {}
    row = {'run': run.name,
           **{k: overrides_lib.format_value(v)
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
  settings = list(dict.fromkeys(k for r in runs for k in r.settings))
  metrics = sorted({k for r in runs for k in (r.summary(outdir) or {}).get(
      'eval', {})})
  keys = ['run', *settings, 'status', *metrics, 'num_params',
          'steps_per_second', 'wall_time_seconds']
  return reporting.write_tables(
      summary_rows(runs, outdir, statuses), keys,
      [(k, k, reporting.format_number) for k in keys],
      os.path.join(outdir, stem))
