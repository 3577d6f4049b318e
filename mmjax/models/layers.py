"""Building blocks shared by encoders, fusion methods and heads.

Every parameter carries logical axis names (``nn.with_logical_partitioning``);
`mmjax.train.sharding` maps them to mesh axes with the rules in
``config.parallel.rules``. The names used across mmjax:

  embed     model width (token dimension)          -> fsdp
  mlp       hidden width of MLPs, LSTM gates       -> tensor
  heads     attention heads                        -> tensor
  kv        per-head width                         -> replicated
  vocab     token vocabulary                       -> tensor
  channels  conv output channels                   -> fsdp
  classes   output classes                         -> replicated
  norm      scales and biases of normalisations    -> replicated
  layers    the stacked layer axis of scanned blocks -> replicated (no rule)

Every module takes a compute ``dtype`` (activations, e.g. bfloat16) and a
``param_dtype`` (parameters, and so gradients and optimizer state; float32
by default), so mixed precision keeps a float32 master copy of the weights.

Transformer blocks take `BlockOptions`: rematerialisation, `nn.scan` over
the layers of a stack, and the attention kernel. Their activations are pinned
(`mmjax.sharding.constrain`) where tensor parallelism needs them: MLP
hidden units and attention heads over 'tensor' (the rules of 'mlp' and
'heads'), and the residual stream at block boundaries split over the batch
only, so each block ends with one reduction of its tensor-parallel partial
sums (the Megatron layout).
"""
import dataclasses
import functools
import itertools
from typing import Any, Callable, Optional, Tuple

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.sharding import constrain

Dtype = Any
Axes = Tuple[Optional[str], ...]

default_kernel_init = nn.initializers.lecun_normal()


def kernel(axes: Axes, init: Callable = default_kernel_init) -> Callable:
  """A kernel initializer whose parameter carries logical axis names."""
  return nn.with_logical_partitioning(init, axes)


def bias(axes: Axes, init: Callable = nn.initializers.zeros_init()) -> Callable:
  return nn.with_logical_partitioning(init, axes)


def dense(features: int, in_axis: Optional[str], out_axis: Optional[str],
          dtype: Dtype = jnp.float32, use_bias: bool = True,
          name: Optional[str] = None,
          init: Callable = default_kernel_init,
          param_dtype: Dtype = jnp.float32) -> nn.Dense:
  """nn.Dense with logical axis names on its kernel [in, out] and bias [out]."""
  return nn.Dense(features, dtype=dtype, param_dtype=param_dtype,
                  use_bias=use_bias, name=name,
                  kernel_init=kernel((in_axis, out_axis), init),
                  bias_init=bias((out_axis,)))


def layer_norm(dtype: Dtype = jnp.float32, name: Optional[str] = None,
               param_dtype: Dtype = jnp.float32, epsilon: float = 1e-6):
  return nn.LayerNorm(epsilon=epsilon, dtype=dtype, param_dtype=param_dtype,
                      name=name,
                      scale_init=bias(('norm',), nn.initializers.ones_init()),
                      bias_init=bias(('norm',)))


def quick_gelu(x: jax.Array) -> jax.Array:
  """x * sigmoid(1.702 x): the GELU approximation OpenAI's CLIP trained with."""
  return x * jax.nn.sigmoid(1.702 * x)


# MLP activations by name. 'gelu_tanh' (Flax's default nn.gelu) is mmjax's
# own; the others match pretrained towers (exact-erf GELU: BERT, ViT;
# quick_gelu: CLIP), whose outputs the tanh form would only approximate.
ACTIVATIONS = {
    'gelu_tanh': functools.partial(jax.nn.gelu, approximate=True),
    'gelu': functools.partial(jax.nn.gelu, approximate=False),
    'quick_gelu': quick_gelu,
}


