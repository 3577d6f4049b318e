"""Medians of benchmarks/host_memory/bench.json, per setting, over the first
three pairs (issue 21's "median of 3 runs") and over all of them.

  python benchmarks/host_memory/summarize.py  # writes summary.json beside it
"""
import json
import os
import statistics

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
  with open(os.path.join(HERE, 'bench.json')) as f:
    runs = json.load(f)
  summary = {}
  for setting in ('retained', 'not retained'):
    # Labels are 'r<N> retained' and 'r<N> not retained'.
    mine = [r for r in runs if r['label'].split(' ', 1)[1] == setting]
    for name, subset in (('first_3', mine[:3]), ('all', mine)):
      summary[f'{setting.replace(" ", "_")}_{name}'] = {
          'runs': [r['label'] for r in subset],
          'step_seconds_median': statistics.median(
              r['step_seconds_median'] for r in subset),
          'mfu_median': statistics.median(r['mfu'] for r in subset),
      }
  with open(os.path.join(HERE, 'summary.json'), 'w') as f:
    json.dump(summary, f, indent=1)
    f.write('\n')


if __name__ == '__main__':
  main()
