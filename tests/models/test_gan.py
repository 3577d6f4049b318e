"""Tests of the text-conditioned GAN (mmjax/models/gan.py)."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from mmjax.errors import ConfigError
from mmjax.models import layers
from mmjax.models.gan import GAN, SpectralNorm
from mmjax.models.image import conv
from mmjax.models.model import build_model
from mmjax.registry import MODELS
from tiny import set_fields

VOCAB = 11
BATCH = 4


def gan_config(**model_fields):
  """A tiny, valid 'gan' config: 16-wide towers, an embedding-bag text
  encoder; `model_fields` override `config.model`'s."""
  model = dict(name='gan', modalities=('image', 'text'),
               encoders=dict(text=dict(name='embedding_bag', dim=16)),
               noise_dim=8, gen_width=8, disc_width=8, dim=16,
               matching_aware=True, dtype='float32', param_dtype='float32')
  model.update(model_fields)
  return ml_collections.ConfigDict(dict(task=dict(name='gan'), model=model))


def make_batch(size=16, channels=1, seed=0):
  """Images [B, size, size, channels] in [-1, 1], captions [B, 6] with a
  padded tail on the last row."""
  rng = np.random.default_rng(seed)
  text = rng.integers(1, VOCAB, (BATCH, 6)).astype(np.int32)
  mask = np.ones_like(text, bool)
  mask[-1, 4:] = False
  return {'image': rng.uniform(-1, 1, (BATCH, size, size, channels)
                               ).astype(np.float32),
          'text': np.where(mask, text, 0), 'text_mask': mask}


@functools.lru_cache(maxsize=None)
def build(matching_aware=True):
  """(model, boxed init variables, jitted apply(variables, batch, train))."""
  model = build_model(gan_config(matching_aware=matching_aware),
                      num_outputs=0, vocab_size=VOCAB)
  rng = jax.random.key(0)
  variables = jax.jit(lambda batch: model.init(
      {'params': rng, 'dropout': rng}, batch, train=False))(make_batch())

  @functools.partial(jax.jit, static_argnames='train')
  def apply(variables, batch, train):
    if train:  # As the adversarial train step calls it.
      return model.apply(variables, batch, train=True,
                         rngs={'dropout': jax.random.key(1),
                               'noise': jax.random.key(2)},
                         mutable=['batch_stats'])
    return model.apply(variables, batch, train=False)

  return model, variables, apply


def perturb(tree, scale=0.1):
  return jax.tree.map(lambda x: x + scale * jnp.ones_like(x), tree)


