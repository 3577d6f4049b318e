"""The GAN's train step (mmjax/train/adversarial.py) through the real
runner: each update touches only its own network, the EMA follows its
formula, one compiled step, sharded equals single-device, non-finite steps
change nothing, and SIGTERM + resume is bitwise an uninterrupted run."""
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import optax
import pytest

import gan_tiny
from cpu_devices import subprocess_env
from mmjax.errors import ConfigError
from mmjax.experiment import Experiment
from mmjax.tasks.gan import hinge_discriminator_loss, hinge_generator_loss
from mmjax.train import adversarial, preemption
from mmjax.train.writers import read_metrics
from tiny import set_fields
from trees import assert_trees_equal

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))


@pytest.fixture
def gan_config(data_dir):
  return lambda **overrides: set_fields(gan_tiny.get_config(data_dir),
                                        **overrides)


def _host(state):
  return jax.device_get(state)


def test_hinge_losses_by_hand():
  real, fake = np.array([2., 0.5, -1.]), np.array([-2., 0., 3.])
  weights = np.array([1., 1., 0.])  # The last row is padding.
  # relu(1 - real): 0, 0.5; relu(1 + fake): 0, 1.
  assert float(hinge_discriminator_loss(real, fake, weights)) == 0.25 + 0.5
  assert float(hinge_generator_loss(fake, weights)) == 1.
  # Matching-aware: generated and mismatched blocks, each weighted as real.
  both = np.concatenate([fake, np.array([1., -3., 5.])])
  # Fake terms 0, 1 and 2, 0 over the four real rows: mean 0.75.
  assert float(hinge_discriminator_loss(real, both, weights)) == 0.25 + 0.75


@pytest.mark.parametrize('group, other', [('discriminator', 'generator'),
                                          ('generator', 'discriminator')])
def test_an_update_leaves_the_other_network_bitwise(gan_config, group, other):
  experiment = Experiment(gan_config(), devices=jax.devices()[:1])
  runner = experiment.runner
  state = runner.init(experiment.init_rng)
  batch = runner.put(next(experiment.train_iterator()))
  update = jax.jit(lambda p, s, o, b: adversarial._update(  # pylint: disable=protected-access
      p, s, o, b, group, jax.random.key(1), model=experiment.model,
      tx=experiment.tx, loss_fn=experiment.task.loss, axis_name=None))
  params, _, opt_state, _, _, finite = update(
      state.params, state.batch_stats, state.opt_state, batch)
  before, after = _host(state.params), _host(params)
  assert bool(finite)
  for kept in (other, adversarial.EMA):
    assert_trees_equal(after[kept], before[kept])
  assert_trees_equal(_host(opt_state[other]), _host(state.opt_state[other]))
  moved = jax.tree.leaves(jax.tree.map(
      lambda a, b: not np.array_equal(a, b), after[group], before[group]))
  assert any(moved)


def _adam_count(opt_state) -> int:
  """Updates Adam has made with `opt_state`."""
  adam, = [s for s in jax.tree.leaves(
      opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
           if isinstance(s, optax.ScaleByAdamState)]
  return int(adam.count)


def test_step_moves_the_ema_by_its_formula_and_compiles_once(gan_config):
  config = gan_config(task__discriminator_steps=2, task__ema_decay=0.9)
  experiment = Experiment(config, devices=jax.devices()[:1])
  runner = experiment.runner
  batches = experiment.train_iterator()
  state = runner.init(experiment.init_rng)
  for _ in range(3):
    before = _host(state)
    state, metrics = runner.train_step(state, next(batches))
    after = _host(state)
    expected = jax.tree.map(lambda e, g: 0.9 * e + (1 - 0.9) * g,
                            before.params[adversarial.EMA],
                            after.params['generator'])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6,
                                                         atol=1e-7),
                 after.params[adversarial.EMA], expected)
    # Two Adam updates of the discriminator, one of the generator.
    counts = {g: _adam_count(after.opt_state[g]) for g in adversarial.GROUPS}
    assert counts == {'discriminator': 2 * int(after.step),
                      'generator': int(after.step)}
  metrics = runner.fetch(metrics)
  assert metrics['nonfinite'] == 0
  assert np.isclose(metrics['loss'], metrics['discriminator_loss'] +
                    metrics['generator_loss'], rtol=1e-5)
  assert runner._train._cache_size() == 1  # pylint: disable=protected-access


