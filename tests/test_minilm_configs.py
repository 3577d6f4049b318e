"""configs/minilm.py and configs/retrieval.py:text=minilm set the tower, its
ids and its learning rate together, and differ between init= arms only in
the tower's `pretrained` field."""
import numpy as np
import pytest

from configs import minilm, retrieval


@pytest.mark.parametrize('get_config, variant, pooling', [
    (minilm.get_config, '', 'tokens'),
    (retrieval.get_config, 'text=minilm,', 'mean'),
])
def test_arms_differ_only_in_the_initialisation(get_config, variant,
                                                pooling):
  pretrained = get_config(f'{variant}init=pretrained')
  scratch = get_config(f'{variant}init=scratch')
  text = pretrained.model.encoders.text
  assert (text.name, text.size, text.pooling) == ('bert', 'minilm_l6',
                                                  pooling)
  assert text.pretrained == 'all-minilm-l6-v2'
  assert scratch.model.encoders.text.pretrained == ''
  assert "wordpiece(16, checkpoint='all-minilm-l6-v2')" in (
      pretrained.input.pp_train)
  assert pretrained.input.pp_train == pretrained.input.pp_eval
  assert pretrained.optimizer.param_learning_rates == (
      ('text_encoder/', minilm.TEXT_LEARNING_RATE),)
  scratch.model.encoders.text.pretrained = text.pretrained
  assert scratch == pretrained


@pytest.mark.parametrize('get_config, variant, match', [
    (minilm.get_config, 'init=random', 'init=.random.'),
    (retrieval.get_config, 'init=scratch', 'text=minilm only'),
])
def test_bad_init_variant_is_refused(get_config, variant, match):
  with pytest.raises(ValueError, match=match):
    get_config(variant)


def test_training_starts_the_tower_from_the_pretrained_weights(data_dir,
                                                                tmp_path):
  """A run of configs/minilm.py with its text tower frozen ends with exactly
  the checkpoint's weights in the tower: the trainer loaded them."""
  import jax  # pylint: disable=g-import-not-at-top
  from mmjax.experiment import Experiment, train_and_evaluate  # pylint: disable=g-import-not-at-top
  from mmjax.models.pretrained import load_pretrained  # pylint: disable=g-import-not-at-top
  from tiny import set_fields  # pylint: disable=g-import-not-at-top
  from trees import assert_trees_equal  # pylint: disable=g-import-not-at-top
  config = set_fields(
      minilm.get_config('fusion=concat'), dataset__builder_config='tiny',
      dataset__data_dir=data_dir, input__global_batch_size=16,
      input__eval_batch_size=32, num_train_steps=1, log_every_steps=1,
      eval_every_steps=1, checkpoint_every_steps=1,
      optimizer__frozen=('text_encoder/',), optimizer__warmup_steps=0,
      optimizer__param_learning_rates=(),
      # Plain SGD keeps no state: the checkpoint holds the 22 M parameters
      # once, not three times.
      optimizer__name='sgd', optimizer__momentum=0.0)
  train_and_evaluate(config, str(tmp_path), progress=False)
  experiment = Experiment(config)
  runner = experiment.runner
  trained = experiment.make_checkpointer(str(tmp_path)).restore(
      1, runner.restore_target(), experiment.train_iterator())
  trained = jax.device_get(trained.params)
  # The checkpoint's tower weights, loaded into zeros of the trained tree's
  # structure.
  expected = load_pretrained(jax.tree.map(np.zeros_like, trained), config)
  assert_trees_equal(trained['text_encoder'], expected['text_encoder'])
