"""Tests of the modality encoders; generic ones cover every registered name."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import dsp
from mmjax.errors import ConfigError
from mmjax.models.encoders import build_encoder, check_encoder_config
from mmjax.registry import ENCODERS, MODALITIES
from trees import assert_trees_close

ENCODER_NAMES = [(m, n) for m in MODALITIES for n in ENCODERS[m].names()]
SEQUENCE_NAMES = [(m, n) for m, n in ENCODER_NAMES if m != 'image']
VOCAB = 11
# Per example: full, padded, empty (all padding, e.g. a missing modality).
TEXT_LENGTHS = (8, 5, 0)
AUDIO_LENGTHS = (2000, 1200, 0)  # Samples: 14, 8 and 0 valid frames.
VIDEO_LENGTHS = (8, 5, 0)  # Frames.


def make_inputs(modality, corrupt_padding=False):
  """(x, mask) for a batch of 3; padding holds junk when `corrupt_padding`."""
  rng = np.random.default_rng(1 if corrupt_padding else 0)
  if modality == 'image':
    return np.random.default_rng(0).normal(size=(3, 16, 16, 3)), None
  if modality == 'video':
    mask = np.arange(8)[None, :] < np.array(VIDEO_LENGTHS)[:, None]
    clip = np.random.default_rng(0).normal(size=(3, 8, 16, 16, 1))
    junk = rng.normal(size=clip.shape) * 50 if corrupt_padding else 0
    return np.where(mask[..., None, None, None], clip, junk), mask
  if modality == 'text':
    mask = np.arange(8)[None, :] < np.array(TEXT_LENGTHS)[:, None]
    ids = np.random.default_rng(0).integers(1, VOCAB, (3, 8))
    junk = rng.integers(1, VOCAB, (3, 8)) if corrupt_padding else 0
    return np.where(mask, ids, junk).astype(np.int32), mask
  mask = np.arange(2000)[None, :] < np.array(AUDIO_LENGTHS)[:, None]
  wave = np.random.default_rng(0).uniform(-1, 1, (3, 2000))
  junk = rng.uniform(-50, 50, (3, 2000)) if corrupt_padding else 0
  return np.where(mask, wave, junk).astype(np.float32), mask


@functools.lru_cache(maxsize=None)
def build(modality, name, **overrides):
  """(encoder, variables, jitted apply(variables, x, mask, train)) at 'tiny'."""
  encoder = build_encoder(modality, dict(name=name, size='tiny', **overrides),
                          vocab_size=VOCAB)
  x, mask = make_inputs(modality)
  variables = jax.jit(functools.partial(encoder.init, train=False))(
      jax.random.key(0), x, mask)

  @functools.partial(jax.jit, static_argnames='train')
  def apply(variables, x, mask, train):
    return encoder.apply(variables, x, mask, train=train,
                         rngs={'dropout': jax.random.key(1)},
                         mutable=['batch_stats'] if train else False)

  return encoder, variables, apply


@pytest.mark.parametrize('modality,name', ENCODER_NAMES)
def test_encoder_returns_tokens_and_mask(modality, name):
  _, variables, apply = build(modality, name)
  x, mask = make_inputs(modality)
  (train_tokens, train_mask), _ = apply(variables, x, mask, train=True)
  tokens, token_mask = apply(variables, x, mask, train=False)
  assert tokens.ndim == 3 and tokens.shape[0] == 3
  assert token_mask.shape == tokens.shape[:2] and token_mask.dtype == bool
  assert train_tokens.shape == tokens.shape
  np.testing.assert_array_equal(train_mask, token_mask)
  assert np.isfinite(tokens).all() and np.isfinite(train_tokens).all()
  if modality == 'image':
    assert token_mask.all()


@pytest.mark.parametrize('modality,name', SEQUENCE_NAMES)
def test_padding_is_masked_and_ignored(modality, name):
  _, variables, apply = build(modality, name)
  tokens, mask = apply(variables, *make_inputs(modality), train=False)
  junk_tokens, junk_mask = apply(
      variables, *make_inputs(modality, corrupt_padding=True), train=False)
  np.testing.assert_array_equal(mask, junk_mask)
  np.testing.assert_allclose(np.where(mask[..., None], junk_tokens, 0),
                             np.where(mask[..., None], tokens, 0), atol=1e-5)
  assert np.isfinite(junk_tokens).all()
  # Fewer valid steps give fewer valid tokens; an empty input gives none.
  counts = np.asarray(mask).sum(axis=1)
  assert counts[2] == 0
  assert counts[0] > counts[1] > 0 or counts[1] == counts[0] == 1


@pytest.mark.parametrize('name', ['lstm', 'gru', 'transformer'])
def test_text_token_mask_is_the_input_mask(name):
  _, variables, apply = build('text', name)
  x, mask = make_inputs('text')
  np.testing.assert_array_equal(apply(variables, x, mask, train=False)[1],
                                mask)


def test_audio_lstm_tokens_are_the_valid_frames():
  _, variables, apply = build('audio', 'lstm')
  x, mask = make_inputs('audio')
  _, token_mask = apply(variables, x, mask, train=False)
  np.testing.assert_array_equal(
      token_mask, dsp.frame_mask(mask, n_fft=256, hop_length=128))


def test_rnn_cell_follows_the_registered_name():
  cells = {n: build('text', n)[1]['params']['rnn']['layer0']['forward_rnn']
           ['cell'] for n in ('lstm', 'gru')}
  assert 'hf' in cells['lstm']  # The forget gate.
  assert 'hn' in cells['gru'] and 'hf' not in cells['gru']


@pytest.mark.parametrize('modality,name', ENCODER_NAMES)
def test_bfloat16_compute_keeps_float32_params(modality, name):
  encoder = build_encoder(modality, dict(name=name, size='tiny'),
                          vocab_size=VOCAB, dtype=jnp.bfloat16)
  x, mask = make_inputs(modality)
  variables = jax.eval_shape(
      functools.partial(encoder.init, train=False), jax.random.key(0), x, mask)
  tokens, _ = jax.eval_shape(functools.partial(encoder.apply, train=False),
                             variables, x, mask)
  assert tokens.dtype == jnp.bfloat16
  assert {p.dtype for p in jax.tree.leaves(nn.meta.unbox(variables))} <= {
      jnp.dtype(jnp.float32)}


def test_resnet_batch_stats_update_in_train_and_are_used_in_eval():
  _, variables, apply = build('image', 'resnet')
  x, _ = make_inputs('image')
  (tokens, _), updates = apply(variables, x, None, train=True)
  changed = jax.tree.leaves(jax.tree.map(
      lambda a, b: not np.allclose(a, b), variables['batch_stats'],
      updates['batch_stats']))
  assert changed and all(changed)
  # Eval normalises with the running averages: an example's tokens do not
  # depend on the rest of the batch, unlike in training.
  others = np.concatenate([x[:1], 3 * x[1:] + 1])
  eval_tokens, _ = apply(variables, x, None, train=False)
  eval_others, _ = apply(variables, others, None, train=False)
  (train_others, _), _ = apply(variables, others, None, train=True)
  np.testing.assert_allclose(eval_others[0], eval_tokens[0], atol=1e-5)
  assert not np.allclose(train_others[0], tokens[0], atol=1e-3)


def test_resnet_bn_axis_name_averages_batch_stats_over_pmap():
  _, variables, apply = build('image', 'resnet')
  x, _ = make_inputs('image')
  _, expected = apply(variables, x, None, train=True)  # The whole batch.
  sharded = build_encoder('image', dict(name='resnet', size='tiny'),
                          bn_axis_name='devices')
  _, stats = jax.pmap(
      lambda x: sharded.apply(variables, x, train=True,
                              mutable=['batch_stats']),
      axis_name='devices', devices=jax.devices()[:3])(x[:, None])
  for device in range(3):  # Every device holds the whole batch's stats.
    assert_trees_close(jax.tree.map(lambda x: x[device], stats), expected,
                       rtol=1e-4, atol=1e-6)


def test_resnet_depths_have_torchvision_structure():
  """Parameter counts (without the classifier) of torchvision's ResNets."""
  x = jnp.zeros((1, 64, 64, 3))
  expected = {'resnet18': (11_176_512, 512, 2),
              'resnet34': (21_284_672, 512, 2),
              'resnet50': (23_508_032, 2048, 3)}
  for size, (num_params, width, convs_per_block) in expected.items():
    encoder = build_encoder('image', dict(name='resnet', size=size))
    variables = jax.eval_shape(functools.partial(encoder.init, train=False),
                               jax.random.key(0), x)
    params = nn.meta.unbox(variables['params'])
    assert sum(p.size for p in jax.tree.leaves(params)) == num_params, size
    block = params['stage1_block1']
    assert sorted(k for k in block if k.startswith('Conv')) == [
        f'Conv_{i}' for i in range(convs_per_block)]
    tokens, _ = jax.eval_shape(functools.partial(encoder.apply, train=False),
                               variables, x)
    assert tokens.shape == (1, 4, width)  # 64 / 32 = 2 -> 2 x 2 tokens.


