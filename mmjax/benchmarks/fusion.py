"""Fusion benchmark: fusion variants x seeds on one config, trained as a
resumable sweep (`mmjax.sweeps`), then one row per variant: the task metric
as mean and 95% confidence interval over seeds, parameters, and the training
step's FLOPs per example, examples/s, memory and compile time
(`mmjax.benchmarks.throughput`). `experiments/benchmark_fusion.py` is the
command-line front end.

Files written into the outdir:
  <run>/            each run's workdir (`mmjax.sweeps`)
  bench/<variant>.json  `throughput.benchmark` of the variant (kept, so a
                    rerun measures nothing again)
  results.csv, results.md   the table
  metric_vs_flops.png, metric_vs_params.png   metric (mean, 95% CI error
                    bars) against XLA FLOPs per example and parameters
  robustness_<modality>.png   where runs hold a robustness.json (below)

Robustness hook: a run's workdir may hold `robustness.json`, written by the
robustness evaluation:
  {"noise": {modality: {noise_type: [[level, metric], ...]}},
   "missing": {subset: metric}}
Each modality gets a plot of metric against noise level (one panel per noise
type, one line per variant: mean and 95% CI over the seeds that have the
file), and every `missing` subset a column `missing[<subset>]` (mean over
seeds) in results.csv.
"""
import collections
import dataclasses
import math
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from absl import logging
import ml_collections
import numpy as np
from scipy import stats

from mmjax import data
from mmjax import fileio
from mmjax import models  # noqa: F401  (registers the fusion methods)
from mmjax import reporting
from mmjax import tasks  # noqa: F401  (registers the tasks)
from mmjax.benchmarks import throughput
from mmjax.registry import FUSIONS, TASKS
from mmjax.sweeps import launch as launch_lib
from mmjax.sweeps import runs as runs_lib

ROBUSTNESS_FILE = 'robustness.json'
# The step's memory is XLA's analysis of the compiled program (arguments and
# temporaries, per device): a process's peak (what the allocator or RSS
# reports) covers every run before it, not this variant alone.
_MEMORY_KEYS = ('xla_argument_bytes', 'xla_temp_bytes')
# The benchmark reports no MFU, so the peak FLOP/s product `throughput` times
# is kept as small as possible.
_PEAK_SIZES = (128,)


@dataclasses.dataclass(frozen=True)
class Variant:
  """A fusion method with knob settings, e.g. 'mbt:fusion_layer=1'.

  Attributes:
    label: how tables and plots name it.
    settings: its sweep overrides: ':fusion' (the method, chosen through the
      config variant so that its knobs start at their defaults) and
      'model.fusion.<knob>' (or any dotted field) -> value.
  """
  label: str
  settings: Mapping[str, str]


def parse_variants(text: str) -> List[Variant]:
  """'concat,mbt:fusion_layer=1,num_bottlenecks=4,gated' -> three variants.

  A comma-separated item without '=' starts a variant (its method); ':' after
  the method starts its knobs, and items with '=' add knobs to the variant
  before them. A knob without a dot is a field of model.fusion; with dots,
  any config field.
  """
  variants: List[Tuple[str, Dict[str, str]]] = []
  for item in filter(None, (s.strip() for s in text.split(','))):
    method, colon, knob = item.partition(':')
    if colon or '=' not in item:
      variants.append((method, {}))
      item = knob
    if not item:
      continue
    key, sep, value = item.partition('=')
    if not sep or not key or not variants:
      raise ValueError(f'--methods {text!r}: {item!r} is not a knob=value of '
                       'a method; e.g. concat,mbt:fusion_layer=1,gated')
    variants[-1][1][key if '.' in key else f'model.fusion.{key}'] = value
  out = []
  for method, knobs in variants:
    label = method + (':' + ','.join(
        f'{k.removeprefix("model.fusion.")}={v}' for k, v in knobs.items())
                      if knobs else '')
    out.append(Variant(label, {':fusion': method, **knobs}))
  return out


def registered_variants() -> List[Variant]:
  """Every registered fusion method, with its default knobs."""
  return parse_variants(','.join(FUSIONS.names()))


