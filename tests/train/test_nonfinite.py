"""Non-finite losses and gradients: the step leaves the state untouched, the
loop counts such steps and stops a diverged run, and never checkpoints it."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp

from cpu_devices import subprocess_env
from mmjax.experiment import Experiment
from trees import assert_trees_equal

REPO = os.path.join(os.path.dirname(__file__), '..', '..')


def _host_copy(tree):
  """Host copies: the step donates the state's buffers, which CPU arrays
  fetched without a copy would share."""
  return jax.tree.map(lambda x: np.array(x, copy=True), tree)


def test_nonfinite_step_leaves_the_state_bitwise_unchanged(make_config):
  # A ResNet image tower (alone, to compile less): its BatchNorm statistics
  # are state the step must restore too. No warmup: the optimizer's own step
  # count, which a skipped step leaves as it was, would give a zero learning
  # rate at count 0.
  experiment = Experiment(make_config('image=resnet,modalities=image',
                                      optimizer__warmup_steps=0))
  runner = experiment.runner
  good = next(experiment.train_iterator())
  bad = {**good, 'image': good['image'].copy()}
  bad['image'][3, 0, 0, 0] = np.nan  # One pixel of one example.
  state = runner.init(experiment.init_rng)
  before = _host_copy(state)

  state, metrics = runner.train_step(state, bad)
  assert float(runner.fetch(metrics)['nonfinite']) == 1.0
  assert int(state.step) == 1  # The step counter (and the data) move on.
  after = _host_copy(state)
  assert jax.tree.leaves(before.batch_stats)  # Else nothing is compared.
  for name in ('params', 'opt_state', 'batch_stats'):
    assert_trees_equal(getattr(after, name), getattr(before, name))

  # A finite step changes what the non-finite one had to keep.
  state, metrics = runner.train_step(state, good)
  assert float(runner.fetch(metrics)['nonfinite']) == 0.0
  after = _host_copy(state)
  for name in ('params', 'batch_stats'):
    assert any(not np.array_equal(x, y) for x, y in zip(
        jax.tree.leaves(getattr(before, name)),
        jax.tree.leaves(getattr(after, name)))), name


def test_diverged_run_stops_naming_the_step_and_saves_only_finite_states(
    data_dir, tmp_path):
  """A learning rate of 1e30 makes the loss non-finite from step 2 on."""
  workdir = tmp_path / 'run'
  result = subprocess.run([
      sys.executable, os.path.join(REPO, 'experiments', 'train.py'),
      '--config=configs/default.py', f'--workdir={workdir}',
      '--config.dataset.builder_config=tiny',
      f'--config.dataset.data_dir={data_dir}',
      '--config.input.global_batch_size=16',
      '--config.input.eval_batch_size=20', '--config.num_train_steps=20',
      '--config.log_every_steps=1', '--config.checkpoint_every_steps=1',
      '--config.optimizer.warmup_steps=0',
      '--config.optimizer.learning_rate=1e30',
      '--config.max_consecutive_nonfinite_steps=3',
  ], capture_output=True, text=True, timeout=600,
      env=subprocess_env(2), cwd=REPO)
  assert result.returncode != 0
  assert ('NonFiniteError: step 4: non-finite grad_norm, loss; the update '
          'was skipped (3 in a row, 3 in all). Stopping after 3') in (
              result.stderr)
  with open(workdir / 'metrics.jsonl') as f:
    counts = {r['step']: r['nonfinite_steps'] for r in map(json.loads, f)
              if r['split'] == 'train'}
  assert counts == {1: 0, 2: 1, 3: 2}  # Step 4 raised before its record.
  steps = sorted(os.listdir(workdir / 'checkpoints'))
  assert steps == ['2', '3']  # Saved, finished, no temporary directories.
  for step in steps:
    state = ocp.StandardCheckpointer().restore(
        (workdir / 'checkpoints' / step / 'state').absolute())
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(state['params']))
