"""Factorised bilinear pooling (MFB) of the pooled modality vectors."""
from typing import Dict, Optional, Sequence

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.models import layers
from mmjax.models.fusion import base
from mmjax.registry import FUSIONS

# Offset of the guarded signed square root (see `signed_sqrt`).
SQRT_EPS = 1e-6


def signed_sqrt(z: jax.Array, eps: float = SQRT_EPS) -> jax.Array:
  """sign(z) (sqrt(|z| + eps) - sqrt(eps)): MFB's power normalisation
  sign(z) sqrt(|z|) to within sqrt(eps), 0 at 0, with a derivative of at
  most 1 / (2 sqrt(eps)) where sqrt(|z|)'s is infinite at 0 (a NaN gradient
  for an output feature that happens to be 0)."""
  return jnp.sign(z) * (jnp.sqrt(jnp.abs(z) + eps) - jnp.sqrt(eps))


@FUSIONS.register('bilinear')
class Bilinear(nn.Module):
  """Multi-modal Factorized Bilinear pooling (Yu et al., 2017, "Multi-modal
  Factorized Bilinear Pooling with Co-Attention Learning for Visual Question
  Answering").

  For two modalities each output feature is a bilinear form
  z_j = x^T U_j V_j^T y of rank `factor` (k):
    z = SumPool_k(dropout(P_x * P_y))   [B, out_dim], P_m = W_m h_m + b_m
  with h_m = masked_mean(x_m) [B, D], P_m [B, k * out_dim] and SumPool_k the
  sum over each group of k consecutive features; then the power
  normalisation z <- sign(z) sqrt(|z|) (guarded at 0, see `signed_sqrt`)
  and the L2 normalisation z <- z / ||z|| give `pooled` [B, out_dim].

  More than two modalities: the elementwise product runs over every
  present modality's P_m, an absent modality contributing the
  multiplicative identity 1. So with two of three modalities present this
  is MFB of that pair, with one present it is that modality's (sum-pooled,
  normalised) projection, and with none a constant unit vector (from which
  the classifier's bias predicts). Normalisation is computed in float32.

  Attributes:
    factor: k, the rank of each output feature's bilinear form.
    out_dim: width of `pooled`; None -> dim.
  """
  modalities: Sequence[str]
  dim: int
  dropout: float = 0.0
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32
  factor: int = 5
  out_dim: Optional[int] = None

  @nn.compact
  def __call__(self, tokens: Dict[str, jax.Array], masks: Dict[str, jax.Array],
               *, train: bool) -> base.FusionOutput:
    factor = base.width(self.factor, 5, 'factor')
    out_dim = base.width(self.out_dim, self.dim, 'out_dim')
    tokens, masks = base.prepare(tokens, masks, self.modalities, self.dim)
    pooled, present = base.pool(tokens, masks, self.modalities)  # [B, M, D]
    product = 1.0
    for i, m in enumerate(self.modalities):
      projection = layers.dense(factor * out_dim, 'embed', 'mlp', self.dtype,
                                name=f'{m}_projection',
                                param_dtype=self.param_dtype)(pooled[:, i])
      product = product * jnp.where(present[:, i, None], projection, 1)
    product = nn.Dropout(self.dropout, deterministic=not train)(product)
    z = einops.reduce(product, 'b (out factor) -> b out', 'sum',
                      factor=factor).astype(jnp.float32)
    z = signed_sqrt(z)
    z = z * jax.lax.rsqrt(jnp.maximum(jnp.sum(z * z, axis=-1, keepdims=True),
                                      1e-12))
    return base.FusionOutput(pooled=z.astype(self.dtype))
