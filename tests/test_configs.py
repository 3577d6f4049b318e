"""Every config in configs/ builds and runs a training step."""
import glob
import importlib
import os

import jax
import numpy as np
import pytest

from configs import default
from mmjax.experiment import Experiment

CONFIG_DIR = os.path.join(os.path.dirname(__file__), '..', 'configs')
CONFIGS = sorted(os.path.basename(p)[:-3]
                 for p in glob.glob(os.path.join(CONFIG_DIR, '*.py'))
                 if not p.endswith('__init__.py'))

# Configs that need a variant string.
ARGS = {'manifest': 'name=my_data'}
# Configs whose training steps another test already runs, with the file that
# does: a second one-step run here would only add compile time.
RUN_ELSEWHERE = {'bench': 'test_bench_throughput.py',
                 'minilm': 'test_minilm_configs.py',
                 # The GAN at test size, trained by tests/train/test_adversarial.py.
                 'gan': 'gan_tiny.py',
                 'video': 'train/test_video_parallel.py'}


def test_configs_found():
  assert {'default', 'concat', 'gated', 'cross_attention', 'digits',
          'manifest'} <= set(CONFIGS)
  for name, test in RUN_ELSEWHERE.items():
    assert name in CONFIGS
    with open(os.path.join(os.path.dirname(__file__), test)) as f:
      assert f'configs/{name}.py' in f.read()


def _on_tiny_data(name, data_dir=None):
  """Config `name` for one step on the tiny default data (the dataset-specific
  configs train on their own data in test_train_script.py), with every
  transformer tower one block deep: the structure is under test, not the
  size."""
  config = importlib.import_module(f'configs.{name}').get_config(
      ARGS.get(name))
  tiny = default.get_config(
      'modalities=image+audio+text,label=label,fusion=concat')
  tiny.dataset.builder_config, tiny.dataset.data_dir = 'tiny', data_dir
  tiny.input.global_batch_size = 16
  if config.dataset.name == tiny.dataset.name:  # Its own pipeline and label.
    config.dataset.builder_config = 'tiny'
    config.dataset.data_dir = tiny.dataset.data_dir
    config.input.global_batch_size = tiny.input.global_batch_size
  else:
    config.dataset, config.input = tiny.dataset, tiny.input
    config.model.modalities = tiny.model.modalities
  for tower in config.model.encoders.values():
    if 'depth' in tower:
      tower.depth = 1
  config.num_train_steps, config.optimizer.warmup_steps = 1, 0
  return config


def _same_runs():
  """Groups of configs that run the same step on the tiny data (e.g. a
  fusion's config and configs/default.py with that fusion): one step each."""
  groups = {}
  for name in sorted(set(CONFIGS) - set(RUN_ELSEWHERE)):
    groups.setdefault(_on_tiny_data(name).to_json(), []).append(name)
  return list(groups.values())


@pytest.mark.parametrize('names', _same_runs(), ids='='.join)
def test_config_builds_and_runs_one_step(data_dir, names):
  configs = [_on_tiny_data(name, data_dir) for name in names]
  assert all(c == configs[0] for c in configs[1:])
  # One device: the config's structure is under test; sharding has its own
  # tests (tests/train/test_parallel.py), and 8-device steps compile slower.
  experiment = Experiment(configs[0], devices=jax.devices()[:1])
  state = experiment.runner.init(experiment.init_rng)
  state, metrics = experiment.runner.train_step(
      state, next(experiment.train_iterator()))
  assert np.isfinite(float(metrics['loss']))
  assert int(state.step) == 1


@pytest.mark.parametrize('variant', ['fusion=gated,text=lstm',
                                     'modalities=image+text,size=small',
                                     'image=vit,audio=transformer,text=gru'])
def test_default_variants(make_config, variant):
  experiment = Experiment(make_config(variant), devices=jax.devices()[:1])
  state = experiment.runner.init(experiment.init_rng)
  _, metrics = experiment.runner.train_step(
      state, next(experiment.train_iterator()))
  assert np.isfinite(float(metrics['loss']))


def test_manifest_config_needs_a_dataset_name_and_known_keys():
  manifest = importlib.import_module('configs.manifest')
  with pytest.raises(ValueError, match='name=NAME'):
    manifest.get_config()
  with pytest.raises(ValueError, match='image_sise'):
    manifest.get_config('name=pets,image_sise=32')
  c = manifest.get_config('name=pets,modalities=audio,audio_seconds=0.5,'
                          'sample_rate=8000')
  assert c.input.pp_train == ('decode_audio|resample(8000)|'
                              'random_crop_audio(4000)|pad_audio(4000)')
  assert c.input.pp_eval == 'decode_audio|resample(8000)|pad_audio(4000)'
