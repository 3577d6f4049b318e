"""Softmax-weighted sums of the pooled modality vectors.

'weighted_sum' learns one scalar logit per modality; 'modality_attention'
scores each example's pooled vectors by their content. Both take the softmax
over the modalities present in each example.
"""
from typing import Dict, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.errors import ConfigError
from mmjax.models import layers
from mmjax.models.fusion import base
from mmjax.registry import FUSIONS

SCORES = ('learned', 'content')


@FUSIONS.register('weighted_sum')
class WeightedSum(nn.Module):
  """sum_m w_m masked_mean(x_m) -> dense -> GELU -> [B, hidden_dim].

  The weights w [B, M] are a softmax of per-modality scores over the
  modalities present in each example (zero for absent ones, all zero when
  none is present); they are sown as intermediates/weights. The hidden layer
  matches 'concat' so that the two are compared at the same depth.

  Attributes:
    scores: 'learned': one learned logit per modality, the same for every
      example; 'content': score_m = v^T tanh(W h_m) of the pooled vector h_m
      (W, v shared by all modalities).
    attention_dim: width of W for 'content' scores; None -> dim.
    hidden_dim: width of the hidden layer (and of `pooled`); None -> dim;
      0 -> no hidden layer, `pooled` is the weighted sum itself [B, D].
  """
  modalities: Sequence[str]
  dim: int
  dropout: float = 0.0
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32
  scores: str = 'learned'
  attention_dim: Optional[int] = None
  hidden_dim: Optional[int] = None

  @nn.compact
  def __call__(self, tokens: Dict[str, jax.Array], masks: Dict[str, jax.Array],
               *, train: bool) -> base.FusionOutput:
    hidden_dim = base.width(self.hidden_dim, self.dim, 'hidden_dim',
                            allow_zero=True)
    tokens, masks = base.prepare(tokens, masks, self.modalities, self.dim)
    pooled, present = base.pool(tokens, masks, self.modalities)  # [B, M, D]
    if self.scores == 'learned':
      scores = self.param('logits', layers.bias((None,)),
                          (len(self.modalities),),
                          self.param_dtype)[None]  # [1, M]
    elif self.scores == 'content':
      attention_dim = base.width(self.attention_dim, self.dim, 'attention_dim')
      h = jnp.tanh(layers.dense(attention_dim, 'embed', 'mlp', self.dtype,
                                name='score_hidden',
                                param_dtype=self.param_dtype)(pooled))
      scores = layers.dense(1, 'mlp', None, self.dtype, use_bias=False,
                            name='score', param_dtype=self.param_dtype)(
                                h)[..., 0]  # [B, M]
    else:
      raise ConfigError('model.fusion.scores', f'got {self.scores!r}; '
                        f'expected one of {", ".join(SCORES)}.')
    weights = base.masked_softmax(scores, present, axis=-1)  # [B, M]
    self.sow('intermediates', 'weights', weights)
    x = jnp.einsum('bm,bmd->bd', weights.astype(pooled.dtype), pooled)
    x = base.HiddenLayer(hidden_dim, self.dropout, self.dtype,
                         self.param_dtype, name='hidden')(x, train=train)
    return base.FusionOutput(pooled=x)


@FUSIONS.register('modality_attention')
class ModalityAttention(WeightedSum):
  """WeightedSum whose weights come from the content of each example:
  w = softmax_m(v^T tanh(W h_m)) over the present modalities."""
  scores: str = 'content'
