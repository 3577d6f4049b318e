"""Parameter groups trained by their own optimizers in turn (e.g. a GAN's
generator and discriminator), through the same step, loop and checkpoints."""
import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

from mmjax.errors import ConfigError
from mmjax.experiment import Experiment, train_and_evaluate
from mmjax.registry import MODELS, TASKS
from mmjax.tasks.classification import Classification
from trees import assert_trees_equal


@MODELS.register('test_two_heads')
class TwoHeads(nn.Module):
  """Two linear classifiers of the image, parameter groups 'a' and 'b'."""
  num_outputs: int

  @classmethod
  def from_config(cls, config, *, num_outputs, **unused):
    del config, unused
    return cls(num_outputs)

  @classmethod
  def check_config(cls, config):
    del config

  @nn.compact
  def __call__(self, batch, train=False):
    x = batch['image'].reshape(batch['image'].shape[0], -1)
    return {'a': nn.Dense(self.num_outputs, name='a')(x),
            'b': nn.Dense(self.num_outputs, name='b')(x)}


@TASKS.register('test_two_heads')
class TwoHeadsClassification(Classification):
  """Each head is a classifier, trained by its own group's loss."""
  optimizer_groups = ('a', 'b')

  def loss(self, outputs, batch, group):
    return super().loss(outputs[group], batch)

  def eval_stats(self, outputs, batch):
    return super().eval_stats(outputs['a'], batch)


@pytest.fixture
def two_heads_config(make_config):
  def make(**overrides):
    return make_config(
        model__name='test_two_heads', task__name='test_two_heads',
        optimizer__schedule='constant', optimizer__warmup_steps=0,
        optimizer_groups__a={'name': 'sgd', 'learning_rate': 0.1},
        **overrides)
  return make


def test_each_step_updates_one_group_with_its_own_optimizer(two_heads_config):
  experiment = Experiment(two_heads_config())
  runner = experiment.runner
  batches = experiment.train_iterator()
  state = runner.init(experiment.init_rng)
  # 'a' trains by SGD with momentum, 'b' by AdamW (whose state has moments).
  assert isinstance(jax.tree.leaves(
      state.opt_state['b'], is_leaf=lambda x: isinstance(
          x, optax.ScaleByAdamState))[0], optax.ScaleByAdamState)
  history = [jax.device_get(state)]
  for _ in range(4):
    state, _ = runner.train_step(state, next(batches))
    history.append(jax.device_get(state))
  for step in range(4):
    before, after = history[step], history[step + 1]
    updated, kept = ('a', 'b') if step % 2 == 0 else ('b', 'a')
    assert_trees_equal(after.params[kept], before.params[kept])
    assert_trees_equal(after.opt_state[kept], before.opt_state[kept])
    assert not np.array_equal(after.params[updated]['kernel'],
                              before.params[updated]['kernel'])


def test_groups_resume_bitwise(two_heads_config, tmp_path):
  straight = str(tmp_path / 'straight')
  train_and_evaluate(two_heads_config(num_train_steps=5), straight,
                     progress=False)
  resumed = str(tmp_path / 'resumed')
  # Stops after step 3 ('a' updated at steps 1, 3; 'b' at 2), then resumes.
  train_and_evaluate(two_heads_config(num_train_steps=3), resumed,
                     progress=False)
  train_and_evaluate(two_heads_config(num_train_steps=5), resumed,
                     progress=False)

  def final_state(workdir):
    experiment = Experiment(two_heads_config(num_train_steps=5))
    return experiment.make_checkpointer(workdir).restore(
        5, experiment.runner.restore_target(), experiment.train_iterator())

  assert_trees_equal(final_state(resumed), final_state(straight))


def test_optimizer_groups_must_name_the_tasks_groups(two_heads_config):
  config = two_heads_config()
  config.optimizer_groups.c = {'learning_rate': 0.1}
  with pytest.raises(ConfigError, match=r"optimizer_groups\.c.*groups are: a, b"):
    Experiment(config)