# Rematerialisation policies: what a block's backward pass may keep from its
# forward pass instead of recomputing it. 'full' keeps only the block input;
# 'save_dots' keeps matmul outputs (the expensive part) and recomputes the
# cheap elementwise ops (norms, GELU, softmax), whose outputs are much of
# the activation memory.
REMAT_POLICIES = {
    'none': None,
    'full': jax.checkpoint_policies.nothing_saveable,
    'save_dots': jax.checkpoint_policies.checkpoint_dots,
}
ATTENTION_KERNELS = ('einsum', 'dot_product')
CONV_KERNEL_GRADS = ('xla', 'offsets')  # BlockOptions.conv_kernel_grad.


@dataclasses.dataclass(frozen=True)
class BlockOptions:
  """Speed / memory options of transformer blocks and conv stacks
  (config.model.<field>).

  Attributes:
    remat: key of REMAT_POLICIES, applied to every block.
    scan: run a stack's identical blocks with `nn.scan` (parameters stacked
      on a leading 'layers' axis): one block is compiled instead of `depth`.
    attention: 'einsum' (explicit logits, softmax in float32) or
      'dot_product' (`jax.nn.dot_product_attention` with implementation=None:
      JAX picks the kernel; JAX 0.10 always picks XLA's, later versions may
      pick cuDNN's fused one on GPUs). Attention-weight dropout needs the
      explicit weights, so blocks with dropout > 0 use 'einsum' when
      training.
    conv_kernel_grad: how the CNN towers' convs (`ConvStack`) compute their
      kernel gradients: 'xla' (XLA's own) or 'offsets' (one matmul per
      kernel offset, `conv_offset_kernel_grad`: faster on XLA:CPU but for
      convs with few input channels; float32 rounding differs).
  """
  remat: str = 'none'
  scan: bool = False
  attention: str = 'einsum'
  conv_kernel_grad: str = 'xla'

  def __post_init__(self):
    if self.remat not in REMAT_POLICIES:
      raise ValueError(f'remat must be one of {tuple(REMAT_POLICIES)}, got '
                       f'{self.remat!r}')
    if self.attention not in ATTENTION_KERNELS:
      raise ValueError(f'attention must be one of {ATTENTION_KERNELS}, got '
                       f'{self.attention!r}')
    if self.conv_kernel_grad not in CONV_KERNEL_GRADS:
      raise ValueError(f'conv_kernel_grad must be one of {CONV_KERNEL_GRADS}'
                       f', got {self.conv_kernel_grad!r}')

  @classmethod
  def from_config(cls, model_config: Any) -> 'BlockOptions':
    """The options of `config.model` (fields remat, scan_layers, attention,
    conv_kernel_grad); an absent field (a GAN config's, or a run older than
    the field) keeps this class's default."""
    fields = dict(remat='remat', scan='scan_layers', attention='attention',
                  conv_kernel_grad='conv_kernel_grad')
    return cls(**{option: model_config[field] for option, field in
                  fields.items() if field in model_config})


