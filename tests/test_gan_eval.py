"""The 'gan' evaluator and experiments/sample.py on real (tiny) runs: a
classifier trained by mmjax judges a GAN trained by mmjax."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import gan_tiny
from configs import default
from cpu_devices import subprocess_env
from mmjax.errors import ConfigError
from mmjax.experiment import train_and_evaluate
from mmjax.train.writers import read_metrics
from tiny import set_fields

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 16  # gan_tiny's images: 16 x 16 x 3.


@pytest.fixture(scope='module')
def classifier(data_dir, tmp_path_factory):
  """An image-only classifier of the tiny 'scenes' images, as the GAN sees
  them."""
  config = default.get_config('modalities=image,label=label,fusion=concat')
  default.set_preprocessing(config, gan_tiny.PP)
  workdir = str(tmp_path_factory.mktemp('classifier'))
  train_and_evaluate(set_fields(
      config, dataset__builder_config='tiny', dataset__data_dir=data_dir,
      input__global_batch_size=16, input__eval_batch_size=32,
      num_train_steps=2, eval_every_steps=2, checkpoint_every_steps=2,
      optimizer__warmup_steps=0), workdir, progress=False)
  return workdir


@pytest.fixture(scope='module')
def gan_run(data_dir, classifier, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('gan'))
  config = set_fields(gan_tiny.get_config(data_dir), num_train_steps=2)
  config.evals = {'gan': dict(type='gan', classifier=classifier,
                              samples_per_class=2, every_steps=0)}
  train_and_evaluate(config, workdir, progress=False)
  return workdir


def test_evaluator_scores_generated_images_with_the_classifier(
    classifier, gan_run):
  results, = [r for r in read_metrics(gan_run) if r['split'] == 'gan']
  for key in ('conditional_accuracy', 'shuffled_accuracy', 'real_accuracy'):
    assert 0 <= results[key] <= 1
  # The ceiling is the classifier's own accuracy on the same eval images.
  with open(os.path.join(classifier, 'summary.json')) as f:
    assert results['real_accuracy'] == pytest.approx(
        json.load(f)['eval']['accuracy'])
  assert results['fid'] >= 0 and results['fid_untrained'] > 0
  assert results['fid_ratio'] == pytest.approx(
      results['fid'] / results['fid_untrained'])
  # A grid row per class of the tiny 'scenes' label (4), 2 samples each.
  grid = np.asarray(Image.open(os.path.join(gan_run, 'samples',
                                            'step_2.png')))
  assert grid.shape == (4 * (SIZE + 1) + 1, 2 * (SIZE + 1) + 1, 3)


def test_sample_script_draws_a_row_per_text(gan_run, tmp_path):
  out = str(tmp_path / 'grid.png')
  done = subprocess.run(
      [sys.executable, os.path.join(REPO, 'experiments', 'sample.py'),
       f'--workdir={gan_run}', '--text=a red circle,two', '--n=3',
       f'--out={out}'], cwd=REPO, env=subprocess_env(1), capture_output=True,
      text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  grid = np.asarray(Image.open(out))
  assert grid.shape == (2 * (SIZE + 1) + 1, 3 * (SIZE + 1) + 1, 3)
  # Different texts, different images.
  rows = [grid[1 + r * (SIZE + 1):(r + 1) * (SIZE + 1)] for r in range(2)]
  assert not np.array_equal(*rows)


@pytest.fixture(scope='module')
def scenes_retrieval(data_dir, tmp_path_factory):
  """An image-caption two-tower model of the tiny single-object scenes, with
  the scenes GAN's preprocessing."""
  workdir = str(tmp_path_factory.mktemp('retrieval'))
  train_and_evaluate(set_fields(
      gan_tiny.get_config(data_dir, 'data=scenes,retrieval'),
      num_train_steps=2), workdir, progress=False)
  return workdir


def test_scenes_judges_read_pixels_and_rank_captions(data_dir,
                                                    scenes_retrieval,
                                                    tmp_path):
  workdir = str(tmp_path / 'gan')
  train_and_evaluate(set_fields(
      gan_tiny.get_config(data_dir, f'data=scenes,judge={scenes_retrieval}'),
      num_train_steps=2, evals__gan__every_steps=0,
      evals__gan__samples_per_class=1), workdir, progress=False)
  results, = [r for r in read_metrics(workdir) if r['split'] == 'gan']
  # The pixel reader reads every real single object right (the ceiling).
  assert results['real_colour_accuracy'] == 1.0
  assert results['real_shape_accuracy'] == 1.0
  for score in ('colour_accuracy', 'shape_accuracy', 'r_precision'):
    for prefix in ('conditional', 'shuffled', 'real'):
      assert 0 <= results[f'{prefix}_{score}'] <= 1
  # Fréchet distance in the retrieval model's image embeddings.
  assert results['fid_ratio'] == pytest.approx(
      results['fid'] / results['fid_untrained'])
  # A row per object class of the tiny test split, 1 sample each.
  grid = np.asarray(Image.open(os.path.join(workdir, 'samples',
                                            'step_2.png')))
  assert grid.shape[1] == 32 + 2 and grid.shape[0] > 10 * 33


def test_a_retrieval_judge_must_be_a_two_tower_run(data_dir, classifier,
                                                   tmp_path):
  config = set_fields(gan_tiny.get_config(
      data_dir, f'data=scenes,judge={classifier}'), num_train_steps=1)
  with pytest.raises(ConfigError, match='evals.gan.retrieval.*two_tower'):
    train_and_evaluate(config, str(tmp_path / 'run'), progress=False)


def test_a_judge_that_is_not_an_image_classifier_is_refused(data_dir,
                                                            gan_run, tmp_path):
  config = set_fields(gan_tiny.get_config(data_dir), num_train_steps=1)
  config.evals = {'gan': dict(type='gan', classifier=gan_run)}
  with pytest.raises(ConfigError, match='evals.gan.classifier.*image-only'):
    train_and_evaluate(config, str(tmp_path / 'run'), progress=False)
