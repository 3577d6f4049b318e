r"""Pretrained vs from-scratch all-MiniLM-L6-v2 text tower, same config and
steps: retrieval (configs/retrieval.py:text=minilm) and classification
(configs/minilm.py, scenes text_matches), one run per arm.

  .venv/bin/python benchmarks/pretrained/run.py --task=retrieval
  .venv/bin/python benchmarks/pretrained/run.py --task=classification
  .venv/bin/python benchmarks/pretrained/run.py --collect

Each run trains one arm (--init) or both, in <workdir>/<task>_<init>; the
arms are separate processes, so they may run at the same time (--init).
--collect writes, here, results.json (every arm's summary.json) and
results.csv (one row per arm: the task's metric).

The pretrained arm starts from all-MiniLM-L6-v2's weights (the trainer
loads them into the fresh parameters, `mmjax.models.pretrained`); the
from-scratch arm starts from the same config's random initialisation.
Everything else is the same. (The committed results were made when the
trainer did not load them yet: from a step-0 checkpoint holding the fresh
parameters with the weights loaded, warm-started, which gives the same
starting parameters.)
"""
import csv
import json
import os

from absl import app, flags

from configs import minilm, retrieval
from mmjax import data
from mmjax.experiment import SUMMARY_FILE, train_and_evaluate

TASKS = {'retrieval': (retrieval, 'text=minilm,init={}', 'mean_recall1'),
         'classification': (minilm, 'init={}', 'accuracy')}
_TASK = flags.DEFINE_enum('task', None, list(TASKS), 'The task compared.')
_INIT = flags.DEFINE_enum('init', None, list(minilm.INITS),
                          'One arm only (default: both).')
_COLLECT = flags.DEFINE_bool('collect', False, 'Gather the arms\' '
                             'summaries instead of training.')
_WORKDIR = flags.DEFINE_string('workdir', 'runs/pretrained', 'Run folders.')
_STEPS = flags.DEFINE_integer('steps', 100, 'Train steps of every run.')
_BATCH = flags.DEFINE_integer('batch', 32, 'Global batch size.')
_WARMUP = flags.DEFINE_integer('warmup', 10, 'Warmup steps.')
HERE = os.path.dirname(os.path.abspath(__file__))


def arm_config(task: str, init: str):
  module, variant, _ = TASKS[task]
  c = module.get_config(variant.format(init))
  c.num_train_steps = _STEPS.value
  c.input.global_batch_size = _BATCH.value
  c.optimizer.warmup_steps = _WARMUP.value
  c.eval_every_steps = c.checkpoint_every_steps = c.log_every_steps = (
      _STEPS.value)
  return c


def collect() -> None:
  """results.json and results.csv from the arms' summaries."""
  results, rows = {}, []
  for task, (_, _, metric) in TASKS.items():
    for init in minilm.INITS:
      name = f'{task}_{init}'
      with open(os.path.join(_WORKDIR.value, name, SUMMARY_FILE)) as f:
        summary = json.load(f)
      results[name] = summary
      rows.append({'arm': name, 'task': task, 'init': init,
                   'steps': summary['final_step'], 'metric': metric,
                   'value': summary['eval'][metric]})
  with open(os.path.join(HERE, 'results.json'), 'w') as f:
    json.dump(results, f, indent=1)
  with open(os.path.join(HERE, 'results.csv'), 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)


def main(argv):
  del argv
  if _COLLECT.value:
    return collect()
  if _TASK.value is None:
    raise app.UsageError('--task is required (or --collect).')
  for init in [_INIT.value] if _INIT.value else minilm.INITS:
    config = arm_config(_TASK.value, init)
    data.prepare(config)
    workdir = os.path.join(_WORKDIR.value, f'{_TASK.value}_{init}')
    train_and_evaluate(config, workdir, progress=False)


if __name__ == '__main__':
  app.run(main)