def mean_ci(values: Sequence[float], confidence: float = 0.95
            ) -> Tuple[float, Optional[float]]:
  """Mean of `values` and the half-width of its Student-t confidence
  interval, t_{(1+c)/2, n-1} * s / sqrt(n) with s the sample standard
  deviation (None for fewer than two values)."""
  values = np.asarray(values, np.float64)
  mean = float(values.mean())
  if len(values) < 2:
    return mean, None
  sem = values.std(ddof=1) / math.sqrt(len(values))
  return mean, float(stats.t.ppf((1 + confidence) / 2, len(values) - 1) * sem)


def task_metric(config: ml_collections.ConfigDict) -> str:
  """The eval metric the config's task selects checkpoints by."""
  spec = data.DatasetSpec(config.dataset, tuple(config.model.modalities))
  pp_train = data.preprocessing(config.input, spec)[0]
  task = TASKS.get(config.task.name, field='task.name')(config.task, spec,
                                                       pp_train)
  return task.best_metric


def measure(config: ml_collections.ConfigDict, path: str, *, steps: int,
            warmup: int) -> Dict[str, Any]:
  """`throughput.benchmark` of `config`, read from `path` if it was measured
  before (and the file is readable), else measured in this process and
  written there."""
  result = fileio.read_json_or_none(path)
  if result is not None:
    return result
  result = throughput.benchmark(config, steps=steps, warmup=warmup,
                                peak_sizes=_PEAK_SIZES)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fileio.atomic_write_json(path, result)
  return result


def _robustness(runs: Sequence[runs_lib.Run], outdir: str) -> List[Dict]:
  """The robustness.json of every run that has a readable one."""
  out = []
  for run in runs:
    results = fileio.read_json_or_none(
        os.path.join(run.workdir(outdir), ROBUSTNESS_FILE))
    if results is not None:
      out.append(results)
  return out


def variant_row(variant: Variant, runs: Sequence[runs_lib.Run], outdir: str,
                metric: str, bench_result: Optional[Mapping[str, Any]]
                ) -> Dict[str, Any]:
  """One results row: `metric` over the variant's finished runs, the
  parameter count and the bench measurements."""
  summaries = [s for s in (r.summary(outdir) for r in runs) if s]
  values = [s['eval'][metric] for s in summaries]
  row = {'variant': variant.label, 'seeds': len(values),
         'runs': len(runs), f'{metric}_per_seed': ';'.join(
             f'{v:.6g}' for v in values)}
  if values:
    row[f'{metric}_mean'], row[f'{metric}_ci95'] = mean_ci(values)
    row['num_params'] = summaries[0]['num_params']
  if bench_result:
    batch = bench_result['batch_size']
    flops = bench_result.get('flops_per_step_xla')
    row.update(
        flops_per_example=flops / batch if flops else None,
        examples_per_second=bench_result.get('examples_per_second'),
        step_memory_bytes=sum(bench_result.get(k) or 0 for k in _MEMORY_KEYS),
        compile_seconds=bench_result.get('compile_seconds'))
  missing = collections.defaultdict(list)
  for result in _robustness(runs, outdir):
    for subset, value in result.get('missing', {}).items():
      missing[subset].append(value)
  row.update({f'missing[{k}]': float(np.mean(v)) for k, v in missing.items()})
  return row


def _mean_pm_ci(mean: Optional[float], ci: Optional[float]) -> str:
  if mean is None:
    return '-'
  return f'{mean:.4f}' + (f' ± {ci:.4f}' if ci is not None else '')


def columns(metric: str) -> List[str]:
  """The CSV columns before any `missing[...]` ones."""
  return ['variant', 'seeds', 'runs', f'{metric}_mean', f'{metric}_ci95',
          f'{metric}_per_seed', 'num_params', 'flops_per_example',
          'examples_per_second', 'step_memory_bytes', 'compile_seconds']