@pytest.mark.parametrize('kind', ['dense', 'conv'])
def test_spectral_norm_sigma_matches_svd(kind):
  x = np.random.default_rng(0).normal(
      size=(2, 32) if kind == 'dense' else (2, 5, 5, 4)).astype(np.float32)
  layer = (layers.dense(16, 'embed', 'mlp') if kind == 'dense'
           else conv(8, (3, 3)))
  norm = SpectralNorm(layer, n_steps=50)
  variables = norm.init(jax.random.key(0), x, update_stats=False)
  y, updates = norm.apply(variables, x, update_stats=True,
                          mutable=['batch_stats'])
  # The wrapped layer keeps its logical axis names.
  params = variables['params']['layer_instance']
  assert isinstance(params['kernel'], nn.Partitioned)
  kernel = np.asarray(params['kernel'].unbox())
  # Flax flattens a kernel's leading axes: [kh, kw, in, out] -> [kh*kw*in, out].
  matrix = kernel.reshape(-1, kernel.shape[-1])
  sigma = updates['batch_stats']['layer_instance/kernel/sigma']
  np.testing.assert_allclose(sigma, np.linalg.svd(matrix, compute_uv=False)[0],
                             atol=1e-3)
  if kind == 'dense':  # The layer ran with kernel / sigma.
    np.testing.assert_allclose(
        y, x @ (kernel / sigma) + np.asarray(params['bias'].unbox()),
        rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('matching_aware', [True, False])
def test_outputs_shapes_and_dtypes(matching_aware):
  _, variables, apply = build(matching_aware)
  variables = nn.meta.unbox(variables)
  batch = make_batch()
  train_outputs, updates = apply(variables, batch, train=True)
  eval_outputs = apply(variables, batch, train=False)
  keys = {'fake_images', 'real_logits', 'fake_logits'} | (
      {'mismatch_logits'} if matching_aware else set())
  for outputs in (train_outputs, eval_outputs):
    assert set(outputs) == keys
    assert outputs['fake_images'].shape == (BATCH, 16, 16, 1)
    for key in keys:
      assert outputs[key].dtype == jnp.float32
      assert np.isfinite(outputs[key]).all()
      if key != 'fake_images':
        assert outputs[key].shape == (BATCH,)
    assert np.abs(outputs['fake_images']).max() <= 1.0
  # Training advances the spectral-norm power iteration ('batch_stats');
  # the generator has none.
  assert set(updates['batch_stats']) == {'discriminator'}
  before = jax.tree.leaves(variables['batch_stats'])
  after = jax.tree.leaves(updates['batch_stats'])
  assert any(not np.array_equal(b, a) for b, a in zip(before, after))


def test_param_tree_and_logical_names():
  _, variables, _ = build()
  params = variables['params']
  assert set(params) == {'generator', 'discriminator', 'generator_ema'}
  # The EMA keeps the generator's logical axis names, so it is sharded alike.
  specs = nn.get_partition_spec(params)
  assert specs['generator_ema'] == specs['generator']
  assert specs['generator_ema']['block0']['conv']['kernel'] == P(
      None, None, None, 'channels')
  assert specs['discriminator']['down0']['kernel'] == P(
      None, None, None, 'channels')
  assert specs['generator']['text_encoder']['embedding']['embedding'] == P(
      'vocab', 'embed')


def test_ema_equals_generator_at_init():
  _, variables, _ = build()
  params = nn.meta.unbox(variables['params'])
  generator, ema = params['generator'], params['generator_ema']
  assert jax.tree.structure(generator) == jax.tree.structure(ema)
  for g, e in zip(jax.tree.leaves(generator), jax.tree.leaves(ema)):
    np.testing.assert_array_equal(g, e)


def test_eval_uses_ema_generator():
  _, variables, apply = build()
  variables = nn.meta.unbox(variables)
  batch = make_batch()
  fakes = apply(variables, batch, train=False)['fake_images']
  params = variables['params']

  moved_ema = {**variables, 'params': {
      **params, 'generator_ema': perturb(params['generator_ema'])}}
  assert not np.allclose(apply(moved_ema, batch, train=False)['fake_images'],
                         fakes)
  moved_generator = {**variables, 'params': {
      **params, 'generator': perturb(params['generator'])}}
  np.testing.assert_array_equal(
      apply(moved_generator, batch, train=False)['fake_images'], fakes)
  # Training samples come from the trained generator instead.
  train_fakes = apply(moved_generator, batch, train=True)[0]['fake_images']
  moved_train_fakes = apply(moved_ema, batch, train=True)[0]['fake_images']
  np.testing.assert_array_equal(moved_train_fakes,
                                apply(variables, batch,
                                      train=True)[0]['fake_images'])
  assert not np.allclose(train_fakes, moved_train_fakes)


def test_generate_samples_noise_and_matches_eval():
  model, variables, apply = build()
  variables = nn.meta.unbox(variables)
  batch = make_batch()
  sample = jax.jit(lambda v, key, ema: model.apply(
      v, batch['text'], batch['text_mask'], rngs={'noise': key}, ema=ema,
      method=GAN.generate), static_argnums=2)
  images = sample(variables, jax.random.key(3), True)
  assert images.shape == (BATCH, 16, 16, 1) and images.dtype == jnp.float32
  assert not np.allclose(images, sample(variables, jax.random.key(4), True))
  # At init the EMA is the generator: same noise, same samples.
  np.testing.assert_allclose(sample(variables, jax.random.key(3), False),
                             images, atol=1e-6)
  # Without a 'noise' RNG the noise is fixed: eval's samples.
  fixed = model.apply(variables, batch['text'], batch['text_mask'],
                      method=GAN.generate)
  np.testing.assert_allclose(
      fixed, apply(variables, batch, train=False)['fake_images'], atol=1e-6)


def test_projection_logits_depend_on_text():
  _, variables, apply = build()
  variables = nn.meta.unbox(variables)
  batch = make_batch()
  other = {**batch, 'text': make_batch(seed=1)['text']}
  logits = apply(variables, batch, train=False)['real_logits']
  other_logits = apply(variables, other, train=False)['real_logits']
  assert np.abs(np.asarray(logits) - np.asarray(other_logits)).min() > 1e-6
  # Matching-aware fakes: the real images with the previous row's captions.
  mismatch = apply(variables, batch, train=False)['mismatch_logits']
  rolled = {**batch, 'text': np.roll(batch['text'], 1, axis=0),
            'text_mask': np.roll(batch['text_mask'], 1, axis=0)}
  np.testing.assert_allclose(
      mismatch, apply(variables, rolled, train=False)['real_logits'],
      rtol=1e-5, atol=1e-5)


def test_check_config():
  assert 'gan' in MODELS.names()
  GAN.check_config(gan_config())
  cases = [
      (dict(task__name='classification'), 'task.name'),
      (dict(model__modalities=('image', 'audio', 'text')), 'model.modalities'),
      (dict(model__modalities=('image',)), 'model.modalities'),
      (dict(model__resolution=32), 'model.resolution'),
      (dict(model__gen_width=0), 'model.gen_width'),
      (dict(model__encoders__text=dict(name='gpt2')),
       'model.encoders.text.name'),
  ]
  for fields, field in cases:
    with pytest.raises(ConfigError) as error:
      GAN.check_config(set_fields(gan_config(), **fields))
    assert error.value.field == field, (fields, error.value)
  # ConfigDict keeps a field's type, so a non-bool comes from the file itself.
  with pytest.raises(ConfigError, match='model.matching_aware'):
    GAN.check_config(gan_config(matching_aware=1))


@pytest.mark.parametrize('shape', [(12, 12, 1), (16, 8, 1), (4, 4, 3)])
def test_bad_image_size_names_input_pp_train(shape):
  model, _, _ = build()
  batch = make_batch()
  batch['image'] = np.zeros((BATCH,) + shape, np.float32)
  with pytest.raises(ValueError, match=r'input\.pp_train') as error:
    jax.eval_shape(lambda: model.init(
        {'params': jax.random.key(0), 'dropout': jax.random.key(0)}, batch,
        train=False))
  assert str((BATCH,) + shape) in str(error.value)
