"""Gated Multimodal Unit (Arevalo et al., 2017) for any number of modalities."""
from typing import Dict, Sequence

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.models import layers
from mmjax.models.fusion import base
from mmjax.registry import FUSIONS


@FUSIONS.register('gated')
class Gated(nn.Module):
  """GMU over M modalities: sum_m z_m * tanh(W_m x_m) -> [B, D].

  x_m [B, D] is the masked mean of modality m's tokens. The gates z [B, M, D]
  are a softmax over modalities (per feature) of a linear map of the
  concatenation [x_1; ...; x_M], with absent modalities left out of the
  softmax (their gate is 0; all gates are 0 when none is present). For M = 2
  this is the paper's unit: a 2-way softmax of logits (a, b) is
  (sigmoid(a - b), 1 - sigmoid(a - b)), and a - b is itself a linear map of
  the concatenation, i.e. the paper's z = sigmoid(W_z [x_1; x_2]).
  The gates are sown as intermediates/gates.
  """
  modalities: Sequence[str]
  dim: int
  dropout: float = 0.0
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens: Dict[str, jax.Array], masks: Dict[str, jax.Array],
               *, train: bool) -> base.FusionOutput:
    tokens, masks = base.prepare(tokens, masks, self.modalities, self.dim)
    pooled, present = base.pool(tokens, masks, self.modalities)  # [B, M, D]
    num = pooled.shape[1]
    hidden = jnp.stack([
        jnp.tanh(layers.dense(self.dim, 'embed', 'mlp', self.dtype,
                              name=f'{m}_hidden',
                              param_dtype=self.param_dtype)(pooled[:, i]))
        if m in tokens else pooled[:, i]  # Zeros, and gated out.
        for i, m in enumerate(self.modalities)], axis=1)  # [B, M, D]
    logits = layers.dense(num * self.dim, 'embed', 'mlp', self.dtype,
                          name='gate', param_dtype=self.param_dtype)(
                              einops.rearrange(pooled, 'b m d -> b (m d)'))
    gates = base.masked_softmax(
        einops.rearrange(logits, 'b (m d) -> b m d', m=num),
        present[..., None], axis=1)
    self.sow('intermediates', 'gates', gates)
    x = (gates.astype(hidden.dtype) * hidden).sum(axis=1)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return base.FusionOutput(pooled=x)
