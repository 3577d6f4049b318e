"""Tests of the fusion methods; generic ones run for every registered name."""
import functools

from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np
import pytest

from configs import default
from mmjax import sharding
from mmjax.errors import ConfigError
from mmjax.models import fusion  # noqa: F401  (registers the methods)
from mmjax.models import layers
from mmjax.models.fusion import base
from mmjax.registry import FUSIONS
from mmjax.validate import validate_config

NAMES = FUSIONS.names()
MODALITIES = ('image', 'audio', 'text')
LENGTHS = {'image': 4, 'audio': 6, 'text': 5}
B, D = 4, 16

# Valid steps per example; 0 marks the modality absent for that example.
# Example 0: audio absent; 1: only image; 2: all present; 3: none present.
PADDED_LENGTHS = {'image': (4, 4, 4, 0), 'audio': (0, 0, 3, 0),
                  'text': (2, 0, 5, 0)}


def make_tokens(modalities=MODALITIES, seed=0):
  keys = jax.random.split(jax.random.key(seed), len(modalities))
  return {m: jax.random.normal(k, (B, LENGTHS[m], D))
          for m, k in zip(modalities, keys)}


def make_masks(lengths, modalities=MODALITIES):
  """Masks [B, T_m] from valid lengths per example: {m: lengths} or one int."""
  per_example = {m: np.broadcast_to(
      lengths if isinstance(lengths, int) else lengths[m], (B,))
                 for m in modalities}
  return {m: jnp.arange(LENGTHS[m])[None, :] < per_example[m][:, None]
          for m in modalities}


def corrupt(tokens, masks):
  """Huge values wherever the mask is 0 (absent modalities and padding)."""
  return {m: jnp.where(masks[m][..., None], t,
                       1e30 * jax.random.normal(jax.random.key(7), t.shape))
          for m, t in tokens.items()}




# Everything runs jitted and cached: one compile per method and input
# structure is much faster than op-by-op dispatch.
@functools.lru_cache(maxsize=None)
def build(name, modalities, **knobs):
  """The module and its variables, initialised with every modality present."""
  module = FUSIONS.get(name, field='model.fusion.name')(
      modalities=modalities, dim=D, **knobs)
  variables = jax.jit(functools.partial(module.init, train=False))(
      jax.random.key(0), make_tokens(modalities), make_masks(99, modalities))
  return module, variables


def output_loss(out):
  """A scalar of every output: the sum of squares of pooled (and tokens)."""
  extra = 0.0 if out.tokens is None else jnp.sum(out.tokens ** 2)
  return jnp.sum(out.pooled ** 2) + extra


@functools.lru_cache(maxsize=None)
def compiled(name, modalities):
  """Jitted (forward, grads) of the method `name` with default knobs.

  forward returns (FusionOutput, sown intermediates).
  """
  module, _ = build(name, modalities)

  def forward(variables, tokens, masks):
    out, state = module.apply(variables, tokens, masks, train=False,
                              mutable=['intermediates'])
    return out, jax.tree.map(lambda x: x[0], state.get('intermediates', {}),
                             is_leaf=lambda x: isinstance(x, tuple))

  def loss(params, tokens, masks):
    return output_loss(forward({'params': params}, tokens, masks)[0])

  return jax.jit(forward), jax.jit(jax.grad(loss, argnums=(0, 1)))


def apply(name, tokens, masks, modalities=MODALITIES):
  """(FusionOutput, intermediates) of the method with default knobs."""
  return compiled(name, modalities)[0](build(name, modalities)[1], tokens,
                                       masks)


def loss_and_grads(name, tokens, masks):
  """Gradients of a loss of all outputs w.r.t. (params, tokens)."""
  return compiled(name, MODALITIES)[1](build(name, MODALITIES)[1]['params'],
                                       tokens, masks)


def assert_all_finite(tree):
  for leaf in jax.tree.leaves(tree):
    assert np.isfinite(np.asarray(leaf)).all()


def test_every_method_is_registered():
  assert set(NAMES) >= {'concat', 'late', 'weighted_sum', 'modality_attention',
                        'gated', 'cross_attention'}


@pytest.mark.parametrize('num_modalities', [1, 2, 3])
@pytest.mark.parametrize('name', NAMES)
def test_output_shapes(name, num_modalities):
  modalities = MODALITIES[:num_modalities]
  out, _ = apply(name, make_tokens(modalities),
                 make_masks(PADDED_LENGTHS, modalities), modalities)
  assert out.pooled.shape == (B, D)
  assert_all_finite(out.pooled)
  if out.tokens is not None:
    total = sum(LENGTHS[m] for m in modalities)
    assert out.tokens.shape == (B, total, D)
    assert out.mask.shape == (B, total)