def masked_mean(tokens: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean over valid tokens; an all-masked row gives zeros, never NaN.

  Args:
    tokens: [B, T, D].
    mask: [B, T], nonzero where a token is valid.
  Returns:
    [B, D].
  """
  mask = mask.astype(tokens.dtype)[..., None]
  count = jnp.maximum(mask.sum(axis=1), 1.0)
  return (tokens * mask).sum(axis=1) / count


class Mlp(nn.Module):
  """Two-layer feed-forward block: [..., D] -> [..., out_dim or D]."""
  hidden_dim: int
  out_dim: Optional[int] = None
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  activation: str = 'gelu_tanh'  # A key of ACTIVATIONS.

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    out_dim = self.out_dim or x.shape[-1]
    x = dense(self.hidden_dim, 'embed', 'mlp', self.dtype, name='fc1',
              param_dtype=self.param_dtype)(x)
    x = constrain(x, ('batch',) + (None,) * (x.ndim - 2) + ('mlp',))
    x = ACTIVATIONS[self.activation](x)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return dense(out_dim, 'mlp', 'embed', self.dtype, name='fc2',
                 param_dtype=self.param_dtype)(x)


class MultiHeadAttention(nn.Module):
  """Multi-head attention of queries [B, Tq, D] over keys/values [B, Tk, D].

  Masked keys get a large negative (finite) logit, so a query whose keys are
  all masked (a missing modality) attends uniformly and stays finite; callers
  zero such rows through their own masks. `attention_kernel` is a key of
  ATTENTION_KERNELS (see `BlockOptions`); both give the same outputs.
  """
  num_heads: int
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  attention_kernel: str = 'einsum'

  @nn.compact
  def __call__(self, q: jax.Array, kv: jax.Array,
               kv_mask: Optional[jax.Array] = None,
               causal: bool = False, *, train: bool) -> jax.Array:
    """q: [B, Tq, D]; kv: [B, Tk, D]; kv_mask: [B, Tk]. Returns [B, Tq, D]."""
    dim = q.shape[-1]
    if dim % self.num_heads:
      raise ValueError(f'width {dim} is not divisible by {self.num_heads} heads')
    head_dim = dim // self.num_heads

    def project(name, x):  # -> [B, T, H, K]
      return constrain(nn.DenseGeneral(
          (self.num_heads, head_dim), dtype=self.dtype,
          param_dtype=self.param_dtype, name=name,
          kernel_init=kernel(('embed', 'heads', 'kv')),
          bias_init=bias(('heads', 'kv')))(x), ('batch', None, 'heads', None))

    query, key, value = project('query', q), project('key', kv), project(
        'value', kv)
    valid = None if kv_mask is None else einops.rearrange(
        kv_mask.astype(bool), 'batch k -> batch 1 1 k')
    if (self.attention_kernel == 'dot_product' and
        not (train and self.dropout > 0)):
      # implementation=None lets JAX pick the kernel (see BlockOptions).
      out = jax.nn.dot_product_attention(query, key, value, mask=valid,
                                         is_causal=causal)
    else:
      out = self._einsum_attention(query, key, value, valid, causal, train)
    return nn.DenseGeneral(
        dim, axis=(-2, -1), dtype=self.dtype, param_dtype=self.param_dtype,
        name='out', kernel_init=kernel(('heads', 'kv', 'embed')),
        bias_init=bias(('embed',)))(out)

  def _einsum_attention(self, query, key, value, valid, causal, train):
    """[B, Tq, H, K] queries over [B, Tk, H, K] keys / values -> [B, Tq, H, K];
    valid: [B, 1, 1, Tk] or None."""
    query = query / jnp.sqrt(query.shape[-1]).astype(self.dtype)
    logits = einops.einsum(
        query, key, 'batch q heads d, batch k heads d -> batch heads q k'
    ).astype(jnp.float32)
    if valid is not None or causal:
      mask = jnp.ones(logits.shape[-2:], bool)
      if causal:
        mask = jnp.tril(mask)
      if valid is not None:
        mask = mask & valid
      logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    weights = nn.Dropout(self.dropout, deterministic=not train)(weights)
    return einops.einsum(
        weights, value, 'batch heads q k, batch k heads d -> batch q heads d')


class TransformerBlock(nn.Module):
  """Pre-LN transformer block: self-attention (or cross-attention) then MLP.

  With `context` given, queries come from `x` and keys/values from `context`
  (cross-attention); otherwise it is self-attention over `x`. Call it
  through `apply_block` to rematerialise it. `activation` (a key of
  ACTIVATIONS) and `ln_epsilon` match pretrained towers' choices.
  """
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  attention: str = 'einsum'
  activation: str = 'gelu_tanh'
  ln_epsilon: float = 1e-6

  @nn.compact
  def __call__(self, x: jax.Array, mask: Optional[jax.Array] = None,
               context: Optional[jax.Array] = None,
               context_mask: Optional[jax.Array] = None,
               causal: bool = False, *, train: bool) -> jax.Array:
    """x: [B, T, D]; mask: [B, T]; context: [B, S, D]. Returns [B, T, D]."""
    residual = ('batch', None, None)
    x = constrain(x, residual)
    drop = nn.Dropout(self.dropout, deterministic=not train)
    norm = functools.partial(layer_norm, self.dtype,
                             param_dtype=self.param_dtype,
                             epsilon=self.ln_epsilon)
    y = norm(name='ln_attn')(x)
    if context is None:
      kv, kv_mask = y, mask
    else:
      kv = norm(name='ln_context')(context)
      kv_mask = context_mask
    y = MultiHeadAttention(self.num_heads, self.dropout, self.dtype,
                           self.param_dtype, self.attention,
                           name='attn')(y, kv, kv_mask, causal, train=train)
    x = x + drop(y)
    y = norm(name='ln_mlp')(x)
    y = Mlp(self.mlp_dim, dropout=self.dropout, dtype=self.dtype,
            param_dtype=self.param_dtype, activation=self.activation,
            name='mlp')(y, train=train)
    return constrain(x + drop(y), residual)


def _call_block(block: TransformerBlock, x, mask, context, context_mask,
                causal, train):
  # All-positional, so that nn.remat can mark `causal` and `train` static.
  return block(x, mask, context, context_mask, causal, train=train)


def apply_block(block: TransformerBlock, x: jax.Array,
                mask: Optional[jax.Array] = None,
                context: Optional[jax.Array] = None,
                context_mask: Optional[jax.Array] = None,
                causal: bool = False, *, train: bool,
                remat: str = 'none', in_scan: bool = False) -> jax.Array:
  """Calls `block` (same arguments), rematerialised by the `remat` policy.

  The backward pass recomputes what the policy does not save, trading
  compute for the memory of the block's activations; values and gradients
  are unchanged. Parameters keep the block's own names. `in_scan`: the call
  is a scan body, whose loop already keeps XLA from merging the recomputation
  with the forward pass, so the extra barriers are left out (as the JAX docs
  advise for remat under scan).
  """
  fn = _call_block
  if remat != 'none':
    fn = nn.remat(_call_block, policy=REMAT_POLICIES[remat],
                  prevent_cse=not in_scan, static_argnums=(5, 6))
  return fn(block, x, mask, context, context_mask, causal, train)


class TransformerStack(nn.Module):
  """`depth` pre-LN self-attention blocks and a final LayerNorm: [B,T,D]->[B,T,D].

  Unrolled, the blocks are `block{i}`; with `options.scan` they are one
  `blocks` module whose parameters have a leading [depth] axis (logical
  name 'layers'), run by `nn.scan`. `causal`: each token attends to itself
  and earlier tokens only (CLIP's text tower). `activation`, `ln_epsilon`:
  as in `TransformerBlock` (the final LayerNorm uses the same epsilon).
  """
  depth: int
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  options: BlockOptions = BlockOptions()
  causal: bool = False
  activation: str = 'gelu_tanh'
  ln_epsilon: float = 1e-6

  @nn.compact
  def __call__(self, x: jax.Array, mask: Optional[jax.Array] = None, *,
               train: bool) -> jax.Array:
    if self.activation not in ACTIVATIONS:
      raise ValueError(f'activation must be one of {tuple(ACTIVATIONS)}, got '
                       f'{self.activation!r}')
    block = functools.partial(TransformerBlock, self.num_heads, self.mlp_dim,
                              self.dropout, self.dtype, self.param_dtype,
                              self.options.attention, self.activation,
                              self.ln_epsilon)
    remat = self.options.remat
    causal = self.causal
    if self.options.scan:
      def body(module, carry, mask):
        return apply_block(module, carry, mask, causal=causal, train=train,
                           remat=remat, in_scan=True), None

      scan = nn.scan(body, variable_axes={'params': 0},
                     split_rngs={'params': True, 'dropout': True},
                     in_axes=nn.broadcast, length=self.depth,
                     metadata_params={nn.PARTITION_NAME: 'layers'})
      x, _ = scan(block(name='blocks'), x, mask)
    else:
      for i in range(self.depth):
        x = apply_block(block(name=f'block{i}'), x, mask, causal=causal,
                        train=train, remat=remat)
    return layer_norm(self.dtype, name='ln_final',
                      param_dtype=self.param_dtype,
                      epsilon=self.ln_epsilon)(x)


def sinusoidal_positions(length: int, dim: int) -> jax.Array:
  """Fixed sine/cosine position table [length, dim] (Vaswani et al., 2017)."""
  position = jnp.arange(length, dtype=jnp.float32)[:, None]
  inv_freq = jnp.exp(-jnp.log(10000.0) * jnp.arange(0, dim, 2) / dim)
  angles = position * inv_freq[None, :]
  table = jnp.zeros((length, dim), jnp.float32)
  table = table.at[:, 0::2].set(jnp.sin(angles))
  return table.at[:, 1::2].set(jnp.cos(angles[:, :dim // 2]))


class AddPositions(nn.Module):
  """Adds learned or sinusoidal positions to tokens [B, T, D]."""
  kind: str = 'learned'  # 'learned' | 'sinusoidal'
  max_len: int = 512
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    length, dim = x.shape[1], x.shape[2]
    if length > self.max_len:
      raise ValueError(f'sequence of {length} tokens exceeds max_len '
                       f'{self.max_len} of the position embedding')
    if self.kind == 'learned':
      table = self.param('table', kernel((None, 'embed'),
                                         nn.initializers.normal(0.02)),
                         (self.max_len, dim), self.param_dtype)
    elif self.kind == 'sinusoidal':
      table = sinusoidal_positions(self.max_len, dim)
    else:
      raise ValueError(f"positions must be 'learned' or 'sinusoidal', "
                       f'got {self.kind!r}')
    return x + table[None, :length].astype(self.dtype)


def _window_corners(x: jax.Array, axes: Tuple[int, ...]) -> list:
  """The strided slices of `x` that hold each position of its non-overlapping
  2-wide windows along `axes` (a trailing odd row is dropped, as a VALID
  pool drops it), in window order: 2 ** len(axes) arrays."""
  x = x[tuple(slice(0, n // 2 * 2) if a in axes else slice(None)
              for a, n in enumerate(x.shape))]
  corners = [x]
  for axis in axes:
    corners = [c[tuple(slice(i, None, 2) if a == axis else slice(None)
                       for a in range(c.ndim))]
               for c in corners for i in (0, 1)]
  return corners


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def max_pool2(x: jax.Array, axes: Tuple[int, ...]) -> jax.Array:
  """Max over non-overlapping windows of 2 along each of `axes` (stride 2,
  VALID: a trailing odd row is dropped), e.g. axes=(1, 2) on [B, H, W, C]
  -> [B, H // 2, W // 2, C].

  Values and gradients equal `nn.max_pool(x, (2, 2), strides=(2, 2))`'s
  bitwise (the gradient goes to the first maximum of each window). XLA:CPU
  differentiates `reduce_window` max through index arrays of the input's
  size and a variadic window reduction, which cost more than the
  convolutions of a small CNN; these are elementwise selects instead.
  """
  return functools.reduce(jnp.maximum, _window_corners(x, axes))


def _max_pool2_fwd(x, axes):
  y = max_pool2(x, axes)
  return y, (x, y)


def _max_pool2_bwd(axes, residuals, g):
  x, y = residuals
  taken = jnp.zeros(y.shape, bool)
  parts = []
  for corner in _window_corners(x, axes):
    first = (corner == y) & ~taken  # The first maximum takes the gradient.
    taken = taken | first
    parts.append(jnp.where(first, g, jnp.zeros_like(g)))
  # Interleave the corners back: axis a of part k holds window offset bit
  # of `axes`; unstack one axis at a time, last axis first (the inverse of
  # `_window_corners`).
  for axis in reversed(axes):
    parts = [jnp.stack(parts[i:i + 2], axis=axis + 1) for i in
             range(0, len(parts), 2)]
    parts = [p.reshape(p.shape[:axis] + (-1,) + p.shape[axis + 2:])
             for p in parts]
  dx, = parts
  pad = [(0, n - m) for n, m in zip(x.shape, dx.shape)]
  return (jnp.pad(dx, pad),)


max_pool2.defvjp(_max_pool2_fwd, _max_pool2_bwd)


def _channels_last(ndim: int) -> jax.lax.ConvDimensionNumbers:
  """[B, *spatial, C] inputs and outputs, [*window, in, out] kernels."""
  spatial = tuple(range(1, ndim - 1))
  return jax.lax.ConvDimensionNumbers((0, ndim - 1) + spatial,
                                      (ndim - 1, ndim - 2) + tuple(
                                          range(ndim - 2)),
                                      (0, ndim - 1) + spatial)


def _conv(x, kernel, padding, precision):
  return jax.lax.conv_general_dilated(
      x, kernel, (1,) * (x.ndim - 2), padding, precision=precision,
      dimension_numbers=_channels_last(x.ndim))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_offset_grad(x, kernel, padding, precision):
  return _conv(x, kernel, padding, precision)


def _conv_offset_grad_fwd(x, kernel, padding, precision):
  return _conv(x, kernel, padding, precision), (x, kernel)


def _conv_offset_grad_bwd(padding, precision, residuals, dy):
  x, kernel = residuals
  # The input's gradient exactly as XLA derives it; only the kernel's
  # gradient is computed differently.
  dx, = jax.vjp(lambda x: _conv(x, kernel, padding, precision), x)[1](dy)
  window = kernel.shape[:-2]
  if isinstance(padding, str):
    padding = jax.lax.padtype_to_pads(x.shape[1:-1], window,
                                      (1,) * len(window), padding)
  x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
  dy_rows = dy.reshape(-1, dy.shape[-1])
  grads = []
  for offset in itertools.product(*map(range, window)):
    # The inputs each output position saw at this kernel offset.
    seen = x[(slice(None),) + tuple(
        slice(o, o + n) for o, n in zip(offset, dy.shape[1:-1]))]
    grads.append(jnp.matmul(seen.reshape(-1, x.shape[-1]).T, dy_rows,
                            precision=precision,
                            preferred_element_type=jnp.float32))
  return dx, jnp.stack(grads).reshape(kernel.shape).astype(kernel.dtype)


_conv_offset_grad.defvjp(_conv_offset_grad_fwd, _conv_offset_grad_bwd)


def conv_offset_kernel_grad(lhs, rhs, window_strides, padding,
                            lhs_dilation=None, rhs_dilation=None,
                            dimension_numbers=None, feature_group_count=1,
                            precision=None):
  """`jax.lax.conv_general_dilated` (as nn.Conv calls it) whose kernel
  gradient is one matmul per kernel offset: for a 3x3 kernel, nine products
  [in, B * H * W] x [B * H * W, out].

  Same outputs and input gradients as the plain conv; the kernel gradient
  sums the same products in another order (float32 rounding differs).
  XLA:CPU computes a conv's kernel gradient as a convolution over the batch:
  for the manifest config's image CNN it took 5.5x as long as these matmuls
  for the 16 -> 32 channel conv and 1.4x for the 32 -> 32 one, but only 0.76x
  for the first, 3-channel conv (benchmarks/conv_kernel_grad/results.json).
  Stride-1, undilated, ungrouped channels-last convs only; others (not used
  by ConvStack) take the plain conv.
  """
  plain = all(s == 1 for s in window_strides) and all(
      d in (None, 1) for d in (*(lhs_dilation or ()), *(rhs_dilation or ()))
  ) and feature_group_count == 1 and (
      dimension_numbers == _channels_last(lhs.ndim))
  if not plain:
    return jax.lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
        dimension_numbers, feature_group_count, precision=precision)
  if not isinstance(padding, str):
    padding = tuple(map(tuple, padding))  # Hashable, for custom_vjp.
  return _conv_offset_grad(lhs, rhs, padding, precision)


def downsample_mask(mask: jax.Array, factor: int, length: int) -> jax.Array:
  """A [B, T] mask reduced to [B, length] tokens that each cover `factor` steps.

  A token is valid when any step it covers is valid. Used after strided convs
  and patching of variable-length inputs (audio frames).
  """
  pad = length * factor - mask.shape[1]
  if pad > 0:
    mask = jnp.pad(mask, ((0, 0), (0, pad)))
  return einops.reduce(mask[:, :length * factor],
                       'batch (length factor) -> batch length', 'any',
                       factor=factor)
