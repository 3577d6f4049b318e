"""configs/video.py on the 'tiny' moving_digits build: a sharded training step
equals one device's, with a video tower (tests/test_configs.py leaves this
config to this file)."""
import jax
import numpy as np
import pytest

from configs import video
from mmjax import data
from mmjax.experiment import Experiment


@pytest.fixture(scope='module')
def video_data_dir(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp('tfds_video'))
  config = video.get_config('size=tiny')
  config.dataset.builder_config, config.dataset.data_dir = 'tiny', directory
  data.prepare(config)
  return directory


def _config(data_dir, variant, **mesh):
  config = video.get_config(variant)
  config.dataset.builder_config, config.dataset.data_dir = 'tiny', data_dir
  config.input.global_batch_size, config.input.eval_batch_size = 16, 32
  config.model.dim = 16
  config.num_train_steps, config.optimizer.warmup_steps = 2, 0
  if mesh:
    config.parallel.mesh = dict(mesh, tensor=1)
  return config


def test_sharded_video_step_equals_single_device(video_data_dir):
  variant = 'size=tiny,mode=factorised'
  sharded = Experiment(_config(video_data_dir, variant, data=2, fsdp=4))
  single = Experiment(_config(video_data_dir, variant),
                      devices=jax.devices()[:1])
  data_iter = single.train_iterator()
  batches = [next(data_iter) for _ in range(2)]
  assert batches[0]['video'].shape == (16, 8, 32, 32, 1)
  losses = {}
  for name, experiment in (('sharded', sharded), ('single', single)):
    runner = experiment.runner
    state = runner.init(experiment.init_rng)
    losses[name] = []
    for batch in batches:
      state, metrics = runner.train_step(state, batch)
      losses[name].append(float(runner.fetch(metrics)['loss']))
  np.testing.assert_allclose(losses['sharded'], losses['single'], rtol=1e-5,
                             atol=1e-6)
  assert np.isfinite(losses['single']).all()
