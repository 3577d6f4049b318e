"""The `vivit` video encoder: tokens and masks of both modes, tubelet checks,
frame-count-free spatial parameters, inflation from an image `vit`, and a
classifier whose video is missing."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mmjax.errors import ConfigError
from mmjax.models import fusion
from mmjax.models import video
from mmjax.models.encoders import build_encoder
from mmjax.models.model import MultimodalModel

# Per example: all 8 frames, 5 (padded), none (a missing video).
FRAMES = (8, 5, 0)
TINY = dict(name='vivit', size='tiny', patch_size=4, tubelet_frames=2)


def make_video(frames=8, size=8, channels=1, seed=0):
  """(video [3, frames, size, size, channels], frame mask [3, frames])."""
  x = np.random.default_rng(seed).normal(
      size=(3, frames, size, size, channels)).astype(np.float32)
  mask = np.arange(frames)[None, :] < np.minimum(FRAMES, frames)[:, None]
  return x, mask


def jit_init(module, seed, *args):
  return jax.jit(functools.partial(module.init, train=False))(
      jax.random.key(seed), *args)


def jit_apply(module, *args, **kwargs):
  return jax.jit(functools.partial(module.apply, train=False, **kwargs))(
      *args)


def init(cfg, x, mask=None):
  encoder = build_encoder('video', cfg)
  return encoder, jit_init(encoder, 0, x, mask)


def num_params(tree):
  return sum(p.size for p in jax.tree.leaves(nn.meta.unbox(tree)))


@pytest.mark.parametrize('mode,tokens', [('joint', 4 * 2 * 2),
                                         ('factorised', 4)])
def test_tokens_and_masks(mode, tokens):
  x, mask = make_video()
  encoder, variables = init(dict(TINY, mode=mode), x, mask)
  apply = jax.jit(functools.partial(encoder.apply, train=False))
  out, out_mask = apply(variables, x, mask)
  assert out.shape == (3, tokens, 32) and out_mask.shape == (3, tokens)
  assert out_mask.dtype == bool and np.isfinite(out).all()
  # A token is valid when a frame of its tubelet is: 5 frames -> 3 of 4 steps.
  per_step = tokens // 4
  np.testing.assert_array_equal(out_mask.sum(axis=1),
                                [4 * per_step, 3 * per_step, 0])
  # What padded frames hold changes no valid token.
  junk = np.where(mask[..., None, None, None], x, 1e3)
  out_junk, _ = apply(variables, junk, mask)
  np.testing.assert_allclose(np.where(out_mask[..., None], out_junk, 0),
                             np.where(out_mask[..., None], out, 0), atol=1e-5)


@pytest.mark.parametrize('fields,shape,field,size', [
    (dict(tubelet_frames=3), (3, 8, 8, 8, 1), 'tubelet_frames', '8 frames'),
    (dict(patch_size=3), (3, 8, 8, 8, 1), 'patch_size', 'height 8'),
    (dict(patch_size=4), (3, 8, 8, 6, 1), 'patch_size', 'width 6'),
])
@pytest.mark.parametrize('mode', video.MODES)
def test_sizes_that_do_not_divide_the_tubelet_name_the_field(
    fields, shape, field, size, mode):
  encoder = build_encoder('video', dict(TINY, mode=mode, **fields))
  with pytest.raises(ConfigError) as error:
    jax.eval_shape(functools.partial(encoder.init, train=False),
                   jax.random.key(0), jnp.zeros(shape))
  assert error.value.field == f'model.encoders.video.{field}'
  assert size in str(error.value)


def test_spatial_parameters_do_not_depend_on_the_number_of_frames():
  shapes = {}
  for frames in (4, 8, 16):
    encoder = build_encoder('video', dict(TINY, mode='factorised'))
    shapes[frames] = jax.eval_shape(
        functools.partial(encoder.init, train=False), jax.random.key(0),
        jnp.zeros((1, frames, 8, 8, 1)))['params']
  counts = {f: num_params(p['spatial']) for f, p in shapes.items()}
  assert len(set(counts.values())) == 1 and counts[4] > 0, counts
  # Only the temporal positions grow with the frames (one per time step).
  assert num_params(shapes[16]) - num_params(shapes[8]) == 4 * 32


# -- Inflation from an image ViT ---------------------------------------------

@functools.lru_cache(maxsize=None)
def vit_and_vivit(mode, class_token):
  """(vit, vit params, vivit, vivit params): the same tiny widths, 8x8x3
  images, videos of 4 frames in tubelets of 2."""
  vit = build_encoder('image', dict(name='vit', size='tiny', patch_size=4,
                                    class_token=class_token))
  vit_params = jit_init(vit, 1, jnp.zeros((1, 8, 8, 3)))['params']
  vivit = build_encoder('video', dict(
      TINY, mode=mode, frame_pooling='cls' if class_token else 'mean',
      class_token=class_token and mode == 'joint'))
  vivit_params = jit_init(vivit, 2, jnp.zeros((1, 4, 8, 8, 3)))['params']
  return vit, vit_params, vivit, vivit_params


def test_central_frame_kernel_is_nonzero_only_at_the_central_time_index():
  kernel = np.random.default_rng(0).normal(size=(4, 4, 3, 8))
  for frames in (1, 2, 3, 4):
    inflated = video.inflate_kernel(kernel, frames, 'central')
    assert inflated.shape == (frames, 4, 4, 3, 8)
    nonzero = [i for i in range(frames) if np.any(inflated[i])]
    assert nonzero == [frames // 2]
    np.testing.assert_array_equal(inflated[frames // 2], kernel)
  average = video.inflate_kernel(kernel, 3, 'average')
  for i in range(3):
    np.testing.assert_allclose(average[i], kernel / 3)


def test_inflation_tiles_positions_and_keeps_the_temporal_transformer():
  _, vit_params, _, vivit_params = vit_and_vivit('joint', True)
  out = video.inflate_vit(vit_params, vivit_params, 'average')
  table = np.asarray(nn.meta.unbox(vit_params)['patches']['positions']['table'])
  tiled = out['joint']['positions']['table']  # 1 + 2 steps x 4 patches.
  np.testing.assert_array_equal(tiled[0], table[0])
  np.testing.assert_array_equal(tiled[1:5], table[1:])
  np.testing.assert_array_equal(tiled[5:], table[1:])
  _, vit_params, _, vivit_params = vit_and_vivit('factorised', True)
  out = video.inflate_vit(vit_params, vivit_params)
  np.testing.assert_array_equal(
      out['temporal']['positions']['table'],
      nn.meta.unbox(vivit_params)['temporal']['positions']['table'])


@pytest.mark.parametrize('method', video.INFLATIONS)
@pytest.mark.parametrize('class_token', [True, False])
def test_a_repeated_frame_gives_the_image_vits_tokens_per_frame(
    method, class_token):
  """Factorised: each time step's spatial tokens are the ViT's tokens."""
  vit, vit_params, vivit, vivit_params = vit_and_vivit('factorised',
                                                       class_token)
  frame = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(
      np.float32)
  expected, _ = jit_apply(vit, {'params': vit_params}, frame)
  params = video.inflate_vit(vit_params, vivit_params, method)
  clip = np.repeat(frame[:, None], 4, axis=1)
  _, state = jit_apply(vivit, {'params': params}, clip,
                       mutable=['intermediates'])
  spatial = state['intermediates']['spatial_tokens'][0]  # [2, steps, n, D].
  assert spatial.shape == (2, 2) + expected.shape[1:]
  for step in range(2):
    np.testing.assert_allclose(spatial[:, step], expected, rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize('method', video.INFLATIONS)
def test_joint_inflation_of_a_repeated_frame_gives_the_tiled_vit_tokens(
    method):
  """Without a class token, attention over T/t identical copies of the
  ViT's tokens is attention over one copy: each step is the ViT's tokens."""
  vit, vit_params, vivit, vivit_params = vit_and_vivit('joint', False)
  frame = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(
      np.float32)
  expected, _ = jit_apply(vit, {'params': vit_params}, frame)
  params = video.inflate_vit(vit_params, vivit_params, method)
  tokens, mask = jit_apply(vivit, {'params': params},
                           np.repeat(frame[:, None], 4, axis=1))
  assert mask.all()
  np.testing.assert_allclose(tokens, np.tile(expected, (1, 2, 1)), rtol=1e-5,
                             atol=1e-5)


def test_inflation_names_a_mismatched_parameter():
  _, vit_params, _, _ = vit_and_vivit('factorised', True)
  vivit = build_encoder('video', dict(TINY, dim=16, num_heads=2))
  params = jax.eval_shape(functools.partial(vivit.init, train=False),
                          jax.random.key(2), jnp.zeros((1, 4, 8, 8, 3)))
  params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype),
                        params['params'])
  with pytest.raises(ValueError, match='spatial.*shape'):
    video.inflate_vit(vit_params, params)


# -- A missing video in a classifier -----------------------------------------

def test_missing_video_is_finite_ignored_and_compiles_once():
  model = MultimodalModel(
      modalities=('image', 'video'),
      encoders={'image': ml_collections.ConfigDict(dict(name='cnn',
                                                        size='tiny')),
                'video': ml_collections.ConfigDict(dict(TINY,
                                                        mode='factorised'))},
      fusion=ml_collections.ConfigDict(
          fusion.base.default_config('cross_attention')),
      dim=16, num_outputs=4)
  x, mask = make_video()
  image = np.random.default_rng(1).normal(size=(3, 8, 8, 1)).astype(
      np.float32)

  def batch(present, video_values=x, video_mask=mask):
    return dict(image=image, video=video_values, video_mask=video_mask,
                video_present=np.asarray(present, bool))

  variables = jit_init(model, 0, batch([1, 1, 1]))
  forward = jax.jit(functools.partial(model.apply, train=False))
  forward(variables, batch([1, 1, 1]))
  compiled = forward._cache_size()  # pylint: disable=protected-access
  absent = forward(variables, batch([1, 0, 0]))
  junk = forward(variables, batch([1, 0, 0], x * 100 + 7,
                                  np.ones_like(mask)))
  for logits in (absent, junk, forward(variables, batch([0, 0, 0]))):
    assert np.isfinite(logits).all()
  # The absent videos' values and frame masks do not reach the logits.
  np.testing.assert_allclose(junk[1:], absent[1:], rtol=1e-5, atol=1e-6)
  assert forward._cache_size() == compiled  # pylint: disable=protected-access
