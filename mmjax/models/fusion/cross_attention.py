"""Cross-modal attention: each modality's tokens attend to the other ones'."""
from typing import Dict

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.models.fusion import base
from mmjax.models.fusion import transformer
from mmjax.registry import FUSIONS


@FUSIONS.register('cross_attention')
class CrossAttention(transformer.TransformerFusion):
  """`depth` rounds in which every modality's tokens [B, T_m, D] are updated by
  a TransformerBlock (its own per modality and round) whose queries are that
  modality's tokens and whose keys/values are the concatenated tokens of the
  other modalities (all modalities are updated from the previous round).

  An example in which no other modality is present has nothing to attend to,
  so that example keeps its tokens unchanged (`attend`); a model configured
  with one modality passes its tokens through. Masked positions stay zero.

  Returns pooled [B, D]: each modality masked-mean pooled, then averaged
  over the modalities present in the example; tokens [B, sum_m T_m, D]: the
  updated tokens of the present keys concatenated in `modalities` order, with
  their mask [B, sum_m T_m].

  Attributes:
    depth: number of cross-attention rounds.
    (num_heads, mlp_dim, block_options: see TransformerFusion; `scan` does
    not apply, as every block has its own role.)
  """
  depth: int = 1

  @nn.compact
  def __call__(self, tokens: Dict[str, jax.Array], masks: Dict[str, jax.Array],
               *, train: bool) -> base.FusionOutput:
    self.check_heads()
    depth = base.width(self.depth, 1, 'depth')
    tokens, masks = base.prepare(tokens, masks, self.modalities, self.dim)
    for i in range(depth):
      updated = {}
      for m in tokens:
        others = [o for o in tokens if o != m]
        if not others:
          updated[m] = tokens[m]
          continue
        updated[m] = self.attend(
            self.block(f'{m}_block{i}'), tokens[m], masks[m],
            jnp.concatenate([tokens[o] for o in others], axis=1),
            jnp.concatenate([masks[o] for o in others], axis=1), train=train)
      tokens = updated
    return base.FusionOutput(
        pooled=transformer.pool_present(tokens, masks),
        tokens=jnp.concatenate(list(tokens.values()), axis=1),
        mask=jnp.concatenate(list(masks.values()), axis=1))
