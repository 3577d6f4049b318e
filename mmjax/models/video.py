"""Video encoder: ViViT (Arnab et al., 2021), as in scenic's projects/vivit.

`vivit` maps videos [B, T, H, W, C] (float, e.g. in [-1, 1]) and a frame mask
[B, T] (valid frames; None: all valid) to tokens [B, N, dim] and a mask
[B, N]. Frames are cut into tubelets of `tubelet_frames` frames x
`patch_size` x `patch_size` pixels, each embedded linearly (an `nn.Conv` with
a (t, p, p) kernel and equal stride). Padded frames are zeroed first, so
whatever a pipeline put there changes nothing.

- mode 'joint': one transformer over all T/t * (H/p) * (W/p) space-time
  tokens (learned positions over all of them); tokens are those, in
  time-major order, and a token is valid when any frame of its tubelet is.
- mode 'factorised' (ViViT's factorised encoder): a spatial transformer,
  shared by every time step, over the (H/p) * (W/p) tubelets of that step;
  one vector per step (its class token's state, `frame_pooling='cls'`, or the
  mean of its tokens, 'mean'); then a temporal transformer over the T/t step
  vectors. Tokens are the T/t steps [B, T/t, dim]. The spatial parameters do
  not depend on the number of frames. The spatial tokens are sown as
  intermediates/spatial_tokens [B, T/t, (1 +) (H/p)(W/p), dim].

The transformers are `PatchTransformer`s (mmjax/models/image.py) that embed
tubelets instead of patches, so a `vit` image tower's parameters have the
same layout, but for the embedding kernel's time axis: `inflate_vit` turns
them into a `vivit` tower's (central-frame or average kernel inflation,
positions tiled over time).
"""
from typing import Any, ClassVar, Dict, Mapping, Optional, Tuple

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmjax.errors import ConfigError
from mmjax.models import layers
from mmjax.models.image import PatchTransformer
from mmjax.registry import ENCODERS

FIELD = 'model.encoders.video'
MODES = ('joint', 'factorised')
FRAME_POOLINGS = ('cls', 'mean')
INFLATIONS = ('central', 'average')


def check_shape(shape: Tuple[int, ...], tubelet_frames: int,
                patch_size: int) -> None:
  """Raises ConfigError naming the field when a video [B, T, H, W, C] is not
  cut into whole tubelets of `tubelet_frames` x `patch_size` x `patch_size`."""
  if len(shape) != 5:
    raise ValueError(f'vivit: expected videos [B, T, H, W, C], got shape '
                     f'{tuple(shape)}; decode them with decode_video.')
  frames, height, width = shape[1:4]
  if frames % tubelet_frames:
    raise ConfigError(f'{FIELD}.tubelet_frames', (
        f'{tubelet_frames} does not divide the {frames} frames of the input; '
        'use a divisor of the frame count, or crop or pad the videos to a '
        'multiple of it (pad_video / temporal_crop).'))
  for side, size in (('height', height), ('width', width)):
    if size % patch_size:
      raise ConfigError(f'{FIELD}.patch_size', (
          f'{patch_size} does not divide the frame {side} {size}; use a '
          'divisor of the frame size, or resize the frames (resize_video).'))


class TubeletTransformer(PatchTransformer):
  """A `PatchTransformer` over tubelets: videos [B, T, H, W, C] and a frame
  mask [B, T] -> tokens [B, (1 +) T/t * H/p * W/p, dim] (time-major) and
  their mask. `patch_size` is the tubelet (t, p, p); the embedding is an
  `nn.Conv` with that kernel and stride, kernel [t, p, p, C, dim]."""

  @nn.compact
  def __call__(self, x: jax.Array, frame_mask: Optional[jax.Array] = None,
               *, train: bool) -> Tuple[jax.Array, jax.Array]:
    tubelet = tuple(self.patch_size)
    x = nn.Conv(self.dim, tubelet, tubelet, 'VALID', use_bias=self.patch_bias,
                dtype=self.dtype, param_dtype=self.param_dtype,
                kernel_init=layers.kernel((None,) * 4 + ('channels',)),
                bias_init=layers.bias(('channels',)),
                name='patch_embed')(x.astype(self.dtype))
    steps, rows, cols = x.shape[1:4]
    tokens = einops.rearrange(x, 'b t h w d -> b (t h w) d')
    if frame_mask is None:
      mask = jnp.ones(tokens.shape[:2], bool)
    else:
      mask = einops.repeat(
          layers.downsample_mask(frame_mask, tubelet[0], steps),
          'b t -> b (t n)', n=rows * cols)
    return self.encode(tokens, mask, train=train)


