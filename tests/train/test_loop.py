"""The training loop: checkpoint round trips, resume, exact evaluation, outputs."""
import json
import os
import shutil

import jax
import numpy as np
import pytest

from mmjax.train import writers
from mmjax.train.checkpoint import Checkpointer
from mmjax.experiment import Experiment, train_and_evaluate
from trees import assert_trees_equal


def test_save_restore_gives_identical_state_and_next_loss(make_config,
                                                          tmp_path):
  experiment = Experiment(make_config('image=resnet,modalities=image+text'))
  runner = experiment.runner
  data = experiment.train_iterator()
  state = runner.init(experiment.init_rng)
  state, _ = runner.train_step(state, next(data))
  checkpointer = experiment.make_checkpointer(str(tmp_path))
  checkpointer.save(1, runner.to_checkpoint(state), data)
  checkpointer.wait()
  batch = next(data)
  # Snapshot before the step donates (invalidates) `state`.
  saved = jax.device_get(state)
  _, metrics = runner.train_step(state, batch)

  fresh = Experiment(make_config('image=resnet,modalities=image+text'))
  fresh_data = fresh.train_iterator()
  restored = fresh.make_checkpointer(str(tmp_path)).restore(
      1, fresh.runner.restore_target(), fresh_data)
  assert_trees_equal(saved, restored)
  next_batch = next(fresh_data)
  for key in batch:
    np.testing.assert_array_equal(batch[key], next_batch[key])
  _, fresh_metrics = fresh.runner.train_step(restored, next_batch)
  assert float(fresh_metrics['loss']) == float(metrics['loss'])


def test_interrupted_run_resumes_and_matches_uninterrupted(make_config,
                                                           tmp_path):
  config = make_config(num_train_steps=6, checkpoint_every_steps=2,
                       eval_every_steps=3, checkpoint__keep_last=10)
  full = str(tmp_path / 'full')
  train_and_evaluate(config, full, progress=False)
  # An interruption right after step 2's checkpoint: later steps never happened.
  interrupted = str(tmp_path / 'interrupted')
  shutil.copytree(full, interrupted)
  for step in (4, 6):
    shutil.rmtree(os.path.join(interrupted, 'checkpoints', str(step)))
  os.remove(os.path.join(interrupted, 'summary.json'))
  # Killed while appending a metrics record: the file ends in half a line.
  metrics_path = os.path.join(interrupted, writers.METRICS_FILE)
  with open(metrics_path, 'rb') as f:
    metrics_bytes = f.read()
  with open(metrics_path, 'wb') as f:
    f.write(metrics_bytes[:-10])

  summary = train_and_evaluate(config, interrupted, progress=False)
  assert summary['final_step'] == 6
  steps = Checkpointer(os.path.join(interrupted, 'checkpoints'), keep_last=10,
                       keep_best=0, best_metric='accuracy',
                       best_mode='max').all_steps()
  assert list(steps) == [2, 4, 6]
  # The resumed run logged steps 3..6 again, continuing after step 2.
  resumed_steps = [r['step'] for r in writers.read_metrics(interrupted)
                   if r['split'] == 'train'][len([
                       r for r in writers.read_metrics(full)
                       if r['split'] == 'train']):]
  assert resumed_steps == [4, 6]
  # Every line parses: the torn record (step 6's eval) was cut off, and the
  # resumed run's records (from step 3 on) follow the intact ones.
  with open(metrics_path) as f:
    records = [json.loads(line) for line in f]
  assert [(r['step'], r['split'][0]) for r in records] == [
      (2, 't'), (3, 'e'), (4, 't'), (6, 't'),
      (3, 'e'), (4, 't'), (6, 't'), (6, 'e')]

  def final_params(workdir):
    experiment = Experiment(config)
    return experiment.make_checkpointer(workdir).restore(
        6, experiment.runner.restore_target(),
        experiment.train_iterator()).params

  assert_trees_equal(final_params(full), final_params(interrupted))
  with open(os.path.join(full, 'summary.json')) as f:
    assert json.load(f)['eval'] == summary['eval']


