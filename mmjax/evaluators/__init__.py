"""Evaluators: what a run measures besides its loss, chosen by config.

`config.evals` maps a name to an evaluator's config:

  config.evals = {'image_only': dict(type='task', modalities=('image',),
                                     every_steps=1000),
                  'robustness': dict(type='robustness', every_steps=0)}

`type` selects the class from `mmjax.registry.EVALUATORS`; `every_steps` is
its cadence in training (0: only after the last step). An evaluator is built
as `cls(cfg, experiment, workdir)` (`experiment`: a
`mmjax.experiment.Experiment`) and `run(state, step)` returns JSON-able
results, whose numbers the train loop writes under the evaluator's name.
The same classes evaluate saved checkpoints (`experiments/evaluate.py`,
`robustness.py`, `embed.py`). The task's own evaluation (`eval_every_steps`)
always runs; these come after it.
"""
from mmjax.evaluators import embedding, gan, robustness, task  # noqa: F401  (register)
from mmjax.registry import EVALUATORS


def build(config, experiment, workdir=None):
  """[(name, every_steps, evaluator)] for every entry of `config.evals`."""
  return [(name, cfg.get('every_steps', 0),
           EVALUATORS.get(cfg.get('type', ''), field=f'evals.{name}.type')(
               cfg, experiment, workdir))
          for name, cfg in config.get('evals', {}).items()]
