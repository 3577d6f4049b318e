"""Options of the image and text towers that converted checkpoints use
(mmjax/convert): patch extraction, class token and pooling, causal text
attention and end-of-text pooling, and their config checks."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from mmjax.errors import ConfigError
from mmjax.models.encoders import build_encoder, check_encoder_config
from mmjax.models.image import PatchEmbed

VOCAB = 16
TINY_TEXT = dict(name='transformer', size='tiny')
TINY_VIT = dict(name='vit', size='tiny', patch_size=4)


def apply(modality, cfg, x, mask=None, variables=None):
  """(tokens, mask, variables) of the encoder `cfg` on x (eval mode)."""
  encoder = build_encoder(modality, cfg, vocab_size=VOCAB)
  if variables is None:
    variables = nn.meta.unbox(encoder.init(jax.random.key(0), x, mask,
                                           train=False))
  tokens, out_mask = encoder.apply(variables, x, mask, train=False)
  return np.asarray(tokens), np.asarray(out_mask), variables


@pytest.mark.parametrize('size', [16, 18])  # 18: a partial patch dropped.
def test_patch_embed_is_a_strided_valid_conv(size):
  x = np.random.default_rng(0).normal(size=(2, size, size, 3))
  embed = PatchEmbed((4, 4), 8)
  variables = embed.init(jax.random.key(0), x)
  conv = nn.Conv(8, (4, 4), (4, 4), 'VALID')
  expected = conv.apply(nn.meta.unbox(variables), x)
  np.testing.assert_allclose(embed.apply(variables, x), expected, atol=1e-5)


def test_vit_class_token_and_pooling():
  x = np.random.default_rng(0).normal(size=(2, 16, 16, 3))
  tokens, mask, variables = apply('image', dict(TINY_VIT, class_token=True),
                                  x)
  assert tokens.shape == (2, 1 + 16, 32) and mask.all()
  pooled, pooled_mask, _ = apply(
      'image', dict(TINY_VIT, class_token=True, pooling='cls'), x,
      variables=variables)
  np.testing.assert_allclose(pooled[:, 0], tokens[:, 0], atol=1e-6)
  assert pooled_mask.shape == (2, 1) and pooled_mask.all()
  projected, _, projected_vars = apply(
      'image', dict(TINY_VIT, class_token=True, pooling='pooler',
                    projection_dim=5), x)
  assert projected.shape == (2, 1, 5)
  assert projected_vars['params']['projection']['kernel'].shape == (32, 5)
  assert 'bias' not in projected_vars['params']['projection']


def test_text_causal_attention_ignores_later_tokens():
  ids = np.random.default_rng(0).integers(1, VOCAB, (2, 8))
  changed = ids.copy()
  changed[:, 5:] = (changed[:, 5:] % (VOCAB - 1)) + 1
  for causal in (True, False):
    cfg = dict(TINY_TEXT, causal=causal)
    before, _, variables = apply('text', cfg, ids)
    after, _, _ = apply('text', cfg, changed, variables=variables)
    same = np.abs(before[:, :5] - after[:, :5]).max() < 1e-6
    assert same == causal


@pytest.mark.parametrize('pooling,positions', [('eos', [3, 6]),
                                               ('argmax', [2, 0])])
def test_text_pooling_takes_the_end_of_text_state(pooling, positions):
  # End of text: id 10; 'eos' pools at its first occurrence, 'argmax' at the
  # first occurrence of the largest id (15).
  eos = 10
  ids = np.array([[4, 5, 15, eos, 7, eos, 1, 1],
                  [15, 3, 2, 1, 13, 2, eos, 15]])
  mask = np.ones_like(ids, bool)
  tokens, _, variables = apply('text', dict(TINY_TEXT, causal=True), ids,
                               mask)
  pooled, pooled_mask, _ = apply(
      'text', dict(TINY_TEXT, causal=True, pooling=pooling, eos_id=eos), ids,
      mask, variables)
  expected = tokens[np.arange(2), positions]
  np.testing.assert_allclose(pooled[:, 0], expected, atol=1e-6)
  assert pooled_mask.shape == (2, 1) and pooled_mask.all()


@pytest.mark.parametrize('modality,cfg,match', [
    ('image', dict(TINY_VIT, pooling='cls'), 'class_token=True'),
    ('image', dict(TINY_VIT, projection_dim=4), 'pooling'),
    ('text', dict(TINY_TEXT, pooling='eos'), 'eos_id'),
    ('text', dict(TINY_TEXT, projection_dim=4), 'pooling'),
])
def test_inconsistent_options_are_refused(modality, cfg, match):
  x = (np.zeros((1, 16, 16, 3)) if modality == 'image' else
       np.ones((1, 4), np.int32))
  with pytest.raises(ValueError, match=match):
    apply(modality, cfg, x)


@pytest.mark.parametrize('modality,cfg,field', [
    ('image', dict(name='vit', activation='swish'), 'activation'),
    ('image', dict(name='vit', pooling='mean'), 'pooling'),
    ('image', dict(name='resnet', padding='VALID'), 'padding'),
    ('text', dict(name='transformer', pooling='cls'), 'pooling'),
])
def test_unknown_option_values_name_the_field(modality, cfg, field):
  with pytest.raises(ConfigError, match=f'model.encoders.{modality}.{field}'):
    check_encoder_config(modality, cfg)
