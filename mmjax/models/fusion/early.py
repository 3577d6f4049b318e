"""Early fusion: one transformer over the tokens of every modality."""
from typing import Dict

import flax.linen as nn
import jax

from mmjax.models import layers
from mmjax.models.fusion import base
from mmjax.models.fusion import transformer
from mmjax.registry import FUSIONS


@FUSIONS.register('early')
class Early(transformer.TransformerFusion):
  """The present modalities' tokens, each plus a learned modality-type
  embedding, concatenated in `modalities` order to [B, sum_m T_m, D] and run
  through one self-attention transformer of `depth` blocks whose padding mask
  hides masked and absent tokens.

  Returns pooled [B, D]: the masked mean over every valid token (so a
  modality weighs by its number of valid tokens; zeros when none is valid);
  tokens [B, sum_m T_m, D] (zeros where masked) and their mask.

  Attributes:
    depth: blocks of the joint transformer.
    (num_heads, mlp_dim, block_options: see TransformerFusion; `scan`
    applies.)
  """
  depth: int = 2

  @nn.compact
  def __call__(self, tokens: Dict[str, jax.Array], masks: Dict[str, jax.Array],
               *, train: bool) -> base.FusionOutput:
    self.check_heads()
    depth = base.width(self.depth, 2, 'depth')
    tokens, masks = base.prepare(tokens, masks, self.modalities, self.dim)
    x, mask = transformer.JoinModalities(
        self.modalities, self.dtype, self.param_dtype,
        name='modality_embedding')(tokens, masks)
    x = transformer.zero_masked(
        self.stack(depth, 'encoder')(x, mask, train=train), mask)
    return base.FusionOutput(pooled=layers.masked_mean(x, mask), tokens=x,
                             mask=mask)