def _with_cells(rows: Sequence[Mapping[str, Any]], metric: str
                ) -> List[Dict[str, Any]]:
  """`rows` plus the text of the Markdown table's combined cells: the metric
  as 'mean ± CI half-width' and the finished seeds ('2 of 3' while some are
  not). The CSV leaves these keys out."""
  return [{**r, 'metric_cell': _mean_pm_ci(r.get(f'{metric}_mean'),
                                           r.get(f'{metric}_ci95')),
           'seeds_cell': str(r['seeds']) if r['seeds'] == r['runs'] else
                         f'{r["seeds"]} of {r["runs"]}'} for r in rows]


def _markdown_columns(metric: str) -> List[reporting.Column]:
  """The results table's columns (of `_with_cells` rows)."""
  return [
      ('variant', 'variant', reporting.text),
      ('seeds_cell', 'seeds', reporting.text),
      ('metric_cell', f'{metric} (mean ± 95% CI)', reporting.text),
      ('num_params', 'params', reporting.format_number),
      ('flops_per_example', 'MFLOP / example (XLA)',
       reporting.fixed('{:.3f}', 1e-6)),
      ('examples_per_second', 'train examples/s', reporting.fixed('{:.0f}')),
      ('step_memory_bytes', 'step memory MiB (XLA, per device)',
       reporting.fixed('{:.1f}', 2**-20)),
      ('compile_seconds', 'compile s', reporting.fixed('{:.1f}')),
  ]


def _figure(ncols: int = 1):
  # A Figure without pyplot: no global backend or figure registry, and the
  # PNG is drawn by Agg.
  from matplotlib import cycler
  from matplotlib import colormaps
  from matplotlib.figure import Figure
  fig = Figure(figsize=(5.5 * ncols, 4.2), layout='constrained')
  axes = fig.subplots(1, ncols, squeeze=False)[0]
  # 20 colours and 4 line styles: the 15 methods of a full benchmark stay
  # distinguishable (the default cycle repeats after 10).
  for ax in axes:
    ax.set_prop_cycle(cycler(color=colormaps['tab20'].colors) +
                      cycler(linestyle=['-', '--', ':', '-.'] * 5))
  return fig, axes


def plot_metric_vs(rows: Sequence[Mapping[str, Any]], metric: str, key: str,
                   xlabel: str, path: str) -> bool:
  """Metric (mean, 95% CI error bars) against `key` per variant (log x
  when it spans more than a decade).
  Returns False (and writes nothing) when no row has both."""
  points = [r for r in rows if r.get(key) and r.get(f'{metric}_mean')
            is not None]
  if not points:
    return False
  fig, (ax,) = _figure()
  for i, r in enumerate(points):
    ax.errorbar(r[key], r[f'{metric}_mean'], yerr=r.get(f'{metric}_ci95') or 0,
                fmt='o', capsize=4)
    # Alternate above / below, so that close points keep legible labels.
    ax.annotate(r['variant'], (r[key], r[f'{metric}_mean']), fontsize=8,
                xytext=(4, 4 if i % 2 == 0 else -11),
                textcoords='offset points')
  xs = [r[key] for r in points]
  if max(xs) > 10 * min(xs):  # Methods' costs span decades (tensor fusion).
    ax.set_xscale('log')
  else:
    ax.ticklabel_format(axis='x', style='sci', scilimits=(-3, 3))
  ax.set_xlabel(xlabel)
  ax.set_ylabel(f'eval {metric} (mean ± 95% CI over seeds)')
  ax.grid(alpha=0.3)
  fig.savefig(path, dpi=120)
  return True


