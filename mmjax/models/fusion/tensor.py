"""Tensor fusion (TFN) and its low-rank factorisation (LMF).

Both read the outer product Z = [h_1; 1] (x) ... (x) [h_M; 1] of the pooled
modality vectors h_m, each extended by a constant 1, so that Z holds every
product of features of any subset of the modalities: the h_m themselves
(unimodal terms), the pairwise products (bimodal terms), and so on up to the
M-modal products. TFN forms Z; LMF applies a low-rank linear map to it
without forming it.

Absent modality: h_m = 0. Then every entry of Z that involves a feature of m
is 0 and only the entries through its constant 1 remain, which are exactly
the entries of the tensor product of the present modalities: the same
weights apply to any subset of present modalities, with no renormalisation
and nothing for the absent one to contribute. (Zeroing the whole [h_m; 1]
instead would zero Z, and so the output, whenever one modality is missing.)
"""
from typing import Dict, Optional, Sequence

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.models import layers
from mmjax.models.fusion import base
from mmjax.registry import FUSIONS


@FUSIONS.register('tensor')
class TensorFusion(nn.Module):
  """Tensor Fusion Network (Zadeh et al., 2017, "Tensor Fusion Network for
  Multimodal Sentiment Analysis").

    h_m = W_m masked_mean(x_m) + b_m   [B, factor_dim], 0 where m is absent
    Z   = [h_1; 1] (x) ... (x) [h_M; 1]   [B, (factor_dim + 1)^M] flattened
    pooled = dropout(GELU(dense(Z)))   [B, hidden_dim]

  over every configured modality in `modalities` order (a missing key is
  absent for every example). See the module docstring for why an absent
  modality keeps its constant 1.

  Attributes:
    factor_dim: width of each h_m. Z grows as (factor_dim + 1)^M: with the
      default 8 and three modalities it has 729 features.
    hidden_dim: width of the dense layer on Z (and of `pooled`); None -> dim.
  """
  modalities: Sequence[str]
  dim: int
  dropout: float = 0.0
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32
  factor_dim: int = 8
  hidden_dim: Optional[int] = None

  @nn.compact
  def __call__(self, tokens: Dict[str, jax.Array], masks: Dict[str, jax.Array],
               *, train: bool) -> base.FusionOutput:
    factor_dim = base.width(self.factor_dim, 8, 'factor_dim')
    hidden_dim = base.width(self.hidden_dim, self.dim, 'hidden_dim')
    tokens, masks = base.prepare(tokens, masks, self.modalities, self.dim)
    pooled, present = base.pool(tokens, masks, self.modalities)  # [B, M, D]
    batch = pooled.shape[0]
    fused = jnp.ones((batch, 1), self.dtype)
    for i, m in enumerate(self.modalities):
      h = layers.dense(factor_dim, 'embed', None, self.dtype,
                       name=f'{m}_factor', param_dtype=self.param_dtype)(
                           pooled[:, i])
      # The bias would make h_m nonzero for an absent m.
      h = jnp.where(present[:, i, None], h, 0)
      z = jnp.concatenate([h, jnp.ones((batch, 1), h.dtype)], axis=-1)
      outer = (einops.rearrange(fused, 'b i -> b i 1') *
               einops.rearrange(z, 'b j -> b 1 j'))
      fused = einops.rearrange(outer, 'b i j -> b (i j)')
    x = base.HiddenLayer(hidden_dim, self.dropout, self.dtype,
                         self.param_dtype, name='hidden')(fused, train=train)
    return base.FusionOutput(pooled=x)


@FUSIONS.register('low_rank')
class LowRankFusion(nn.Module):
  """Low-rank Multimodal Fusion (Liu et al., 2018, "Efficient Low-rank
  Multimodal Fusion with Modality-Specific Factors").

  A linear map of TFN's Z = (x)_m [h_m; 1] whose weight tensor
  W [(D + 1)^M, out_dim] has rank `rank`, W = sum_i (x)_m W_m^(i) with
  modality-specific factors W_m^(i) [D + 1, out_dim], computed without
  forming Z:

    pooled = dropout(sum_{i < rank} prod_m ([h_m; 1] W_m^(i)))   [B, out_dim]

  with h_m = masked_mean(x_m) [B, D], 0 where m is absent (so only the
  constant-1 row of its factors remains; see the module docstring).
  [h_m; 1] W_m^(i) = h_m A_m^(i) + c_m^(i) is a dense layer whose bias is the
  last row of the factor: one dense of rank * out_dim features per modality.
  The paper's learned per-rank weights and output bias are left out: the
  weights can be absorbed into any modality's factors and the bias is the
  classifier's.

  Attributes:
    rank: number of rank-1 terms r.
    out_dim: width of `pooled`; None -> dim.
  """
  modalities: Sequence[str]
  dim: int
  dropout: float = 0.0
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32
  rank: int = 4
  out_dim: Optional[int] = None

  @nn.compact
  def __call__(self, tokens: Dict[str, jax.Array], masks: Dict[str, jax.Array],
               *, train: bool) -> base.FusionOutput:
    rank = base.width(self.rank, 4, 'rank')
    out_dim = base.width(self.out_dim, self.dim, 'out_dim')
    tokens, masks = base.prepare(tokens, masks, self.modalities, self.dim)
    # Zeros where absent: `pool` masks every modality.
    pooled, _ = base.pool(tokens, masks, self.modalities)  # [B, M, D]
    product = 1.0
    for i, m in enumerate(self.modalities):
      factor = layers.dense(rank * out_dim, 'embed', 'mlp', self.dtype,
                            name=f'{m}_factors', param_dtype=self.param_dtype)
      product = product * einops.rearrange(
          factor(pooled[:, i]), 'b (rank out) -> b rank out', rank=rank)
    x = nn.Dropout(self.dropout, deterministic=not train)(product.sum(axis=1))
    return base.FusionOutput(pooled=x)
