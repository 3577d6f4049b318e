"""Tests for mmjax.train.optimizer: schedules, weight-decay mask, updates."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from mmjax.errors import ConfigError
from mmjax.models import layers
from mmjax.train.optimizer import (check_optimizer_config, decay_mask,
                                   make_optimizer)


def config(**fields):
  return ml_collections.ConfigDict(
      {'name': 'adamw', 'learning_rate': 1.0, 'warmup_steps': 0,
       'schedule': 'constant', **fields})


@pytest.mark.parametrize('schedule, middle', [
    ('cosine', 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi / 4))),
    ('linear', 1.0 - 0.9 / 4),
    ('constant', 1.0),
])
def test_schedule_warms_up_then_decays_to_the_end_factor(schedule, middle):
  _, lr = make_optimizer(config(schedule=schedule, warmup_steps=10,
                                end_learning_rate_factor=0.1), 110)
  end = 1.0 if schedule == 'constant' else 0.1
  np.testing.assert_allclose(
      [lr(0), lr(5), lr(10), lr(35), lr(110), lr(200)],
      [0.0, 0.5, 1.0, middle, end, end], rtol=1e-5)


class Block(nn.Module):
  """LayerNorm, attention (2-D biases) and dense layers, as models use them."""

  @nn.compact
  def __call__(self, x):
    x = layers.AddPositions(max_len=4)(x)
    x = layers.TransformerBlock(num_heads=2, mlp_dim=8)(x, train=False)
    return layers.dense(3, 'embed', 'classes')(x)


def test_decay_mask_decays_kernels_and_spares_biases_and_norms():
  boxed = jax.jit(Block().init)(jax.random.key(0), jnp.zeros((1, 4, 4)))[
      'params']
  params = nn.meta.unbox(boxed)
  mask = decay_mask(params)
  flat = {'/'.join(k.key for k in path): m
          for path, m in jax.tree_util.tree_leaves_with_path(mask)}
  names = {path.rsplit('/', 1)[1] for path in flat}
  assert names == {'kernel', 'bias', 'scale', 'table'}
  for path, decayed in flat.items():
    assert decayed == path.endswith(('kernel', 'table')), path
  assert not flat['TransformerBlock_0/attn/query/bias']  # [heads, kv]
  # Boxed parameters (as `init_state` passes them to `tx.init`) agree.
  assert jax.tree.leaves(decay_mask(boxed)) == jax.tree.leaves(mask)

  # One AdamW step with zero gradients only decays: kernels and tables
  # shrink by lr * weight_decay, every other parameter stays.
  tx, _ = make_optimizer(config(weight_decay=0.5, learning_rate=0.1), 10)
  state = nn.meta.unbox(tx.init(boxed))
  updates, _ = jax.jit(tx.update)(jax.tree.map(jnp.zeros_like, params), state,
                                  params)
  new_params = optax.apply_updates(params, updates)
  for decayed, old, new in zip(jax.tree.leaves(mask), jax.tree.leaves(params),
                               jax.tree.leaves(new_params)):
    np.testing.assert_allclose(new, old * (0.95 if decayed else 1.0),
                               rtol=1e-6)


@pytest.mark.parametrize('fields', [
    dict(name='adamw', weight_decay=1e-4),
    dict(name='sgd', momentum=0.9, nesterov=True, weight_decay=1e-4),
    dict(name='sgd', momentum=0.0),
    dict(name='adam'),
    dict(name='lamb'),
])
def test_steps_on_a_quadratic_decrease_the_loss(fields):
  target = {'kernel': jnp.array([[1.0, -2.0], [3.0, 0.5]]),
            'bias': jnp.array([0.5, -1.0])}
  params = jax.tree.map(jnp.zeros_like, target)

  def loss(p):
    return sum(jnp.sum((p[k] - target[k]) ** 2) for k in p)

  tx, _ = make_optimizer(config(learning_rate=0.05, grad_clip_norm=10.0,
                                **fields), 20)
  state = tx.init(params)
  losses = []
  for _ in range(5):
    value, grads = jax.value_and_grad(loss)(params)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    losses.append(float(value))
  assert all(b < a for a, b in zip(losses, losses[1:])), losses


def test_grad_clip_norm_caps_the_gradient_norm():
  params = {'w': jnp.zeros(4)}
  grads = {'w': jnp.array([3.0, 4.0, 0.0, 0.0])}  # norm 5.
  for clip, norm in ((1.0, 1.0), (None, 5.0), (0.0, 5.0)):
    tx, _ = make_optimizer(
        config(name='sgd', momentum=0.0, grad_clip_norm=clip), 10)
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(optax.tree.norm(updates), norm, rtol=1e-6)


@pytest.mark.parametrize('name', ['adamw', 'adam'])
def test_flatten_updates_like_per_parameter_moments(name):
  """The moments over one flat vector give each parameter the update that
  per-parameter moments give it, weight decay (kernels only) included."""
  params = {'dense': {'kernel': jnp.linspace(-1., 1., 12).reshape(3, 4),
                      'bias': jnp.linspace(0., 1., 4)},
            'scale': jnp.ones(2)}
  fields = dict(name=name, learning_rate=0.1, weight_decay=0.5,
                grad_clip_norm=1.0)
  plain, _ = make_optimizer(config(**fields), 10)
  flat_tx, _ = make_optimizer(config(flatten=True, **fields), 10)
  states = plain.init(params), flat_tx.init(params)
  assert [x.shape for x in jax.tree.leaves(states[1])
          if np.ndim(x)] == [(18,), (18,)]  # mu and nu: 12 + 4 + 2 values.
  for step in range(3):
    grads = jax.tree.map(lambda p: jnp.sin(p * (step + 2.)), params)
    (expected, state0), (updates, state1) = (
        tx.update(grads, state, params)
        for tx, state in zip((plain, flat_tx), states))
    states = state0, state1
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6,
                                                         atol=1e-7),
                 expected, updates)
  # The flat moments leave the decay per parameter: AdamW's mask still
  # spares biases and scales.
  if name == 'adamw':
    undecayed, _ = make_optimizer(config(flatten=True, **{
        **fields, 'weight_decay': 0.}), 10)
    first = [tx.update(grads, tx.init(params), params)[0]
             for tx in (flat_tx, undecayed)]
    assert not np.allclose(first[0]['dense']['kernel'],
                           first[1]['dense']['kernel'])
    np.testing.assert_array_equal(first[0]['dense']['bias'],
                                  first[1]['dense']['bias'])
    np.testing.assert_array_equal(first[0]['scale'], first[1]['scale'])


@pytest.mark.parametrize('fields, field, match', [
    (dict(name='rmsprop'), 'optimizer.name', 'adam, adamw, lamb, sgd'),
    (dict(schedule='step'), 'optimizer.schedule', 'constant, cosine, linear'),
    (dict(learning_rate=0.0), 'optimizer.learning_rate', '> 0'),
    (dict(learning_rate='1e-3'), 'optimizer.learning_rate', '> 0'),
    (dict(warmup_steps=-1), 'optimizer.warmup_steps', 'num_train_steps=10'),
    (dict(warmup_steps=11), 'optimizer.warmup_steps', 'num_train_steps=10'),
    (dict(end_learning_rate_factor=1.5), 'optimizer.end_learning_rate_factor',
     r'\[0, 1\]'),
    (dict(grad_clip_norm=-1.0), 'optimizer.grad_clip_norm', '>= 0'),
    (dict(beta1=0.9), 'optimizer.beta1', 'b1, b2'),
    (dict(name='sgd', flatten=True), 'optimizer.flatten', 'adam and adamw'),
    (dict(flatten=1), 'optimizer.flatten', 'True or False'),
])
def test_bad_config_raises_config_error(fields, field, match):
  with pytest.raises(ConfigError, match=match) as error:
    check_optimizer_config(config(**fields), num_train_steps=10)
  assert error.value.field == field
  with pytest.raises(ConfigError):
    make_optimizer(config(**fields), num_train_steps=10)


def tower_params():
  """Two towers and a head, as a model's top-level scopes name them."""
  return {'text_encoder': {'word': {'embedding': jnp.ones((5, 2))},
                           'layer0': {'fc1': {'kernel': jnp.ones((2, 2)),
                                              'bias': jnp.ones(2)}}},
          'image_encoder': {'conv': {'kernel': jnp.ones((2, 2))}},
          'head': {'kernel': jnp.ones((2, 3)), 'bias': jnp.ones(3)}}


