r"""Pretrained vs from-scratch all-MiniLM-L6-v2 text tower, same config and
steps: retrieval (configs/retrieval.py:text=minilm) and classification
(configs/minilm.py, scenes text_matches), one run per arm.

  .venv/bin/python benchmarks/pretrained/run.py --workdir=runs/pretrained

Writes each run's workdir under --workdir and, here, results.json (each
arm's summary) and results.csv (one row per arm: the task's metrics).

The pretrained arm starts from all-MiniLM-L6-v2's weights by a warm start
from a step-0 checkpoint holding them (`mmjax.models.pretrained.
load_pretrained` applied to the fresh parameters), since the trainer does
not yet call `load_pretrained` itself; the from-scratch arm starts from the
same config's random initialisation. Everything else is the same.
"""
import csv
import json
import os
import sys

from absl import app, flags

from configs import minilm, retrieval
from mmjax import data
from mmjax.experiment import Experiment, train_and_evaluate
from mmjax.models.pretrained import load_pretrained

_WORKDIR = flags.DEFINE_string('workdir', 'runs/pretrained', 'Run folders.')
_STEPS = flags.DEFINE_integer('steps', 150, 'Train steps of every run.')
_BATCH = flags.DEFINE_integer('batch', 64, 'Global batch size.')
_WARMUP = flags.DEFINE_integer('warmup', 15, 'Warmup steps.')
HERE = os.path.dirname(os.path.abspath(__file__))
TASKS = {'retrieval': (retrieval, 'text=minilm,init={}', 'mean_recall1'),
         'classification': (minilm, 'init={}', 'accuracy')}


def arm_config(task: str, init: str):
  module, variant, _ = TASKS[task]
  c = module.get_config(variant.format(init))
  c.num_train_steps = _STEPS.value
  c.input.global_batch_size = _BATCH.value
  c.optimizer.warmup_steps = _WARMUP.value
  c.eval_every_steps = c.checkpoint_every_steps = c.log_every_steps = (
      _STEPS.value)
  return c


def pretrained_start(config, directory: str) -> None:
  """Saves, as step 0 in `directory`, the fresh state of `config` with its
  pretrained towers loaded (once: a finished directory is reused)."""
  if os.path.exists(os.path.join(directory, 'checkpoints')):
    return
  experiment = Experiment(config)
  runner = experiment.runner
  state = runner.to_checkpoint(runner.init(experiment.init_rng))
  state = state.replace(params=load_pretrained(state.params, config))
  checkpointer = experiment.make_checkpointer(directory)
  checkpointer.save(0, state, experiment.train_iterator())
  checkpointer.wait()
  checkpointer.close()


def main(argv):
  del argv
  results, rows = {}, []
  for task, (_, _, metric) in TASKS.items():
    for init in minilm.INITS:
      name = f'{task}_{init}'
      config = arm_config(task, init)
      data.prepare(config)
      if init == 'pretrained':
        start = os.path.join(_WORKDIR.value, f'{name}_start')
        pretrained_start(config, start)
        config.checkpoint.warm_start_from = start
      summary = train_and_evaluate(config, os.path.join(_WORKDIR.value, name),
                                   progress=False)
      results[name] = summary
      rows.append({'arm': name, 'task': task, 'init': init,
                   'steps': _STEPS.value, 'metric': metric,
                   'value': summary['eval'][metric],
                   'wall_time_seconds': summary['wall_time_seconds']})
      print(name, metric, summary['eval'][metric], flush=True)
  with open(os.path.join(HERE, 'results.json'), 'w') as f:
    json.dump({'command': ' '.join(sys.argv), 'runs': results}, f, indent=1)
  with open(os.path.join(HERE, 'results.csv'), 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)


if __name__ == '__main__':
  app.run(main)
