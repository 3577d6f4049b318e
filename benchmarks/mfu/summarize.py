"""Medians of issue 21's MFU runs in runs.json (`bench_throughput.py
--config=configs/bench.py --steps=10 --warmup=2`), per three consecutive runs
(the issue's "median of 3 runs") and over all of them.

  python benchmarks/mfu/summarize.py  # writes summary.json beside it
"""
import json
import os
import statistics

HERE = os.path.dirname(os.path.abspath(__file__))


def medians(records):
  return {'runs': [r['label'] for r in records],
          'mfu_median': statistics.median(r['mfu'] for r in records),
          'step_seconds_median': statistics.median(
              r['step_seconds_median'] for r in records)}


def main():
  with open(os.path.join(HERE, 'runs.json')) as f:
    records = json.load(f)
  summary = {'threes': [medians(records[i:i + 3])
                        for i in range(0, len(records) - 2, 3)],
             'all': medians(records)}
  with open(os.path.join(HERE, 'summary.json'), 'w') as f:
    json.dump(summary, f, indent=1)
    f.write('\n')


if __name__ == '__main__':
  main()
