"""Late fusion: a head per modality, averaged over the present modalities."""
from typing import Dict, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.models import layers
from mmjax.models.fusion import base
from mmjax.registry import FUSIONS


@FUSIONS.register('late')
class Late(nn.Module):
  """Per-modality heads h_m = Mlp_m(masked_mean(x_m)) -> [B, D], averaged over
  the modalities present in each example (sum / max(count, 1)).

  This is late fusion (averaging per-modality predictions): the model puts
  one shared linear classifier W, b on `pooled`, so for an example with
  present set P, logits = W mean_{m in P} h_m + b = mean_{m in P} (W h_m + b),
  exactly the average of per-modality logits, where modality m's classifier
  is Mlp_m followed by W. Mlp_m ends in a linear layer, so the composition
  of that layer with W can represent any separate per-modality linear
  classifier. An example with no modality present gets logits b.

  Attributes:
    hidden_dim: hidden width of each per-modality Mlp; None -> dim.
  """
  modalities: Sequence[str]
  dim: int
  dropout: float = 0.0
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32
  hidden_dim: Optional[int] = None

  @nn.compact
  def __call__(self, tokens: Dict[str, jax.Array], masks: Dict[str, jax.Array],
               *, train: bool) -> base.FusionOutput:
    hidden_dim = base.width(self.hidden_dim, self.dim, 'hidden_dim')
    tokens, masks = base.prepare(tokens, masks, self.modalities, self.dim)
    pooled, present = base.pool(tokens, masks, self.modalities)  # [B, M, D]
    heads = [
        layers.Mlp(hidden_dim, self.dim, self.dropout, self.dtype,
                   self.param_dtype, name=f'{m}_head')(pooled[:, i],
                                                       train=train)
        if m in tokens else pooled[:, i]  # Zeros, and never averaged in.
        for i, m in enumerate(self.modalities)]
    heads = jnp.stack(heads, axis=1)  # [B, M, D]
    # masked_mean over the modality axis: divides by max(count, 1).
    return base.FusionOutput(pooled=layers.masked_mean(heads, present))
