"""Pieces shared by the transformer fusion methods: mult, mbt, early, perceiver.

`TransformerFusion` holds the fields they share (heads, MLP width, block
options) and makes their blocks; `attend` and `zero_masked` keep masked and
absent tokens from turning into values; `JoinModalities` concatenates the
modalities' tokens into one sequence that still tells them apart.
"""
from typing import Dict, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.errors import ConfigError
from mmjax.models import layers
from mmjax.models.fusion import base


class TransformerFusion(nn.Module):
  """Base of the fusion methods built from `layers.TransformerBlock`s.

  Attributes:
    num_heads: attention heads of every block; must divide dim.
    mlp_dim: hidden width of each block's MLP; None -> 4 * the block's width.
    block_options: remat and attention kernel of every block (from the
      model); `scan` applies to the stacks of identical self-attention
      blocks (`stack`).
  """
  modalities: Sequence[str]
  dim: int
  dropout: float = 0.0
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32
  block_options: layers.BlockOptions = layers.BlockOptions()
  num_heads: int = 4
  mlp_dim: Optional[int] = None

  def check_heads(self) -> None:
    """Raises ConfigError unless num_heads is positive and divides dim."""
    if (not isinstance(self.num_heads, int) or self.num_heads < 1 or
        self.dim % self.num_heads):
      raise ConfigError('model.fusion.num_heads', f'got {self.num_heads!r}; '
                        f'expected a positive integer that divides '
                        f'dim={self.dim}.')

  def _mlp_dim(self, width: int) -> int:
    return base.width(self.mlp_dim, 4 * width, 'mlp_dim')

  def block(self, name: str, width: Optional[int] = None
            ) -> layers.TransformerBlock:
    """A pre-LN block over tokens of `width` (default dim); call it through
    `self.apply_block` so that it is rematerialised."""
    return layers.TransformerBlock(
        self.num_heads, self._mlp_dim(width or self.dim), self.dropout,
        self.dtype, self.param_dtype, self.block_options.attention, name=name)

  def apply_block(self, block: layers.TransformerBlock, x: jax.Array,
                  mask: Optional[jax.Array] = None,
                  context: Optional[jax.Array] = None,
                  context_mask: Optional[jax.Array] = None, *,
                  train: bool) -> jax.Array:
    """`layers.apply_block` with this method's remat policy."""
    return layers.apply_block(block, x, mask, context, context_mask,
                              train=train, remat=self.block_options.remat)

  def stack(self, depth: int, name: str, width: Optional[int] = None
            ) -> layers.TransformerStack:
    """`depth` self-attention blocks and a final LayerNorm over `width`."""
    return layers.TransformerStack(
        depth, self.num_heads, self._mlp_dim(width or self.dim), self.dropout,
        self.dtype, self.param_dtype, self.block_options, name=name)

  def attend(self, block: layers.TransformerBlock, x: jax.Array,
             mask: Optional[jax.Array], context: jax.Array,
             context_mask: jax.Array, *, train: bool) -> jax.Array:
    """x [B, T, D] updated by `block` cross-attending to context [B, S, D].

    An example with no valid context token keeps x unchanged:
    MultiHeadAttention would average uniformly over its masked keys (bias
    values of the zeroed tokens), which is not 'nothing to attend to'.
    Positions masked in `mask` [B, T] (None: all valid) keep x too, so
    zeroed tokens stay zero.
    """
    y = self.apply_block(block, x, mask, context, context_mask, train=train)
    keep = ~context_mask.any(axis=1)[:, None, None]
    if mask is not None:
      keep = keep | ~mask[..., None]
    return jnp.where(keep, x, y)


def zero_masked(x: jax.Array, mask: jax.Array) -> jax.Array:
  """x [B, T, D] with zeros where mask [B, T] is False.

  Self-attention gives masked queries (and every query of an absent
  modality, which has only masked keys) finite but meaningless values;
  zeroing them keeps the 'masked tokens are zero' invariant of
  `base.prepare` for the next layer and for the outputs.
  """
  return jnp.where(mask[..., None], x, 0)


def pool_present(tokens: Dict[str, jax.Array],
                 masks: Dict[str, jax.Array]) -> jax.Array:
  """Each key's tokens masked-mean pooled, then averaged over the modalities
  present in each example: {m: [B, T_m, D]} -> [B, D] (zeros if none)."""
  pooled = jnp.stack([layers.masked_mean(tokens[m], masks[m])
                      for m in tokens], axis=1)  # [B, M_keys, D]
  present = jnp.stack([masks[m].any(axis=1) for m in tokens], axis=1)
  return layers.masked_mean(pooled, present)


class JoinModalities(nn.Module):
  """Concatenates the present keys' tokens in `modalities` order, each plus a
  learned modality-type embedding, so that attention over the joint sequence
  can tell the modalities apart (encoders' positions restart per modality).

  Returns tokens [B, sum_m T_m, D] (zeros where masked) and mask
  [B, sum_m T_m] (bool), for the keys in `tokens` (output of
  `base.prepare`).
  """
  modalities: Sequence[str]
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens: Dict[str, jax.Array], masks: Dict[str, jax.Array]
               ) -> Tuple[jax.Array, jax.Array]:
    dim = next(iter(tokens.values())).shape[-1]
    embedding = self.param(
        'embedding', layers.kernel((None, 'embed'),
                                   nn.initializers.normal(0.02)),
        (len(self.modalities), dim), self.param_dtype).astype(self.dtype)
    x = jnp.concatenate([tokens[m] + embedding[i]
                         for i, m in enumerate(self.modalities)
                         if m in tokens], axis=1)
    mask = jnp.concatenate([masks[m] for m in self.modalities if m in tokens],
                           axis=1)
    return zero_masked(x, mask), mask
