"""Non-local attention gate: each modality's vector gated by what it finds in
every modality's tokens."""
from typing import Dict, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.errors import ConfigError
from mmjax.models import layers
from mmjax.models.fusion import base
from mmjax.registry import FUSIONS


@FUSIONS.register('nonlocal_gate')
class NonLocalGate(nn.Module):
  """Gates each modality's pooled vector by a non-local context.

  For every configured modality m, with h_m = masked_mean(x_m) [B, D] and
  X [B, sum_m T_m, D] the tokens of all modalities (valid ones only):
    c_m = MultiHeadAttention(query h_m, keys and values X)   [B, D]
    g_m = sigmoid(W_m c_m + b_m)                             [B, D]
    pooled = mean_{m present} g_m * h_m                      [B, D]
  The attention is the embedded-Gaussian non-local operation (Wang et al.,
  2018, "Non-local Neural Networks"), softmax((h_m W_q)(X W_k)^T / sqrt(d))
  X W_v with an output projection, one query per modality; its weights are
  shared by the modalities, the gates W_m are per modality. Every present
  modality has valid tokens in X, so a query that counts always has keys;
  an example with no modality present pools to 0. `dropout` applies to the
  attention weights. The gates [B, M, D] are sown as intermediates/gates.

  Attributes:
    num_heads: attention heads; must divide dim.
    block_options: its `attention` kernel is used (from the model).
  """
  modalities: Sequence[str]
  dim: int
  dropout: float = 0.0
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32
  block_options: layers.BlockOptions = layers.BlockOptions()
  num_heads: int = 1

  @nn.compact
  def __call__(self, tokens: Dict[str, jax.Array], masks: Dict[str, jax.Array],
               *, train: bool) -> base.FusionOutput:
    num_heads = base.width(self.num_heads, 1, 'num_heads')
    if self.dim % num_heads:
      raise ConfigError('model.fusion.num_heads', f'got {num_heads}, which '
                        f'does not divide dim={self.dim}.')
    tokens, masks = base.prepare(tokens, masks, self.modalities, self.dim)
    pooled, present = base.pool(tokens, masks, self.modalities)  # [B, M, D]
    context = layers.MultiHeadAttention(
        num_heads, self.dropout, self.dtype, self.param_dtype,
        self.block_options.attention, name='attention')(
            pooled, jnp.concatenate(list(tokens.values()), axis=1),
            jnp.concatenate(list(masks.values()), axis=1),
            train=train)  # [B, M, D]
    gates = jnp.stack([
        nn.sigmoid(layers.dense(self.dim, 'embed', 'mlp', self.dtype,
                                name=f'{m}_gate',
                                param_dtype=self.param_dtype)(context[:, i]))
        for i, m in enumerate(self.modalities)], axis=1)  # [B, M, D]
    self.sow('intermediates', 'gates', gates)
    return base.FusionOutput(
        pooled=layers.masked_mean(gates * pooled, present))