def flat(tree):
  return {jax.tree_util.keystr(p, simple=True, separator='/'): x
          for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def test_frozen_parameters_never_change_and_hold_no_optimizer_state():
  params = tower_params()
  tx, _ = make_optimizer(config(
      weight_decay=0.5, learning_rate=0.1,
      frozen=('text_encoder/word/', 'image_encoder/')), 10)
  state = tx.init(params)
  step = jax.jit(tx.update)
  new = params
  for _ in range(3):
    grads = jax.tree.map(jnp.ones_like, new)
    updates, state = step(grads, state, new)
    new = optax.apply_updates(new, updates)
  for path, value in flat(new).items():
    frozen = path.startswith(('text_encoder/word/', 'image_encoder/'))
    changed = not np.array_equal(value, flat(params)[path])
    assert changed != frozen, path
  # Adam moments exist for the trained parameters only.
  moments = sum(x.size for x in jax.tree.leaves(state))
  trained = sum(x.size for p, x in flat(params).items()
                if not p.startswith(('text_encoder/word/', 'image_encoder/')))
  assert moments == 2 * trained + 2  # mu, nu and two step counts.


def test_param_learning_rates_scale_their_groups_updates():
  params = tower_params()
  tx, schedule = make_optimizer(config(
      name='sgd', momentum=0.0, learning_rate=1.0, warmup_steps=2,
      schedule='linear', param_learning_rates=(('text_encoder/', 0.1),)), 10)
  state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  for step in range(4):
    updates, state = tx.update(grads, state, params)
    for path, update in flat(updates).items():
      peak = 0.1 if path.startswith('text_encoder/') else 1.0
      # Same warmup and decay, scaled to the group's peak.
      np.testing.assert_allclose(update, -peak * schedule(step), rtol=1e-6,
                                 err_msg=path)


def test_frozen_wins_and_clipping_sees_only_trained_gradients():
  params = {'a': jnp.zeros(2), 'b': jnp.zeros(2)}
  grads = {'a': jnp.array([3.0, 4.0]), 'b': jnp.array([300.0, 400.0])}
  tx, _ = make_optimizer(config(
      name='sgd', momentum=0.0, grad_clip_norm=10.0, frozen=('b',),
      param_learning_rates=(('b', 0.5),)), 10)
  updates, _ = tx.update(grads, tx.init(params), params)
  # Unclipped: the trained gradient's norm (5) is below 10.
  np.testing.assert_allclose(updates['a'], [-3.0, -4.0], rtol=1e-6)
  np.testing.assert_array_equal(updates['b'], [0.0, 0.0])


def test_boxed_parameters_get_the_same_labels():
  boxed = jax.jit(Block().init)(jax.random.key(0), jnp.zeros((1, 4, 4)))[
      'params']
  params = nn.meta.unbox(boxed)
  tx, _ = make_optimizer(config(frozen=('TransformerBlock_0/attn/',),
                                param_learning_rates=(('Dense_0/', 0.1),)),
                         10)
  boxed_state = nn.meta.unbox(tx.init(boxed))
  plain_state = tx.init(params)
  assert (jax.tree.structure(boxed_state) ==
          jax.tree.structure(plain_state))
  updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), boxed_state,
                         params)
  for path, update in flat(updates).items():
    assert (not np.any(update)) == path.startswith(
        'TransformerBlock_0/attn/'), path