def test_config_overrides_size_and_passes_model_fields():
  encoder = build_encoder(
      'image', dict(name='resnet', size='tiny', depth=34, stem='imagenet'),
      dtype=jnp.bfloat16, bn_axis_name='batch')
  assert (encoder.depth, encoder.width, encoder.stem) == (34, 16, 'imagenet')
  assert (encoder.bn_axis_name, encoder.dtype) == ('batch', jnp.bfloat16)
  text = build_encoder('text', dict(name='gru', size='small', num_layers=3),
                       vocab_size=99)
  assert (text.vocab_size, text.cell, text.num_layers, text.hidden_dim) == (
      99, 'gru', 3, 128)
  audio = build_encoder('audio', dict(name='cnn', channels=[4, 8],
                                      features='mfcc'))
  assert audio.channels == (4, 8) and audio.features == 'mfcc'


@pytest.mark.parametrize('modality,cfg,field,words', [
    ('text', dict(name='gpt'), 'model.encoders.text.name',
     ['bert', 'embedding_bag', 'gru', 'lstm', 'transformer']),
    ('audio', dict(size='tiny'), 'model.encoders.audio.name', ['cnn']),
    ('image', dict(name='resnet', size='huge'), 'model.encoders.image.size',
     ['tiny', 'small', 'resnet50']),
    ('audio', dict(name='cnn', size='tiny', n_mel=64),
     'model.encoders.audio.n_mel', ['n_mels', 'channels', 'hop_length']),
    ('text', dict(name='lstm', vocab_size=5), 'model.encoders.text.vocab_size',
     ['embed_dim']),
    ('image', dict(name='resnet', depth=101), 'model.encoders.image.depth',
     ['18, 34, 50']),
    ('audio', dict(name='lstm', features='mel'),
     'model.encoders.audio.features', ['logmel', 'mfcc']),
    ('text', dict(name='transformer', positions='rotary'),
     'model.encoders.text.positions', ['learned', 'sinusoidal']),
])
def test_bad_config_raises_config_error(modality, cfg, field, words):
  for check in (check_encoder_config, build_encoder):
    with pytest.raises(ConfigError) as error:
      check(modality, cfg)
    assert error.value.field == field
    for word in words:
      assert word in str(error.value)


def test_every_encoder_has_tiny_and_small_sizes():
  for modality, name in ENCODER_NAMES:
    sizes = ENCODERS[modality].get(name, field='').SIZES
    assert {'tiny', 'small'} <= set(sizes), (modality, name)
    for size in sizes:
      check_encoder_config(modality, dict(name=name, size=size))
