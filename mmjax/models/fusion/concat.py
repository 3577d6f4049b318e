"""Concatenation fusion: pool each modality, concatenate, one hidden layer."""
from typing import Dict, Optional, Sequence

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.models import layers
from mmjax.models.fusion import base
from mmjax.registry import FUSIONS


@FUSIONS.register('concat')
class Concat(nn.Module):
  """Masked-mean pools every modality to [B, D] and concatenates them in the
  fixed `modalities` order, then dense -> GELU -> [B, hidden_dim].

  An absent modality is replaced by a learned per-modality 'missing' vector
  (initialised to zeros, i.e. zero-filling at the start of training) rather
  than fixed zeros: zeros are also what a present modality can pool to, while
  a learned vector lets the model tell 'missing' apart and adapt to it.

  Attributes:
    hidden_dim: width of the hidden layer (and of `pooled`); None -> dim;
      0 -> no hidden layer, `pooled` is the [B, M * D] concatenation.
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
    hidden_dim = base.width(self.hidden_dim, self.dim, 'hidden_dim',
                            allow_zero=True)
    tokens, masks = base.prepare(tokens, masks, self.modalities, self.dim)
    pooled, present = base.pool(tokens, masks, self.modalities)  # [B, M, D]
    missing = self.param('missing', layers.bias((None, 'embed')),
                         (len(self.modalities), self.dim), self.param_dtype)
    pooled = jnp.where(present[..., None], pooled,
                       missing.astype(pooled.dtype)[None])
    x = einops.rearrange(pooled, 'b modality d -> b (modality d)')
    x = base.HiddenLayer(hidden_dim, self.dropout, self.dtype,
                         self.param_dtype, name='hidden')(x, train=train)
    return base.FusionOutput(pooled=x)
