"""Per-method behaviour of the vector-level fusion methods (tensor, low_rank,
film, bilinear, nonlocal_gate), and modality dropout in the model.

The generic tests of every method (shapes, absent modalities, gradients,
recompilation, dropout, sharding) are in test_fusion.py; this file reuses
its jitted, cached helpers.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from mmjax.errors import ConfigError
from mmjax.models import model as model_lib
from mmjax.models.fusion import base
from mmjax.models.fusion.bilinear import signed_sqrt
from mmjax.validate import validate_config
from test_fusion import (B, D, MODALITIES, PADDED_LENGTHS, apply, build,
                         make_masks, make_tokens, present)


def inputs():
  """Tokens, masks (every absence pattern of PADDED_LENGTHS), the masked
  mean of each modality [B, M, D] and presence [B, M], as NumPy."""
  tokens, masks = make_tokens(), make_masks(PADDED_LENGTHS)
  pooled = np.stack([
      (np.asarray(tokens[m]) * np.asarray(masks[m])[..., None]).sum(1) /
      np.maximum(np.asarray(masks[m]).sum(1), 1)[:, None]
      for m in MODALITIES], axis=1)
  return tokens, masks, pooled, present(masks)


def params_of(name, **knobs):
  return jax.tree.map(np.asarray, nn.meta.unbox(
      build(name, MODALITIES, **knobs)[1]['params']))


def dense(p, x):
  return x @ p['kernel'] + p['bias']


def test_tensor_is_the_outer_product_of_the_modalities():
  tokens, masks, pooled, is_present = inputs()
  params = params_of('tensor')
  z = [np.concatenate([
      np.where(is_present[:, i, None], dense(params[f'{m}_factor'],
                                             pooled[:, i]), 0),
      np.ones((B, 1))], axis=1) for i, m in enumerate(MODALITIES)]
  product = np.einsum('bi,bj,bk->bijk', *z).reshape(B, -1)  # [B, 9^3]
  expected = nn.gelu(dense(params['hidden']['dense'], product))
  np.testing.assert_allclose(apply('tensor', tokens, masks)[0].pooled,
                             expected, rtol=1e-4, atol=1e-5)


@functools.lru_cache(maxsize=None)
def low_rank_rank2():
  module, variables = build('low_rank', MODALITIES, rank=2)
  return jax.jit(lambda *a: module.apply(variables, *a, train=False).pooled)


def test_low_rank_is_tfn_with_a_rank_r_weight_tensor():
  tokens, masks, pooled, _ = inputs()
  params = params_of('low_rank', rank=2)
  # W_m^(i) [D + 1, out]: the dense kernel with its bias as the last row.
  factors = [np.concatenate([
      params[f'{m}_factors']['kernel'],
      params[f'{m}_factors']['bias'][None]]).reshape(D + 1, 2, D)
             for m in MODALITIES]
  weight = np.einsum('pio,qio,rio->pqro', *factors)  # sum over the rank
  z = [np.concatenate([pooled[:, i], np.ones((B, 1))], axis=1)
       for i in range(len(MODALITIES))]
  expected = np.einsum('bp,bq,br,pqro->bo', *z, weight)
  np.testing.assert_allclose(low_rank_rank2()(tokens, masks), expected,
                             rtol=1e-4, atol=1e-5)


def test_film_is_the_identity_without_conditioning():
  tokens, masks, pooled, is_present = inputs()
  out, sown = apply('film', tokens, masks)
  gamma, beta = np.asarray(sown['gamma']), np.asarray(sown['beta'])
  conditioned = is_present[:, 1:].any(1)  # Audio or text (target: image).
  assert list(conditioned) == [True, False, True, False]
  np.testing.assert_array_equal(gamma[~conditioned], 1)
  np.testing.assert_array_equal(beta[~conditioned], 0)
  assert (np.abs(gamma[conditioned] - 1) > 1e-3).any(axis=1).all()
  # Example 1 (only the image): the unmodulated vectors, absent ones zero.
  hidden = base.HiddenLayer(D).apply({'params': params_of('film')['hidden']},
                                     pooled.reshape(B, -1), train=False)
  np.testing.assert_allclose(out.pooled[1], hidden[1], rtol=1e-5, atol=1e-6)
  assert not np.allclose(out.pooled[0], hidden[0], atol=1e-4)


def test_film_target_must_be_a_modality():
  with pytest.raises(ConfigError) as error:
    build('film', MODALITIES, target='video')
  assert error.value.field == 'model.fusion.target'


def test_bilinear_is_normalised_sum_pooled_product_of_present_projections():
  tokens, masks, pooled, is_present = inputs()
  params = params_of('bilinear')
  product = np.prod([
      np.where(is_present[:, i, None],
               dense(params[f'{m}_projection'], pooled[:, i]), 1)
      for i, m in enumerate(MODALITIES)], axis=0)  # [B, 5 * D]
  z = product.reshape(B, D, 5).sum(-1)
  z = np.sign(z) * np.sqrt(np.abs(z))
  expected = z / np.linalg.norm(z, axis=1, keepdims=True)
  out = np.asarray(apply('bilinear', tokens, masks)[0].pooled)
  np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, rtol=1e-5)
  np.testing.assert_allclose(out, expected, atol=2e-3)  # sqrt(eps) guard


def test_signed_sqrt_is_guarded_at_zero():
  z = jnp.array([-4.0, -1e-3, 0.0, 1e-3, 9.0])
  np.testing.assert_allclose(signed_sqrt(z), np.sign(z) * np.sqrt(np.abs(z)),
                             atol=1e-3)
  grads = jax.grad(lambda z: signed_sqrt(z).sum())(z)
  assert np.isfinite(grads).all()
  unguarded = jax.grad(lambda z: (jnp.sign(z) * jnp.sqrt(jnp.abs(z))).sum())
  assert not np.isfinite(unguarded(z)).all()  # What the guard prevents.


def test_nonlocal_gate_gates_each_present_vector_by_context():
  tokens, masks, pooled, is_present = inputs()
  out, sown = apply('nonlocal_gate', tokens, masks)
  gates = np.asarray(sown['gates'])
  assert gates.shape == (B, len(MODALITIES), D)
  assert ((gates >= 0) & (gates <= 1)).all()
  gated = (gates * pooled * is_present[..., None]).sum(1)
  expected = gated / np.maximum(is_present.sum(1), 1)[:, None]
  np.testing.assert_allclose(out.pooled, expected, rtol=1e-5, atol=1e-6)
  # The image's gate in example 2 reads the text tokens (non-local);
  # example 1 has no text, so its gates stay.
  other_text = dict(tokens, text=make_tokens(seed=5)['text'])
  changed = np.asarray(apply('nonlocal_gate', other_text, masks)[1]['gates'])
  assert not np.allclose(changed[2, 0], gates[2, 0])
  np.testing.assert_allclose(changed[1], gates[1], rtol=1e-6)


# Modality dropout in the model: image CNN + text embedding bag (no
# BatchNorm, so examples do not interact), concatenation fusion.
MODEL_BATCH, VOCAB = 64, 32


@functools.lru_cache(maxsize=None)
def dropout_model():
  """(jitted run, variables, batch) of a model with modality_dropout 0.5.

  run(variables, batch, rng, train) -> (logits, the masks the fusion got).
  Random parameters (the head's zero init would make every logit 0) and
  NumPy inputs: no initialisation or RNG to compile.
  """
  config = default.get_config('modalities=image+text,fusion=concat')
  config.model.dim, config.model.modality_dropout = D, 0.5
  model = model_lib.build_model(config, num_outputs=3, vocab_size=VOCAB)
  rng = np.random.default_rng(0)
  batch = {
      'image': rng.normal(size=(MODEL_BATCH, 8, 8, 3)).astype(np.float32),
      'text': rng.integers(0, VOCAB, (MODEL_BATCH, 8)),
      'text_mask': np.ones((MODEL_BATCH, 8), bool),
  }
  shapes = nn.meta.unbox(jax.eval_shape(
      functools.partial(model.init, train=False), jax.random.key(0), batch))
  variables = jax.tree.map(
      lambda x: 0.3 * rng.normal(size=x.shape).astype(x.dtype), shapes)

  def run(variables, batch, rng, train):
    seen = {}

    def record(next_fun, args, kwargs, context):
      if (context.module.name, context.method_name) == ('fusion',
                                                        '__call__'):
        seen.update(args[1])
      return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
      logits = model.apply(variables, batch, train=train,
                           rngs={'dropout': rng})
    return logits, seen

  return jax.jit(run, static_argnames='train'), variables, batch


def kept(masks):
  """[B, 2] whether image, text reached the fusion for each example."""
  return np.stack([np.asarray(masks[m]).any(1) for m in ('image', 'text')], 1)


def test_modality_dropout_only_when_training():
  run, variables, batch = dropout_model()
  _, masks = run(variables, batch, jax.random.key(2), train=False)
  assert kept(masks).all()


def test_modality_dropout_drops_about_half_and_dropped_inputs_do_not_count():
  run, variables, batch = dropout_model()
  rng = jax.random.key(2)
  logits, masks = run(variables, batch, rng, train=True)
  is_kept = kept(masks)
  assert 0.35 < 1 - is_kept.mean() < 0.65  # 128 draws at p = 0.5.
  assert not (is_kept[:, 0] == is_kept[:, 1]).all()  # Independent draws.
  # Garbage in every dropped (example, modality) changes nothing...
  noise = np.random.default_rng(1)
  garbage = dict(
      batch,
      image=np.where(is_kept[:, 0, None, None, None], batch['image'],
                     1e3 * noise.normal(size=batch['image'].shape)).astype(
                         np.float32),
      text=np.where(is_kept[:, 1, None], batch['text'],
                    noise.integers(0, VOCAB, batch['text'].shape)))
  np.testing.assert_allclose(run(variables, garbage, rng, train=True)[0],
                             logits, rtol=1e-6, atol=1e-6)
  # ...while changing the kept images does change the logits.
  shifted = dict(batch, image=batch['image'] + 1.0)
  changed = run(variables, shifted, rng, train=True)[0]
  assert not np.allclose(changed[is_kept[:, 0]], logits[is_kept[:, 0]])


@pytest.mark.parametrize('p', [1.0, -0.1])
def test_modality_dropout_must_be_a_probability(p):
  config = default.get_config()
  config.model.modality_dropout = p
  with pytest.raises(ConfigError) as error:
    validate_config(config, num_devices=8)
  assert error.value.field == 'model.modality_dropout'
