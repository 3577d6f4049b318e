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

Modules take a compute ``dtype`` (activations) and keep float32 parameters.
"""
from typing import Any, Callable, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

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
          init: Callable = default_kernel_init) -> nn.Dense:
  """nn.Dense with logical axis names on its kernel [in, out] and bias [out]."""
  return nn.Dense(features, dtype=dtype, use_bias=use_bias, name=name,
                  kernel_init=kernel((in_axis, out_axis), init),
                  bias_init=bias((out_axis,)))


def layer_norm(dtype: Dtype = jnp.float32, name: Optional[str] = None):
  return nn.LayerNorm(dtype=dtype, name=name,
                      scale_init=bias(('norm',), nn.initializers.ones_init()),
                      bias_init=bias(('norm',)))


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

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    out_dim = self.out_dim or x.shape[-1]
    x = dense(self.hidden_dim, 'embed', 'mlp', self.dtype, name='fc1')(x)
    x = nn.gelu(x)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return dense(out_dim, 'mlp', 'embed', self.dtype, name='fc2')(x)


class MultiHeadAttention(nn.Module):
  """Multi-head attention of queries [B, Tq, D] over keys/values [B, Tk, D].

  Masked keys get a large negative (finite) logit, so a query whose keys are
  all masked (a missing modality) attends uniformly and stays finite; callers
  zero such rows through their own masks.
  """
  num_heads: int
  dropout: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, q: jax.Array, kv: jax.Array,
               kv_mask: Optional[jax.Array] = None,
               causal: bool = False, *, train: bool) -> jax.Array:
    """q: [B, Tq, D]; kv: [B, Tk, D]; kv_mask: [B, Tk]. Returns [B, Tq, D]."""
    dim = q.shape[-1]
    if dim % self.num_heads:
      raise ValueError(f'width {dim} is not divisible by {self.num_heads} heads')
    head_dim = dim // self.num_heads

    def project(name, x):
      return nn.DenseGeneral(
          (self.num_heads, head_dim), dtype=self.dtype, name=name,
          kernel_init=kernel(('embed', 'heads', 'kv')),
          bias_init=bias(('heads', 'kv')))(x)

    query = project('query', q) / jnp.sqrt(head_dim).astype(self.dtype)
    key, value = project('key', kv), project('value', kv)
    logits = jnp.einsum('bqhd,bkhd->bhqk', query, key).astype(jnp.float32)
    valid = jnp.ones((q.shape[0], 1, q.shape[1], kv.shape[1]), bool)
    if kv_mask is not None:
      valid = valid & kv_mask.astype(bool)[:, None, None, :]
    if causal:
      valid = valid & jnp.tril(jnp.ones((q.shape[1], kv.shape[1]), bool))
    logits = jnp.where(valid, logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    weights = nn.Dropout(self.dropout, deterministic=not train)(weights)
    out = jnp.einsum('bhqk,bkhd->bqhd', weights, value)
    return nn.DenseGeneral(
        dim, axis=(-2, -1), dtype=self.dtype, name='out',
        kernel_init=kernel(('heads', 'kv', 'embed')),
        bias_init=bias(('embed',)))(out)


class TransformerBlock(nn.Module):
  """Pre-LN transformer block: self-attention (or cross-attention) then MLP.

  With `context` given, queries come from `x` and keys/values from `context`
  (cross-attention); otherwise it is self-attention over `x`.
  """
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: Optional[jax.Array] = None,
               context: Optional[jax.Array] = None,
               context_mask: Optional[jax.Array] = None,
               causal: bool = False, *, train: bool) -> jax.Array:
    """x: [B, T, D]; mask: [B, T]; context: [B, S, D]. Returns [B, T, D]."""
    drop = nn.Dropout(self.dropout, deterministic=not train)
    y = layer_norm(self.dtype, name='ln_attn')(x)
    if context is None:
      kv, kv_mask = y, mask
    else:
      kv = layer_norm(self.dtype, name='ln_context')(context)
      kv_mask = context_mask
    y = MultiHeadAttention(self.num_heads, self.dropout, self.dtype,
                           name='attn')(y, kv, kv_mask, causal, train=train)
    x = x + drop(y)
    y = layer_norm(self.dtype, name='ln_mlp')(x)
    y = Mlp(self.mlp_dim, dropout=self.dropout, dtype=self.dtype,
            name='mlp')(y, train=train)
    return x + drop(y)


class TransformerStack(nn.Module):
  """`depth` pre-LN self-attention blocks and a final LayerNorm: [B,T,D]->[B,T,D]."""
  depth: int
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: Optional[jax.Array] = None, *,
               train: bool) -> jax.Array:
    for i in range(self.depth):
      x = TransformerBlock(self.num_heads, self.mlp_dim, self.dropout,
                           self.dtype, name=f'block{i}')(x, mask, train=train)
    return layer_norm(self.dtype, name='ln_final')(x)


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

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    length, dim = x.shape[1], x.shape[2]
    if length > self.max_len:
      raise ValueError(f'sequence of {length} tokens exceeds max_len '
                       f'{self.max_len} of the position embedding')
    if self.kind == 'learned':
      table = self.param('table', kernel((None, 'embed'),
                                         nn.initializers.normal(0.02)),
                         (self.max_len, dim))
    elif self.kind == 'sinusoidal':
      table = sinusoidal_positions(self.max_len, dim)
    else:
      raise ValueError(f"positions must be 'learned' or 'sinusoidal', "
                       f'got {self.kind!r}')
    return x + table[None, :length].astype(self.dtype)


def downsample_mask(mask: jax.Array, factor: int, length: int) -> jax.Array:
  """A [B, T] mask reduced to [B, length] tokens that each cover `factor` steps.

  A token is valid when any step it covers is valid. Used after strided convs
  and patching of variable-length inputs (audio frames).
  """
  batch, steps = mask.shape
  pad = length * factor - steps
  if pad > 0:
    mask = jnp.pad(mask, ((0, 0), (0, pad)))
  mask = mask[:, :length * factor].reshape(batch, length, factor)
  return mask.any(axis=-1)