class StepTransformer(PatchTransformer):
  """A `PatchTransformer` over tokens already embedded, [B, T, dim] with a
  mask [B, T] (ViViT's temporal transformer; `patch_size` is unused)."""

  @nn.compact
  def __call__(self, tokens: jax.Array, mask: jax.Array, *, train: bool
               ) -> Tuple[jax.Array, jax.Array]:
    return self.encode(tokens.astype(self.dtype), mask, train=train)


@ENCODERS['video'].register('vivit')
class ViViT(nn.Module):
  """Video vision transformer (see the module docstring).

  Attributes:
    mode: 'joint' or 'factorised'.
    patch_size: tubelet height and width, in pixels.
    tubelet_frames: tubelet length t, in frames.
    dim, depth, num_heads, mlp_dim, dropout: of the joint transformer, or of
      the spatial one (factorised).
    temporal_depth: blocks of the temporal transformer (factorised).
    frame_pooling: how a time step becomes one vector (factorised): 'cls'
      (a class token in the spatial transformer) or 'mean' (of its tokens).
    class_token: a class token before the space-time tokens (joint).
  """
  mode: str = 'factorised'
  patch_size: int = 8
  tubelet_frames: int = 1
  dim: int = 128
  depth: int = 4
  temporal_depth: int = 2
  num_heads: int = 4
  mlp_dim: int = 256
  dropout: float = 0.0
  frame_pooling: str = 'cls'
  class_token: bool = False
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32
  block_options: layers.BlockOptions = layers.BlockOptions()

  SIZES: ClassVar[Dict[str, Dict[str, Any]]] = {
      'tiny': dict(patch_size=8, tubelet_frames=1, dim=32, depth=1,
                   temporal_depth=1, num_heads=2, mlp_dim=64),
      'small': dict(patch_size=8, tubelet_frames=1, dim=64, depth=2,
                    temporal_depth=2, num_heads=4, mlp_dim=128),
  }
  CHOICES: ClassVar[Dict[str, Tuple[Any, ...]]] = {
      'mode': MODES, 'frame_pooling': FRAME_POOLINGS}

  def _transformer(self, cls, depth: int, class_token: bool, name: str,
                   tubelet=(1, 1)):
    return cls(tubelet, self.dim, depth, self.num_heads, self.mlp_dim,
               self.dropout, self.dtype, self.param_dtype, self.block_options,
               class_token, name=name)

  @nn.compact
  def __call__(self, x: jax.Array, mask: Optional[jax.Array] = None, *,
               train: bool) -> Tuple[jax.Array, jax.Array]:
    check_shape(x.shape, self.tubelet_frames, self.patch_size)
    t = self.tubelet_frames
    tubelet = (t, self.patch_size, self.patch_size)
    if mask is not None:  # Padded frames carry nothing into valid tubelets.
      x = jnp.where(mask.astype(bool)[:, :, None, None, None], x, 0)
    if self.mode == 'joint':
      return self._transformer(TubeletTransformer, self.depth,
                               self.class_token, 'joint', tubelet)(
                                   x, mask, train=train)
    batch, steps = x.shape[0], x.shape[1] // t
    # Each time step is one "image" of t frames for the spatial transformer.
    cls = self.frame_pooling == 'cls'
    tokens, token_mask = self._transformer(
        TubeletTransformer, self.depth, cls, 'spatial', tubelet)(
            einops.rearrange(x, 'b (n t) h w c -> (b n) t h w c', t=t),
            train=train)
    self.sow('intermediates', 'spatial_tokens', einops.rearrange(
        tokens, '(b n) k d -> b n k d', b=batch))
    pooled = tokens[:, 0] if cls else layers.masked_mean(tokens, token_mask)
    step_mask = (jnp.ones((batch, steps), bool) if mask is None else
                 layers.downsample_mask(mask, t, steps))
    return self._transformer(StepTransformer, self.temporal_depth, False,
                             'temporal')(
                                 einops.rearrange(pooled, '(b n) d -> b n d',
                                                  b=batch),
                                 step_mask, train=train)


