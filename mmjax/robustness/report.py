"""Writes the protocol's results: robustness.json, robustness.md (tables) and
robustness_<modality>.png (the metric vs the noise level, one line per noise
type; the baseline's curves dashed when there is one)."""
import os
from typing import List, Mapping, Optional

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mmjax import fileio
from mmjax import reporting

RESULTS_FILE = 'robustness.json'
TABLE_FILE = 'robustness.md'


def markdown(results: Mapping) -> str:
  """The missing-modality table and one row per noise curve (its values at
  every level, relative and, with a baseline, effective robustness)."""
  metric = results['metric']
  effective = results.get('effective_robustness')
  curves = [(m, n, c) for m, by_noise in results['noise'].items()
            for n, c in by_noise.items()]
  levels = [level for level, _ in curves[0][2]] if curves else []
  value = reporting.fixed('{:.4f}')
  missing = reporting.markdown_table(
      [{'subset': k, 'value': v} for k, v in results['missing'].items()],
      [('subset', 'modalities given', reporting.text),
       ('value', metric, value)])
  noise = reporting.markdown_table(
      [{'modality': m, 'noise': n, **dict(enumerate(v for _, v in curve)),
        'relative': results['relative_robustness'][m][n],
        'effective': effective[m][n] if effective else None}
       for m, n, curve in curves],
      [('modality', 'modality', reporting.text),
       ('noise', 'noise', reporting.text)] +
      [(i, f'{level:g}', value) for i, level in enumerate(levels)] +
      [('relative', 'relative robustness', value)] +
      ([('effective', 'effective robustness', reporting.fixed('{:+.4f}'))]
       if effective else []))
  lines = [f'# Robustness: {metric} at step {results["step"]}', '',
           '## Missing modalities', '', missing, '',
           f'## Noise ({metric} at each level)', '', noise]
  if effective:
    b = results['baseline']
    lines += ['', f'Effective robustness against {b["workdir"]} (step '
              f'{b["step"]}, {b["fusion"]} fusion), summed over the levels.']
  return '\n'.join(lines) + '\n'


def plot(results: Mapping, modality: str,
         baseline: Optional[Mapping] = None) -> Figure:
  """The metric vs the level for each noise of `modality` (dashed: the
  baseline's; dotted: the metric without `modality`)."""
  fig = Figure(figsize=(5, 3.5))
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  for i, (noise, curve) in enumerate(results['noise'][modality].items()):
    color = f'C{i}'
    ax.plot(*zip(*curve), marker='o', color=color, label=noise)
    if baseline:
      ax.plot(*zip(*baseline['noise'][modality][noise]), linestyle='--',
              color=color, label=f'{noise} (baseline)')
  # Where a curve would end if the noise erased the modality: the metric
  # with it absent (the other modalities alone).
  every = next(iter(results['missing'])).split('+')  # Subsets: all first.
  absent = '+'.join(m for m in every if m != modality)
  if absent in results['missing']:
    ax.axhline(results['missing'][absent], color='gray', linestyle=':',
               label=f'without {modality}')
  ax.set_xlabel('noise level')
  ax.set_ylabel(results['metric'])
  ax.set_title(f'{modality} (step {results["step"]})')
  ax.grid(alpha=0.3)
  ax.legend(fontsize='small')
  fig.tight_layout()
  return fig


def write(results: Mapping, output_dir: str,
          baseline: Optional[Mapping] = None) -> List[str]:
  """Writes the JSON, the tables and one plot per modality to `output_dir`
  (created if needed); returns the paths written."""
  os.makedirs(output_dir, exist_ok=True)
  paths = [os.path.join(output_dir, name) for name in (RESULTS_FILE,
                                                       TABLE_FILE)]
  fileio.atomic_write_json(paths[0], results)
  fileio.atomic_write(paths[1], markdown(results))
  for modality in results['noise']:
    paths.append(os.path.join(output_dir, f'robustness_{modality}.png'))
    plot(results, modality, baseline).savefig(paths[-1], dpi=100)
  return paths
