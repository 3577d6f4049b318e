"""Every config in configs/ builds and runs a training step."""
import glob
import importlib
import os

import numpy as np
import pytest

from mmjax.train.loop import Experiment

CONFIG_DIR = os.path.join(os.path.dirname(__file__), '..', 'configs')
CONFIGS = sorted(os.path.basename(p)[:-3]
                 for p in glob.glob(os.path.join(CONFIG_DIR, '*.py'))
                 if not p.endswith('__init__.py'))


def test_configs_found():
  assert {'default', 'concat', 'gated', 'cross_attention'} <= set(CONFIGS)


@pytest.mark.parametrize('name', CONFIGS)
def test_config_builds_and_runs_one_step(make_config, name):
  config = importlib.import_module(f'configs.{name}').get_config()
  tiny = make_config()
  config.dataset, config.input = tiny.dataset, tiny.input
  config.num_train_steps, config.optimizer.warmup_steps = 1, 0
  experiment = Experiment(config)
  state = experiment.runner.init(experiment.init_rng)
  state, metrics = experiment.runner.train_step(
      state, next(experiment.train_iterator()))
  assert np.isfinite(float(metrics['loss']))
  assert int(state.step) == 1


@pytest.mark.parametrize('variant', ['fusion=gated,text=lstm',
                                     'modalities=image+text,size=small',
                                     'image=vit,audio=transformer,text=gru'])
def test_default_variants(make_config, variant):
  experiment = Experiment(make_config(variant))
  state = experiment.runner.init(experiment.init_rng)
  _, metrics = experiment.runner.train_step(
      state, next(experiment.train_iterator()))
  assert np.isfinite(float(metrics['loss']))