def _train(experiment, batches):
  runner = experiment.runner
  state = runner.init(experiment.init_rng)
  losses = []
  for batch in batches:
    state, metrics = runner.train_step(state, batch)
    losses.append(runner.fetch(metrics)['loss'])
  return np.array(losses), _host(runner.to_checkpoint(state))


def test_sharded_step_equals_single_device(gan_config):
  single = Experiment(gan_config(), devices=jax.devices()[:1])
  sharded = Experiment(gan_config(parallel__mesh=dict(data=2, fsdp=4,
                                                      tensor=1)))
  data = single.train_iterator()
  batches = [next(data) for _ in range(2)]
  single_losses, single_state = _train(single, batches)
  sharded_losses, sharded_state = _train(sharded, batches)
  np.testing.assert_allclose(sharded_losses, single_losses, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                       atol=1e-6),
               sharded_state.params, single_state.params)


def test_nonfinite_step_leaves_both_networks_bitwise(gan_config):
  experiment = Experiment(gan_config(), devices=jax.devices()[:1])
  runner = experiment.runner
  batches = experiment.train_iterator()
  state, _ = runner.train_step(runner.init(experiment.init_rng),
                               next(batches))
  before = _host(state)
  bad = dict(next(batches))
  bad['image'] = np.full_like(bad['image'], np.nan)
  state, metrics = runner.train_step(state, bad)
  after = _host(state)
  assert runner.fetch(metrics)['nonfinite'] == 1
  assert int(after.step) == int(before.step) + 1
  for field in ('params', 'opt_state', 'batch_stats'):
    assert_trees_equal(getattr(after, field), getattr(before, field))
  assert int(after.nonfinite.total) == 1


def test_accumulation_is_refused(gan_config):
  with pytest.raises(ConfigError, match='optimizer.accumulation_steps'):
    Experiment(gan_config(optimizer__accumulation_steps=2))


def test_sigterm_and_resume_equal_an_uninterrupted_run(gan_config, data_dir,
                                                       tmp_path):
  """train.py runs of the tiny GAN: one uninterrupted, one stopped by
  SIGTERM midway and run again; the runs share a compilation cache."""
  fields = dict(num_train_steps=16, checkpoint_every_steps=8,
                eval_every_steps=1000,
                compilation_cache_dir=str(tmp_path / 'xla_cache'))

  def command(workdir):
    return [sys.executable, os.path.join(REPO, 'experiments', 'train.py'),
            f'--config=tests/gan_tiny.py:{data_dir}', f'--workdir={workdir}'
            ] + [f'--config.{k}={v}' for k, v in fields.items()]

  def run(workdir):
    done = subprocess.run(command(workdir), cwd=REPO, env=subprocess_env(8),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr

  reference, workdir = str(tmp_path / 'reference'), str(tmp_path / 'stopped')
  run(reference)
  process = subprocess.Popen(command(workdir), cwd=REPO, env=subprocess_env(8),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
  start = time.time()
  while not (os.path.exists(os.path.join(workdir, 'metrics.jsonl')) and any(
      r['step'] >= 3 for r in read_metrics(workdir))):
    assert process.poll() is None, process.communicate()[1][-3000:]
    assert time.time() - start < 300
    time.sleep(0.01)
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=300)
  assert process.returncode == preemption.EXIT_CODE, stderr[-3000:]
  stopped = max(int(s) for s in os.listdir(os.path.join(workdir,
                                                        'checkpoints')))
  assert stopped < 16
  assert f'Resumed from step {stopped}' in run(workdir)

  def final(path):
    experiment = Experiment(gan_config(**fields))
    return experiment.make_checkpointer(path).restore(
        16, experiment.runner.restore_target(), experiment.train_iterator())

  assert_trees_equal(_host(final(workdir)), _host(final(reference)))