def test_eval_is_exact_over_padded_batches_without_recompiling(make_config):
  experiment = Experiment(make_config())  # 100 test examples, batches of 32.
  state = experiment.runner.init(experiment.init_rng)
  metrics = experiment.evaluate(state)

  source = experiment.spec.source('test')
  examples = [experiment.pp_eval(experiment.spec.select(source[i]))
              for i in range(len(source))]
  batch = {k: np.stack([e[k] for e in examples]) for k in examples[0]}
  logits = experiment.model.apply({'params': state.params}, batch, train=False)
  expected = np.mean(np.argmax(logits, -1) == batch['label'])
  np.testing.assert_allclose(metrics['accuracy'], expected, atol=1e-6)
  assert experiment.runner._eval._cache_size() == 1  # pylint: disable=protected-access


@pytest.mark.parametrize('mode', ['jit', 'pmap'])
def test_train_writes_logs_checkpoints_and_summary(make_config, tmp_path,
                                                   mode):
  workdir = str(tmp_path)
  summary = train_and_evaluate(make_config(f'mode={mode}'), workdir,
                               progress=False)
  for name in ('summary.json', 'metrics.jsonl', 'config.json'):
    assert os.path.exists(os.path.join(workdir, name)), name
  assert os.listdir(os.path.join(workdir, 'tensorboard'))
  records = writers.read_metrics(workdir)
  assert [r['step'] for r in records if r['split'] == 'train'] == [2, 4]
  assert {'accuracy', 'macro_f1'} <= set(summary['eval'])
  assert summary['num_params'] > 0 and summary['final_step'] == 4
  assert summary['steps_per_second'] > 0 and summary['mode'] == mode
  assert 0 <= summary['eval']['accuracy'] <= 1


def test_device_values_are_read_only_at_log_eval_and_checkpoint_steps(
    make_config, tmp_path, monkeypatch):
  """Runs of 10 and 30 steps that log, evaluate and save only at their last
  step read device values equally often: nothing is read per step.

  (`jax.transfer_guard` does not guard CPU devices, so the test counts the
  reads themselves: `jax.device_get`, `float()`, `bool()`, `int()` and
  `.item()` of a device array all go through `ArrayImpl._value`.)
  """
  from jax._src import array  # pylint: disable=g-import-not-at-top
  reads = []
  value = array.ArrayImpl._value
  monkeypatch.setattr(array.ArrayImpl, '_value', property(
      lambda self: reads.append(1) or value.fget(self)))

  def reads_in_run(steps):
    config = make_config(num_train_steps=steps, log_every_steps=steps,
                         eval_every_steps=steps, checkpoint_every_steps=steps)
    start = len(reads)
    train_and_evaluate(config, str(tmp_path / str(steps)), progress=False)
    return len(reads) - start

  reads_in_run(2)  # Compiles every function, so both runs below are alike.
  short, long = reads_in_run(10), reads_in_run(30)
  assert short > 0  # The counter sees the loop's reads at its last step.
  assert long == short, (long, short)


def test_config_is_validated_once_per_run(make_config, tmp_path, monkeypatch):
  from mmjax import experiment  # pylint: disable=g-import-not-at-top
  calls = []
  validate = experiment.validate_config
  monkeypatch.setattr(experiment, 'validate_config',
                      lambda *a, **k: calls.append(1) or validate(*a, **k))
  train_and_evaluate(make_config(), str(tmp_path), progress=False)
  assert len(calls) == 1


def test_config_evals_run_at_their_cadence(make_config, tmp_path):
  config = make_config(num_train_steps=4)
  config.evals = {'image_only': dict(type='task', modalities=('image',),
                                     every_steps=2),
                  'final': dict(type='task', every_steps=0)}
  train_and_evaluate(config, str(tmp_path), progress=False)
  records = writers.read_metrics(str(tmp_path))
  steps = lambda split: [r['step'] for r in records if r['split'] == split]
  assert steps('image_only') == [2, 4] and steps('final') == [4]
  final = [r for r in records if r['split'] == 'final'][0]
  task_eval = [r for r in records if r['split'] == 'eval'][-1]
  assert final['accuracy'] == task_eval['accuracy']  # The same evaluation.


def test_unknown_evaluator_is_named_before_training(make_config, tmp_path):
  from mmjax.errors import ConfigError  # pylint: disable=g-import-not-at-top
  config = make_config()
  config.evals = {'x': dict(type='bleu')}
  with pytest.raises(ConfigError, match=r'evals\.x\.type.*embedding, gan, '
                     r'robustness, task, zero_shot'):
    train_and_evaluate(config, str(tmp_path), progress=False)
  assert not os.path.exists(os.path.join(tmp_path, 'checkpoints'))