@pytest.mark.parametrize('name', NAMES)
def test_absent_values_do_not_change_outputs(name):
  tokens, masks = make_tokens(), make_masks(PADDED_LENGTHS)
  clean = apply(name, tokens, masks)
  garbage = apply(name, corrupt(tokens, masks), masks)
  assert_all_finite(garbage)
  for a, b in zip(jax.tree.leaves(clean), jax.tree.leaves(garbage)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('name', NAMES)
def test_gradients_finite_and_zero_for_absent_tokens(name):
  masks = make_masks(PADDED_LENGTHS)
  param_grads, token_grads = loss_and_grads(
      name, corrupt(make_tokens(), masks), masks)
  assert_all_finite((param_grads, token_grads))
  for m, g in token_grads.items():
    valid = np.asarray(masks[m])
    assert (np.asarray(g)[~valid] == 0).all(), m
    assert np.abs(np.asarray(g)[valid]).sum() > 0, m


@pytest.mark.parametrize('name', NAMES)
def test_missing_key_is_all_absent(name):
  tokens, masks = make_tokens(), make_masks(PADDED_LENGTHS)
  masks['audio'] = jnp.zeros_like(masks['audio'])
  expected = apply(name, tokens, masks)[0].pooled
  del tokens['audio'], masks['audio']
  np.testing.assert_allclose(apply(name, tokens, masks)[0].pooled, expected,
                             rtol=1e-5, atol=1e-6)
  assert_all_finite(loss_and_grads(name, tokens, masks))


@pytest.mark.parametrize('name', NAMES)
def test_all_absent_is_finite(name):
  masks = make_masks(0)
  tokens = corrupt(make_tokens(), masks)
  assert_all_finite(apply(name, tokens, masks))
  assert_all_finite(loss_and_grads(name, tokens, masks))


@pytest.mark.parametrize('name', NAMES)
def test_jit_does_not_recompile_when_only_mask_values_change(name):
  forward, _ = compiled(name, MODALITIES)
  variables, tokens = build(name, MODALITIES)[1], make_tokens()
  forward(variables, tokens, make_masks(99))
  cache_size = forward._cache_size()  # pylint: disable=protected-access
  for lengths in (PADDED_LENGTHS, 0):
    assert_all_finite(forward(variables, tokens, make_masks(lengths)))
  assert forward._cache_size() == cache_size  # pylint: disable=protected-access


@pytest.mark.parametrize('name', NAMES)
def test_sharded_loss_equals_single_device_loss(name):
  """The loss of 8 examples with the parameters sharded by the default
  config's logical rules over a 2 x 4 data x fsdp mesh of the 8 devices, the
  inputs split over the batch and activation constraints in force equals
  the single-device loss (summed over two batches of 4, with the forward
  pass the other tests compiled: examples do not interact)."""
  module, variables = build(name, MODALITIES)
  # Every absence pattern of PADDED_LENGTHS, then all present.
  halves = [(make_tokens(seed=0), make_masks(PADDED_LENGTHS)),
            (make_tokens(seed=1), make_masks(99))]
  single = sum(output_loss(apply(name, *half)[0]) for half in halves)

  def loss(variables, tokens, masks):
    return output_loss(module.apply(variables, tokens, masks, train=False))

  mesh = sharding.make_mesh(dict(data=2, fsdp=4, tensor=1))
  rules = default.get_config().parallel.rules
  shardings = sharding.state_shardings(variables, mesh, rules)
  assert not all(s.is_fully_replicated for s in jax.tree.leaves(shardings))
  inputs = jax.device_put(
      jax.tree.map(lambda a, b: jnp.concatenate([a, b]), *halves),
      sharding.batch_sharding(mesh, rules))
  with sharding.activation_sharding(mesh, rules):
    sharded = jax.jit(loss)(
        jax.device_put(nn.meta.unbox(variables), shardings), *inputs)
  np.testing.assert_allclose(sharded, single, rtol=1e-5)


@pytest.mark.parametrize('name', NAMES)
def test_dropout_is_applied_in_training(name):
  module, _ = build(name, MODALITIES, dropout=0.5)
  variables = build(name, MODALITIES)[1]  # Dropout adds no parameters.
  tokens, masks = make_tokens(), make_masks(99)
  train = jax.jit(lambda: module.apply(
      variables, tokens, masks, train=True,
      rngs={'dropout': jax.random.key(1, impl='rbg')}).pooled)()
  assert_all_finite(train)
  assert not np.allclose(train, apply(name, tokens, masks)[0].pooled)


def present(masks):
  """[B, M] presence of each modality per example, in MODALITIES order."""
  return np.stack([np.asarray(masks[m]).any(axis=1) for m in MODALITIES], 1)


@pytest.mark.parametrize('name', ['weighted_sum', 'modality_attention'])
def test_weights_are_a_softmax_over_present_modalities(name):
  masks = make_masks(PADDED_LENGTHS)
  weights = np.asarray(apply(name, make_tokens(), masks)[1]['weights'])
  is_present = present(masks)
  assert weights.shape == (B, len(MODALITIES))
  assert (weights >= 0).all() and (weights[~is_present] == 0).all()
  np.testing.assert_allclose(weights.sum(1), is_present.any(1), rtol=1e-6)


def test_modality_attention_weights_depend_on_content():
  masks = make_masks(99)
  weights = [apply('modality_attention', make_tokens(seed=s), masks)[1]
             ['weights'] for s in (0, 1)]
  assert not np.allclose(*weights)


def test_gated_gates_are_a_softmax_over_present_modalities():
  masks = make_masks(PADDED_LENGTHS)
  gates = np.asarray(apply('gated', make_tokens(), masks)[1]['gates'])
  is_present = present(masks)
  assert gates.shape == (B, len(MODALITIES), D)
  assert (gates >= 0).all() and (gates[~is_present] == 0).all()
  np.testing.assert_allclose(
      gates.sum(1), np.broadcast_to(is_present.any(1)[:, None], (B, D)),
      rtol=1e-6)


def test_late_is_the_mean_of_per_modality_heads():
  tokens, masks = make_tokens(), make_masks(PADDED_LENGTHS)
  params = build('late', MODALITIES)[1]['params']
  heads = np.stack([
      layers.Mlp(D, D).apply({'params': params[f'{m}_head']},
                             layers.masked_mean(tokens[m], masks[m]),
                             train=False)
      for m in MODALITIES], axis=1)  # [B, M, D]
  is_present = present(masks)
  expected = (heads * is_present[..., None]).sum(1) / np.maximum(
      is_present.sum(1), 1)[:, None]
  np.testing.assert_allclose(apply('late', tokens, masks)[0].pooled, expected,
                             rtol=1e-5, atol=1e-6)


def test_cross_attention_updates_only_tokens_with_context():
  tokens, masks = make_tokens(), make_masks(PADDED_LENGTHS)
  out, _ = apply('cross_attention', tokens, masks)
  image = out.tokens[:, :LENGTHS['image']]
  # Example 1 has only image tokens: nothing to attend to, so they pass
  # through; example 0 also has text, so its image tokens are updated.
  np.testing.assert_allclose(image[1], tokens['image'][1])
  assert not np.allclose(image[0], tokens['image'][0])
  np.testing.assert_array_equal(
      out.mask, jnp.concatenate([masks[m] for m in MODALITIES], axis=1))


@pytest.mark.parametrize('name, knobs, field', [
    ('concat', dict(hidden_dim=-1), 'model.fusion.hidden_dim'),
    ('late', dict(hidden_dim=0), 'model.fusion.hidden_dim'),
    ('weighted_sum', dict(scores='uniform'), 'model.fusion.scores'),
    ('cross_attention', dict(num_heads=3), 'model.fusion.num_heads'),
])
def test_bad_knob_raises_config_error(name, knobs, field):
  with pytest.raises(ConfigError) as error:
    build(name, MODALITIES, **knobs)
  assert error.value.field == field


@pytest.mark.parametrize('name', NAMES)
def test_default_config_holds_every_knob_at_its_default(name):
  config = default.get_config(f'fusion={name}')
  cls = FUSIONS.get(name, 'model.fusion.name')
  knobs = {f.name: f.default for f in base.knobs(cls)}
  assert dict(config.model.fusion) == dict(knobs, name=name)
  validate_config(config, num_devices=8)


@pytest.mark.parametrize('variant, overrides', [
    ('', dict(num_heads=8, mlp_dim=32, dropout=0.25)),
    ('fusion=film', dict(target='text', hidden_dim=0)),
])
def test_knobs_are_overridable_from_the_command_line(variant, overrides):
  """As experiments/train.py parses them: a locked config, knobs whose
  default is None included."""
  argv = ['train', f'--config={default.__file__}:{variant}'] + [
      f'--config.model.fusion.{k}={v}' for k, v in overrides.items()]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, '', flag_values=flag_values,
                                  lock_config=True, sys_argv=argv)
  flag_values(argv)
  knobs = dict(flag_values.config.model.fusion)
  module = FUSIONS.get(knobs.pop('name'), 'model.fusion.name')(
      modalities=MODALITIES, dim=D, **knobs)
  assert {k: getattr(module, k) for k in overrides} == overrides