def plot_robustness(
    variant_runs: Sequence[Tuple[Variant, Sequence[runs_lib.Run]]],
    outdir: str, metric: str) -> List[str]:
  """robustness_<modality>.png for every modality some run's robustness.json
  has noise results for; returns the paths written. `metric` names the
  y axis unless the files name theirs ('metric')."""
  # modality -> noise type -> variant label -> level -> [metric per seed].
  curves = collections.defaultdict(lambda: collections.defaultdict(
      lambda: collections.defaultdict(lambda: collections.defaultdict(list))))
  for variant, runs in variant_runs:
    for result in _robustness(runs, outdir):
      metric = result.get('metric', metric)  # What the evaluation measured.
      for modality, by_type in result.get('noise', {}).items():
        for noise, points in by_type.items():
          for level, value in points:
            curves[modality][noise][variant.label][level].append(value)
  paths = []
  for modality, by_type in sorted(curves.items()):
    fig, axes = _figure(len(by_type))
    for ax, (noise, by_variant) in zip(axes, sorted(by_type.items())):
      for label, by_level in by_variant.items():
        levels = sorted(by_level)
        means, cis = zip(*(mean_ci(by_level[x]) for x in levels))
        ax.errorbar(levels, means, yerr=[c or 0 for c in cis], marker='o',
                    capsize=3, label=label)
      ax.set_title(f'{modality}: {noise}')
      ax.set_xlabel('noise level')
      ax.set_ylabel(f'eval {metric} (mean ± 95% CI over seeds)')
      ax.grid(alpha=0.3)
      ax.legend(fontsize=7)
    path = os.path.join(outdir, f'robustness_{modality}.png')
    fig.savefig(path, dpi=120)
    paths.append(path)
  return paths


def run_benchmark(config: str, variants: Sequence[Variant],
                  seeds: Sequence[int], outdir: str, *,
                  base_overrides: Optional[Mapping[str, Any]] = None,
                  metric: Optional[str] = None, bench: bool = True,
                  bench_steps: int = 10, bench_warmup: int = 2,
                  **launch_kwargs
                  ) -> Optional[Tuple[List[Dict], str, List[str]]]:
  """Trains every variant x seed (resuming; finished runs are not run
  again), measures each variant's training step once, and writes the report.

  Args:
    config: the config argument, 'file.py:variant'.
    variants: from `parse_variants` or `registered_variants`.
    seeds: one run per seed and variant.
    outdir: the benchmark's directory (module docstring).
    base_overrides: field -> value for every run (e.g. the dataset).
    metric: the eval metric reported; default the task's `best_metric`.
    bench: measure the step (`throughput.benchmark`, in this process, after
      training).
    bench_steps, bench_warmup: its timed and warm-up steps.
    **launch_kwargs: how runs are launched (`mmjax.sweeps.launch.launch`).
  Returns:
    (rows, Markdown table, names of the runs that failed; the report covers
    the finished ones), or None when only commands were written.
  """
  if not variants or not seeds:
    raise ValueError('the benchmark needs at least one variant and one seed.')
  runs = runs_lib.make_runs(config, [{**v.settings, 'seed': s}
                                     for v in variants for s in seeds],
                            base_overrides)
  statuses = launch_lib.launch(runs, outdir, **launch_kwargs)
  if statuses is None:
    return None
  variant_runs = [(v, runs[i * len(seeds):(i + 1) * len(seeds)])
                  for i, v in enumerate(variants)]
  metric = metric or task_metric(runs[0].load_config())
  rows = []
  for variant, vruns in variant_runs:
    result = None
    if bench and any(r.summary(outdir) for r in vruns):
      result = measure(vruns[0].load_config(), os.path.join(
          outdir, 'bench', runs_lib.run_name(variant.settings) + '.json'),
                       steps=bench_steps, warmup=bench_warmup)
    rows.append(variant_row(variant, vruns, outdir, metric, result))
  keys = columns(metric)
  keys += sorted({k for r in rows for k in r if k not in keys})
  table = reporting.write_tables(_with_cells(rows, metric), keys,
                                 _markdown_columns(metric),
                                 os.path.join(outdir, 'results'))
  plot_metric_vs(rows, metric, 'flops_per_example',
                 'training FLOPs per example (XLA cost analysis)',
                 os.path.join(outdir, 'metric_vs_flops.png'))
  plot_metric_vs(rows, metric, 'num_params', 'parameters',
                 os.path.join(outdir, 'metric_vs_params.png'))
  plot_robustness(variant_runs, outdir, metric)
  logging.info('Results: %s', os.path.join(outdir, 'results.md'))
  return rows, table, runs_lib.failed(statuses)
