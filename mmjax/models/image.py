"""Image encoders: a small CNN, ResNet-18/34/50 and a ViT.

Each maps normalised images [B, H, W, C] to tokens [B, T, D] (the final
feature map or the patches, flattened; or one pooled token) and an all-true
mask [B, T]. Options that mmjax's own models do not need (symmetric conv
padding, a class token, pre-norm, exact or quick GELU, LayerNorm epsilon,
pooled and projected outputs) let `mmjax.convert` load ResNet, ViT and CLIP
checkpoints and reproduce their outputs; the defaults are mmjax's own choices.
"""
import functools
from typing import Any, ClassVar, Dict, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from einops import rearrange

from mmjax.models import layers
from mmjax.registry import ENCODERS


def conv(features: int, kernel_size: Tuple[int, ...],
         strides: Optional[Tuple[int, ...]] = None, padding: Any = 'SAME',
         use_bias: bool = True, dtype: layers.Dtype = jnp.float32,
         name: Optional[str] = None,
         param_dtype: layers.Dtype = jnp.float32,
         kernel_grad: str = 'xla') -> nn.Conv:
  """nn.Conv whose kernel [*kernel_size, in, out] and bias [out] carry axis
  names; 1-D, 2-D or 3-D by the length of `kernel_size` (strides default 1).

  `padding` 'symmetric' pads kernel_size // 2 on both sides of each axis, as
  PyTorch's convs do; Flax's 'SAME' puts the odd pixel of a strided conv's
  padding at the end instead, which shifts the sampling grid by one pixel.
  `kernel_grad` is a `layers.BlockOptions.conv_kernel_grad`.
  """
  if padding == 'symmetric':
    padding = [(k // 2, k // 2) for k in kernel_size]
  return nn.Conv(features, kernel_size, strides or 1, padding,
                 use_bias=use_bias, dtype=dtype, param_dtype=param_dtype,
                 name=name, kernel_init=layers.kernel(
                     (None,) * (len(kernel_size) + 1) + ('channels',)),
                 bias_init=layers.bias(('channels',)),
                 conv_general_dilated=(layers.conv_offset_kernel_grad if
                                       kernel_grad == 'offsets' else None))


def feature_map_tokens(x: jax.Array) -> Tuple[jax.Array, jax.Array]:
  """[B, h, w, C] -> tokens [B, h * w, C] and an all-true mask [B, h * w]."""
  tokens = rearrange(x, 'b h w c -> b (h w) c')
  return tokens, jnp.ones(tokens.shape[:2], bool)


class ConvStack(nn.Module):
  """Conv (`kernel_size`, 3x3 by default) + ReLU + max-pool of 2 along each
  conv axis, per entry of `channels`.

  2-D: [B, H, W, C] -> [B, H // 2^n, W // 2^n, channels[-1]] for
  n = len(channels); 1-D (kernel_size=(3,)): [B, T, C] -> [B, T // 2^n, ...].
  Shared by the image CNN and the audio CNNs.
  """
  channels: Sequence[int]
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32
  kernel_size: Tuple[int, ...] = (3, 3)
  kernel_grad: str = 'xla'  # layers.BlockOptions.conv_kernel_grad.

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    pooled = tuple(range(1, len(self.kernel_size) + 1))
    for i, features in enumerate(self.channels):
      x = nn.relu(conv(features, tuple(self.kernel_size), dtype=self.dtype,
                       name=f'conv{i}', param_dtype=self.param_dtype,
                       kernel_grad=self.kernel_grad)(x))
      x = layers.max_pool2(x, pooled)
    return x


@ENCODERS['image'].register('cnn')
class ImageCNN(nn.Module):
  """A small CNN; tokens are its final feature map [B, H/2^n * W/2^n, C]."""
  channels: Sequence[int] = (32, 64, 128)
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32
  block_options: layers.BlockOptions = layers.BlockOptions()

  SIZES: ClassVar[Dict[str, Dict[str, Any]]] = {
      'tiny': dict(channels=(16, 32, 32)),
      'small': dict(channels=(32, 64, 128)),
  }

  @nn.compact
  def __call__(self, x: jax.Array, mask: Optional[jax.Array] = None, *,
               train: bool) -> Tuple[jax.Array, jax.Array]:
    del mask, train  # Images are never padded; no dropout or BatchNorm.
    x = ConvStack(self.channels, self.dtype, self.param_dtype,
                  kernel_grad=self.block_options.conv_kernel_grad,
                  name='convs')(x.astype(self.dtype))
    return feature_map_tokens(x)


class ResidualBlock(nn.Module):
  """ResNet v1.5 block: basic (two 3x3) or bottleneck (1x1, 3x3 with the
  stride, 1x1 to 4x width). [B, H, W, *] -> [B, H/s, W/s, width * expansion]."""
  width: int
  strides: int
  bottleneck: bool
  conv: Any  # functools.partial of `conv` without features / kernel_size.
  norm: Any  # functools.partial of nn.BatchNorm.

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    strides = (self.strides, self.strides)
    if self.bottleneck:
      out_width = 4 * self.width
      y = nn.relu(self.norm()(self.conv(self.width, (1, 1))(x)))
      y = nn.relu(self.norm()(self.conv(self.width, (3, 3), strides)(y)))
      y = self.conv(out_width, (1, 1))(y)
    else:
      out_width = self.width
      y = nn.relu(self.norm()(self.conv(self.width, (3, 3), strides)(x)))
      y = self.conv(self.width, (3, 3))(y)
    # Zero-initialised last scale: every block starts as the identity, which
    # makes deep nets train like shallow ones early on (Goyal et al., 2017).
    y = self.norm(scale_init=layers.bias(('norm',),
                                         nn.initializers.zeros_init()))(y)
    if x.shape != y.shape:
      x = self.norm(name='proj_norm')(
          self.conv(out_width, (1, 1), strides, name='proj_conv')(x))
    return nn.relu(x + y)


@ENCODERS['image'].register('resnet')
class ResNet(nn.Module):
  """ResNet-10/18/34 (basic blocks) or ResNet-50 (bottleneck blocks).

  ResNet-10 (one basic block per stage) is the smallest of the family: the
  'tiny' size, for tiny data and tests, where depth buys nothing.

  Stages of `width`, 2, 4 and 8 x `width` channels (x4 for bottlenecks), each
  after the first halving the resolution. Stem 'cifar' is one 3x3 conv (for
  32x32 images); 'imagenet' is a 7x7/2 conv and a 3x3/2 max-pool. BatchNorm
  statistics live in the 'batch_stats' collection (apply with
  `mutable=['batch_stats']` when training); `bn_axis_name` averages them over
  a `pmap` axis. Tokens are the final feature map [B, h * w, C].
  `padding` of the convs: 'SAME' (Flax's) or 'symmetric' (PyTorch's, for
  converted torchvision / Hugging Face weights; see `conv`). BatchNorm
  `momentum` 0.9 here is PyTorch's momentum 0.1 (the weight of the old
  running statistics against the new batch's).
  """
  depth: int = 18
  width: int = 64
  stem: str = 'cifar'  # 'cifar' | 'imagenet'
  padding: str = 'SAME'  # 'SAME' | 'symmetric'
  bn_axis_name: Optional[str] = None
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  # depth -> (blocks per stage, bottleneck blocks?)
  STAGES: ClassVar[Dict[int, Tuple[Tuple[int, ...], bool]]] = {
      10: ((1, 1, 1, 1), False),
      18: ((2, 2, 2, 2), False),
      34: ((3, 4, 6, 3), False),
      50: ((3, 4, 6, 3), True),
  }
  SIZES: ClassVar[Dict[str, Dict[str, Any]]] = {
      'tiny': dict(depth=10, width=16, stem='cifar'),
      'small': dict(depth=18, width=32, stem='cifar'),
      'resnet18': dict(depth=18, width=64, stem='imagenet'),
      'resnet34': dict(depth=34, width=64, stem='imagenet'),
      'resnet50': dict(depth=50, width=64, stem='imagenet'),
  }
  CHOICES: ClassVar[Dict[str, Tuple[Any, ...]]] = {
      'depth': tuple(STAGES), 'stem': ('cifar', 'imagenet'),
      'padding': ('SAME', 'symmetric')}

  @nn.compact
  def __call__(self, x: jax.Array, mask: Optional[jax.Array] = None, *,
               train: bool) -> Tuple[jax.Array, jax.Array]:
    del mask  # Images are never padded.
    if self.depth not in self.STAGES or self.stem not in self.CHOICES['stem']:
      raise ValueError(f'ResNet needs depth in {tuple(self.STAGES)} and stem '
                       f'in {self.CHOICES["stem"]}, got {self.depth}, '
                       f'{self.stem!r}')
    stages, bottleneck = self.STAGES[self.depth]
    conv_ = functools.partial(conv, use_bias=False, dtype=self.dtype,
                              param_dtype=self.param_dtype,
                              padding=self.padding)
    norm = functools.partial(
        nn.BatchNorm, use_running_average=not train, momentum=0.9,
        epsilon=1e-5, dtype=self.dtype, param_dtype=self.param_dtype,
        axis_name=self.bn_axis_name,
        scale_init=layers.bias(('norm',), nn.initializers.ones_init()),
        bias_init=layers.bias(('norm',)))
    x = x.astype(self.dtype)
    if self.stem == 'imagenet':
      x = conv_(self.width, (7, 7), (2, 2), padding=[(3, 3), (3, 3)],
                name='stem_conv')(x)
      x = nn.relu(norm(name='stem_norm')(x))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    else:
      x = nn.relu(norm(name='stem_norm')(
          conv_(self.width, (3, 3), name='stem_conv')(x)))
    for i, num_blocks in enumerate(stages):
      for j in range(num_blocks):
        x = ResidualBlock(self.width * 2**i, 2 if i > 0 and j == 0 else 1,
                          bottleneck, conv_, norm, name=f'stage{i}_block{j}')(x)
    return feature_map_tokens(x)


class PatchEmbed(nn.Module):
  """Linear embedding of non-overlapping patches.

  [B, H, W, C] -> [B, H // ph, W // pw, dim]; rows and columns past the last
  whole patch are dropped. The kernel [ph, pw, C, dim] is laid out (and
  initialised) as a strided conv's.
  """
  patch_size: Tuple[int, int]
  dim: int
  use_bias: bool = True
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    ph, pw = self.patch_size
    rows, cols = x.shape[1] // ph, x.shape[2] // pw
    patches = rearrange(x[:, :rows * ph, :cols * pw],
                        'b (h ph) (w pw) c -> b h w ph pw c', ph=ph, pw=pw)
    kernel = self.param('kernel', layers.kernel((None, None, None, 'channels')),
                        (ph, pw, x.shape[-1], self.dim), self.param_dtype)
    bias = (self.param('bias', layers.bias(('channels',)), (self.dim,),
                       self.param_dtype) if self.use_bias else None)
    patches, kernel, bias = nn.dtypes.promote_dtype(patches, kernel, bias,
                                                    dtype=self.dtype)
    y = jnp.einsum('bhwpqc,pqcd->bhwd', patches, kernel)
    return y if bias is None else y + bias


class PatchTransformer(nn.Module):
  """Patch embedding of a 2-D grid, learned positions, pre-LN transformer.

  [B, H, W, C] -> tokens [B, (H / ph) * (W / pw), dim] in row-major order and
  their mask. With `row_mask` [B, H] (valid rows, e.g. spectrogram frames) a
  patch is valid when any row it covers is; without it every patch is.
  With `class_token`, a learned token (always valid) comes first and the
  tokens are [B, 1 + patches, dim]. `pre_norm`: a LayerNorm on the embedded
  tokens before the transformer (CLIP's). `patch_bias`: a bias in the patch
  embedding (CLIP has none). `activation`, `ln_epsilon`: see
  `layers.TransformerStack`.
  Shared by the ViT and the spectrogram-patch transformer.
  """
  patch_size: Tuple[int, int]
  dim: int
  depth: int
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32
  block_options: layers.BlockOptions = layers.BlockOptions()
  class_token: bool = False
  pre_norm: bool = False
  patch_bias: bool = True
  activation: str = 'gelu_tanh'
  ln_epsilon: float = 1e-6

  @nn.compact
  def __call__(self, x: jax.Array, row_mask: Optional[jax.Array] = None, *,
               train: bool) -> Tuple[jax.Array, jax.Array]:
    patch = tuple(self.patch_size)
    x = PatchEmbed(patch, self.dim, self.patch_bias, self.dtype,
                   self.param_dtype, name='patch_embed')(x.astype(self.dtype))
    tokens, mask = feature_map_tokens(x)
    if row_mask is not None:
      rows, cols = x.shape[1], x.shape[2]
      mask = jnp.repeat(layers.downsample_mask(row_mask, patch[0], rows), cols,
                        axis=1)
    return self.encode(tokens, mask, train=train)

  def encode(self, tokens: jax.Array, mask: jax.Array, *, train: bool
             ) -> Tuple[jax.Array, jax.Array]:
    """Embedded tokens [B, N, dim] and their mask [B, N] -> the class token
    (with `class_token`), learned positions, `pre_norm`, dropout and the
    transformer: tokens [B, (1 +) N, dim] and mask. Called from the compact
    `__call__` (of this class or a subclass that embeds its input another
    way, e.g. `mmjax.models.video`), so its parameters live in this module."""
    if self.class_token:
      cls = self.param('cls', layers.bias(('embed',)), (self.dim,),
                       self.param_dtype)
      cls = jnp.broadcast_to(cls.astype(self.dtype), (tokens.shape[0], 1,
                                                      self.dim))
      tokens = jnp.concatenate([cls, tokens], axis=1)
      mask = jnp.concatenate([jnp.ones_like(mask[:, :1]), mask], axis=1)
    tokens = layers.AddPositions('learned', tokens.shape[1], self.dtype,
                                 self.param_dtype, name='positions')(tokens)
    if self.pre_norm:
      tokens = layers.layer_norm(self.dtype, 'pre_norm', self.param_dtype,
                                 self.ln_epsilon)(tokens)
    tokens = nn.Dropout(self.dropout, deterministic=not train)(tokens)
    tokens = layers.TransformerStack(
        self.depth, self.num_heads, self.mlp_dim, self.dropout, self.dtype,
        self.param_dtype, self.block_options, activation=self.activation,
        ln_epsilon=self.ln_epsilon, name='transformer')(tokens, mask,
                                                        train=train)
    return tokens, mask


# 'tokens': every token; 'cls': the class token's final state (CLIP's pooled
# output); 'pooler': tanh(dense(class token)) (Hugging Face ViT's pooler).
VIT_POOLINGS = ('tokens', 'cls', 'pooler')


@ENCODERS['image'].register('vit')
class ViT(nn.Module):
  """Vision transformer: patch embedding of `patch_size` squares, learned
  positions, pre-LN transformer. Tokens are the patches [B, (H/p)(W/p), dim]
  (after the class token with `class_token`), or with `pooling` 'cls' or
  'pooler' one pooled token [B, 1, dim], projected to [B, 1,
  projection_dim] by a bias-free dense layer when `projection_dim` > 0
  (CLIP's visual projection). `class_token`, `pre_norm`, `patch_bias`,
  `activation` and `ln_epsilon`: see `PatchTransformer`.
  """
  patch_size: int = 4
  dim: int = 128
  depth: int = 4
  num_heads: int = 4
  mlp_dim: int = 256
  dropout: float = 0.0
  class_token: bool = False
  pre_norm: bool = False
  patch_bias: bool = True
  activation: str = 'gelu_tanh'
  ln_epsilon: float = 1e-6
  pooling: str = 'tokens'
  projection_dim: int = 0
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32
  block_options: layers.BlockOptions = layers.BlockOptions()

  SIZES: ClassVar[Dict[str, Dict[str, Any]]] = {
      'tiny': dict(patch_size=8, dim=32, depth=1, num_heads=2, mlp_dim=64),
      'small': dict(patch_size=4, dim=128, depth=4, num_heads=4, mlp_dim=256),
  }
  CHOICES: ClassVar[Dict[str, Tuple[Any, ...]]] = {
      'activation': tuple(layers.ACTIVATIONS), 'pooling': VIT_POOLINGS}

  @nn.compact
  def __call__(self, x: jax.Array, mask: Optional[jax.Array] = None, *,
               train: bool) -> Tuple[jax.Array, jax.Array]:
    del mask  # Images are never padded.
    if self.pooling != 'tokens' and not self.class_token:
      raise ValueError(f'vit: pooling {self.pooling!r} pools the class token;'
                       ' set class_token=True.')
    if self.projection_dim and self.pooling == 'tokens':
      raise ValueError("vit: projection_dim projects the pooled token; set "
                       "pooling to 'cls' or 'pooler'.")
    tokens, mask = PatchTransformer(
        (self.patch_size, self.patch_size), self.dim, self.depth,
        self.num_heads, self.mlp_dim, self.dropout, self.dtype,
        self.param_dtype, self.block_options, self.class_token, self.pre_norm,
        self.patch_bias, self.activation, self.ln_epsilon,
        name='patches')(x, train=train)
    if self.pooling == 'tokens':
      return tokens, mask
    pooled = tokens[:, 0]
    if self.pooling == 'pooler':
      pooled = jnp.tanh(layers.dense(self.dim, None, 'embed', self.dtype,
                                     name='pooler',
                                     param_dtype=self.param_dtype)(pooled))
    if self.projection_dim:
      pooled = layers.dense(self.projection_dim, 'embed', None, self.dtype,
                            use_bias=False, name='projection',
                            param_dtype=self.param_dtype)(pooled)
    return pooled[:, None], jnp.ones((pooled.shape[0], 1), bool)
