"""FiLM: one modality's tokens modulated feature-wise by the other ones."""
from typing import Dict, Optional, Sequence

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.errors import ConfigError
from mmjax.models import layers
from mmjax.models.fusion import base
from mmjax.registry import FUSIONS


@FUSIONS.register('film')
class FiLM(nn.Module):
  """Feature-wise Linear Modulation (Perez et al., 2018, "FiLM: Visual
  Reasoning with a General Conditioning Layer").

  The tokens x_t [B, T_t, D] of the target modality t are modulated,
    x'_t = gamma * x_t + beta   (gamma, beta [B, D], broadcast over tokens),
  by the pooled vectors h_c = masked_mean(x_c) [B, D] of the conditioning
  modalities c != t:
    gamma = 1 + mean_{c present} (W_c^g h_c + b_c^g)
    beta  =     mean_{c present} (W_c^b h_c + b_c^b)
  Predicting gamma - 1 makes the layer the identity where no conditioning
  modality is present (gamma = 1, beta = 0) and keeps it near the identity
  at initialisation; the mean (rather than a sum) keeps the scale of the
  modulation independent of how many conditioning modalities are present.

  pooled = HiddenLayer([masked_mean(x'_t); h_c for each c])  [B, hidden_dim]
  (modalities in `modalities` order, zeros where absent). The conditioning
  vectors also reach the classifier directly, so an example whose target is
  absent (its modulated part is 0) is still classified from the others.
  gamma and beta are sown as intermediates.

  Attributes:
    target: the modulated modality; None -> the first of `modalities`.
    hidden_dim: width of the hidden layer (and of `pooled`); None -> dim;
      0 -> no hidden layer, `pooled` is the [B, M * D] concatenation.
  """
  modalities: Sequence[str]
  dim: int
  dropout: float = 0.0
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32
  target: Optional[str] = None
  hidden_dim: Optional[int] = None

  @nn.compact
  def __call__(self, tokens: Dict[str, jax.Array], masks: Dict[str, jax.Array],
               *, train: bool) -> base.FusionOutput:
    hidden_dim = base.width(self.hidden_dim, self.dim, 'hidden_dim',
                            allow_zero=True)
    target = self.modalities[0] if self.target is None else self.target
    if target not in self.modalities:
      raise ConfigError('model.fusion.target', f'{target!r} is not one of the '
                        f'model\'s modalities ({", ".join(self.modalities)}); '
                        'name one of them, or None for the first.')
    tokens, masks = base.prepare(tokens, masks, self.modalities, self.dim)
    pooled, present = base.pool(tokens, masks, self.modalities)  # [B, M, D]
    conditioning = [i for i, m in enumerate(self.modalities) if m != target]
    if conditioning:
      film = jnp.stack([
          layers.dense(2 * self.dim, 'embed', 'mlp', self.dtype,
                       name=f'{self.modalities[i]}_film',
                       param_dtype=self.param_dtype)(pooled[:, i])
          for i in conditioning], axis=1)  # [B, C, 2D]
      # masked_mean gives 0 where no conditioning modality is present.
      film = layers.masked_mean(film, present[:, conditioning])
    else:
      film = jnp.zeros((pooled.shape[0], 2 * self.dim), self.dtype)
    gamma, beta = 1 + film[:, :self.dim], film[:, self.dim:]
    self.sow('intermediates', 'gamma', gamma)
    self.sow('intermediates', 'beta', beta)
    t = self.modalities.index(target)
    if target in tokens:
      modulated = gamma[:, None] * tokens[target] + beta[:, None]
      pooled = pooled.at[:, t].set(
          layers.masked_mean(modulated, masks[target]))
    x = einops.rearrange(pooled, 'b modality d -> b (modality d)')
    x = base.HiddenLayer(hidden_dim, self.dropout, self.dtype,
                         self.param_dtype, name='hidden')(x, train=train)
    return base.FusionOutput(pooled=x)
