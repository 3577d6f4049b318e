"""Cross-modal attention: each modality's tokens attend to the other ones'."""
from typing import Dict, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.errors import ConfigError
from mmjax.models import layers
from mmjax.models.fusion import base
from mmjax.registry import FUSIONS


@FUSIONS.register('cross_attention')
class CrossAttention(nn.Module):
  """`depth` rounds in which every modality's tokens [B, T_m, D] are updated by
  a TransformerBlock (its own per modality and round) whose queries are that
  modality's tokens and whose keys/values are the concatenated tokens of the
  other modalities (all modalities are updated from the previous round).

  An example in which no other modality is present has nothing to attend to
  (MultiHeadAttention would average uniformly over masked keys), so that
  example keeps its tokens unchanged; a model configured with one modality
  passes its tokens through. Masked positions stay zero.

  Returns pooled [B, D]: each modality masked-mean pooled, then averaged
  over the modalities present in the example; tokens [B, sum_m T_m, D]: the
  updated tokens of the present keys concatenated in `modalities` order, with
  their mask [B, sum_m T_m].

  Attributes:
    depth: number of cross-attention rounds.
    num_heads: attention heads; must divide dim.
    mlp_dim: hidden width of each block's MLP; None -> 4 * dim.
    block_options: remat and attention kernel of the blocks (from the
      model); `scan` does not apply, as every block has its own role.
  """
  modalities: Sequence[str]
  dim: int
  dropout: float = 0.0
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32
  block_options: layers.BlockOptions = layers.BlockOptions()
  depth: int = 1
  num_heads: int = 4
  mlp_dim: Optional[int] = None

  @nn.compact
  def __call__(self, tokens: Dict[str, jax.Array], masks: Dict[str, jax.Array],
               *, train: bool) -> base.FusionOutput:
    mlp_dim = base.width(self.mlp_dim, 4 * self.dim, 'mlp_dim')
    depth = base.width(self.depth, 1, 'depth')
    num_heads = base.width(self.num_heads, 4, 'num_heads')
    if self.dim % num_heads:
      raise ConfigError('model.fusion.num_heads', f'got {num_heads}, which '
                        f'does not divide dim={self.dim}.')
    tokens, masks = base.prepare(tokens, masks, self.modalities, self.dim)
    for i in range(depth):
      updated = {}
      for m in tokens:
        others = [o for o in tokens if o != m]
        if not others:
          updated[m] = tokens[m]
          continue
        context = jnp.concatenate([tokens[o] for o in others], axis=1)
        context_mask = jnp.concatenate([masks[o] for o in others], axis=1)
        block = layers.TransformerBlock(
            num_heads, mlp_dim, self.dropout, self.dtype, self.param_dtype,
            self.block_options.attention, name=f'{m}_block{i}')
        y = layers.apply_block(block, tokens[m], masks[m], context,
                               context_mask, train=train,
                               remat=self.block_options.remat)
        # No other modality present (attention would average uniformly over
        # masked keys) or a masked query: keep the tokens (zeros if masked).
        keep = ~context_mask.any(axis=1)[:, None, None] | ~masks[m][..., None]
        updated[m] = jnp.where(keep, tokens[m], y)
      tokens = updated
    pooled = jnp.stack([layers.masked_mean(tokens[m], masks[m])
                        for m in tokens], axis=1)  # [B, M_present, D]
    present = jnp.stack([masks[m].any(axis=1) for m in tokens], axis=1)
    return base.FusionOutput(
        pooled=layers.masked_mean(pooled, present),
        tokens=jnp.concatenate(list(tokens.values()), axis=1),
        mask=jnp.concatenate(list(masks.values()), axis=1))