# -- Initialisation from an image ViT ----------------------------------------

def inflate_kernel(kernel: np.ndarray, frames: int, method: str) -> np.ndarray:
  """An image patch kernel [p, p, C, D] -> a tubelet kernel [t, p, p, C, D].

  'central': the image kernel at the central time index t // 2, zeros at the
  others (the tubelet sees its central frame only). 'average': the kernel / t
  at every time index. Either way a tubelet of t copies of one frame embeds
  as the image patch does. (scenic's `central_frame_initializer` zeroes
  indices of the kernel's second spatial axis instead of its time axis.)
  """
  kernel = np.asarray(kernel)
  if method not in INFLATIONS:
    raise ValueError(f'inflation method must be one of {INFLATIONS}, got '
                     f'{method!r}')
  if method == 'average':
    return np.repeat(kernel[None] / frames, frames, axis=0)
  inflated = np.zeros((frames,) + kernel.shape, kernel.dtype)
  inflated[frames // 2] = kernel
  return inflated


def tile_positions(table: np.ndarray, steps: int, class_token: bool
                   ) -> np.ndarray:
  """Image positions [(1 +) n, D] -> space-time positions [(1 +) steps * n,
  D]: the patch positions repeated at every time step (time-major), the class
  token's kept once."""
  table = np.asarray(table)
  head, patches = (table[:1], table[1:]) if class_token else (table[:0], table)
  return np.concatenate([head, np.tile(patches, (steps, 1))])


def inflate_vit(vit_params: Mapping[str, Any], vivit_params: Mapping[str, Any],
                method: str = 'central') -> Dict[str, Any]:
  """`vivit_params` with the transformer an image `vit`'s parameters give.

  Args:
    vit_params: the params of a `vit` image tower (`{'patches': ...}`), e.g.
      a checkpoint's 'image_encoder' subtree.
    vivit_params: the params of a `vivit` tower of the same width, depth,
      heads, MLP width and patch size (e.g. freshly initialised); its shapes
      give the tubelet length and the number of time steps. Boxed
      (`nn.Partitioned`) or plain arrays.
    method: kernel inflation, 'central' or 'average' (`inflate_kernel`).
  Returns:
    Plain arrays: factorised, the spatial transformer is the ViT's (class
    token included; its positions need no tiling) and the temporal one keeps
    `vivit_params`'; joint, the transformer is the ViT's with the positions
    tiled over time (`tile_positions`). Everything else is copied as is.
  Raises:
    ValueError naming the first parameter whose shape does not match.
  """
  vit = nn.meta.unbox(vit_params)['patches']
  out = jax.tree.map(np.asarray, nn.meta.unbox(vivit_params))
  name = 'joint' if 'joint' in out else 'spatial'
  target = out[name]
  frames = target['patch_embed']['kernel'].shape[0]
  source = jax.tree.map(np.asarray, vit)
  source['patch_embed'] = dict(
      source['patch_embed'],
      kernel=inflate_kernel(source['patch_embed']['kernel'], frames, method))
  if name == 'joint':
    table = source['positions']['table']
    patches = table.shape[0] - ('cls' in source)
    steps = (target['positions']['table'].shape[0] - ('cls' in target)
             ) // patches
    source['positions'] = {'table': tile_positions(table, steps,
                                                   'cls' in source)}
  flat_source = dict(jax.tree_util.tree_leaves_with_path(source))
  flat_target = dict(jax.tree_util.tree_leaves_with_path(target))
  if flat_source.keys() != flat_target.keys():
    missing = sorted(map(jax.tree_util.keystr,
                         flat_target.keys() ^ flat_source.keys()))
    raise ValueError(f'inflate_vit: the vit and the vivit {name} transformer '
                     f'differ in parameters {", ".join(missing[:5])} (a class '
                     'token, depth or bias that one has and the other not).')
  for path, value in flat_source.items():
    if value.shape != flat_target[path].shape:
      raise ValueError(
          f'inflate_vit: {name}{jax.tree_util.keystr(path)} has shape '
          f'{flat_target[path].shape} in the vivit, {value.shape} from the vit;'
          ' give both towers the same width, heads, MLP width and patch size.')
  out[name] = jax.tree.map(lambda v, t: v.astype(t.dtype), source, target)
  return out
