"""Multimodal Transformer (MulT; Tsai et al., 2019, arXiv:1906.00295)."""
from typing import Dict

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.models import layers
from mmjax.models.fusion import base
from mmjax.models.fusion import transformer
from mmjax.registry import FUSIONS


@FUSIONS.register('mult')
class MulT(transformer.TransformerFusion):
  """Directional cross-modal transformers into every target modality.

  For each target m with tokens X_m [B, T_m, D] and each other configured
  modality s, the cross-modal transformer s -> m is `depth` blocks whose
  queries are the target stream (starting at X_m) and whose keys/values are
  the source tokens X_s [B, T_s, D] (the same X_s in every layer, as in the
  paper). The M - 1 outputs are concatenated along features, in
  `modalities` order, to [B, T_m, (M - 1) D] (the paper's
  [Z_{V->L}; Z_{A->L}]), run through a self-attention transformer of
  `self_depth` blocks at that width, and projected back to D.

  A pair whose source is absent (missing key, or no valid source token in
  an example) contributes nothing from the source: its slot holds the
  target's own tokens X_m, as a block with nothing to attend to would keep
  them (`attend`). Zeros instead would leave a target present alone with
  all-zero features and so lose it. With one configured modality the target's
  tokens go straight to the self-attention transformer.

  Returns pooled [B, D]: each target's projected tokens masked-mean pooled,
  averaged over the modalities present in the example; tokens
  [B, sum_m T_m, D]: the projected tokens of the present keys in
  `modalities` order (zeros where masked), with their mask.

  Attributes:
    depth: blocks of each cross-modal transformer.
    self_depth: blocks of each target's self-attention transformer (0: its
      final LayerNorm only).
    (num_heads, mlp_dim, block_options: see TransformerFusion; mlp_dim None
    gives the self-attention blocks 4 (M - 1) D hidden units.)
  """
  depth: int = 1
  self_depth: int = 1

  @nn.compact
  def __call__(self, tokens: Dict[str, jax.Array], masks: Dict[str, jax.Array],
               *, train: bool) -> base.FusionOutput:
    self.check_heads()
    depth = base.width(self.depth, 1, 'depth')
    self_depth = base.width(self.self_depth, 1, 'self_depth', allow_zero=True)
    tokens, masks = base.prepare(tokens, masks, self.modalities, self.dim)
    width = max(len(self.modalities) - 1, 1) * self.dim
    fused = {}
    for m in tokens:
      streams = []
      for s in self.modalities:
        if s == m:
          continue
        z = tokens[m]
        if s in tokens:
          for i in range(depth):
            z = self.attend(self.block(f'{s}_to_{m}_block{i}'), z, masks[m],
                            tokens[s], masks[s], train=train)
        streams.append(z)
      x = jnp.concatenate(streams or [tokens[m]], axis=-1)  # [B, T_m, width]
      x = self.stack(self_depth, f'{m}_self', width)(x, masks[m], train=train)
      x = layers.dense(self.dim, 'mlp', 'embed', self.dtype, name=f'{m}_out',
                       param_dtype=self.param_dtype)(x)
      fused[m] = transformer.zero_masked(x, masks[m])
    return base.FusionOutput(
        pooled=transformer.pool_present(fused, masks),
        tokens=jnp.concatenate(list(fused.values()), axis=1),
        mask=jnp.concatenate(list(masks.values()), axis=1))