@pytest.mark.parametrize('fields, field, match', [
    (dict(frozen='text_encoder/'), 'optimizer.frozen', 'tuple'),
    (dict(frozen=('(',)), 'optimizer.frozen[0]', 'not a regular expression'),
    (dict(param_learning_rates=(('head/', 0.0),)),
     'optimizer.param_learning_rates[0]', 'learning rate > 0'),
    (dict(param_learning_rates=('head/',)),
     'optimizer.param_learning_rates[0]', 'pair'),
])
def test_bad_freeze_or_group_config_raises_config_error(fields, field, match):
  with pytest.raises(ConfigError, match=match) as error:
    make_optimizer(config(**fields), num_train_steps=10)
  assert error.value.field == field


@pytest.mark.parametrize('fields, field, match', [
    (dict(frozen=('text_encodr/',)), 'optimizer.frozen[0]',
     'matches no parameter.*head, image_encoder, text_encoder'),
    (dict(param_learning_rates=(('text_encoder/', 0.1), ('text_', 0.2))),
     'optimizer.param_learning_rates[1]', 'at most one learning rate'),
])
def test_patterns_are_checked_against_the_parameters(fields, field, match):
  tx, _ = make_optimizer(config(**fields), num_train_steps=10)
  with pytest.raises(ConfigError, match=match) as error:
    tx.init(tower_params())
  assert error.value.field == field
