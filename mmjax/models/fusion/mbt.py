"""Attention bottlenecks (MBT; Nagrani et al., 2021, arXiv:2107.00135).

Follows google-research/scenic projects/mbt: per-modality transformer layers
that exchange information only through a few shared bottleneck tokens, from
`fusion_layer` on.
"""
from typing import Dict

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.errors import ConfigError
from mmjax.models import layers
from mmjax.models.fusion import base
from mmjax.models.fusion import transformer
from mmjax.registry import FUSIONS


@FUSIONS.register('mbt')
class MBT(transformer.TransformerFusion):
  """`num_layers` layers, each a TransformerBlock per modality (own weights).

  Layers before `fusion_layer` are self-attention over each modality's
  tokens [B, T_m, D] alone. From `fusion_layer` on, modality m's block runs
  over [its tokens; the bottleneck tokens [B, num_bottlenecks, D]], and the
  next bottleneck is the mean of the blocks' bottleneck outputs over the
  modalities present in each example: an absent modality (missing key or
  all-zero mask) does not write into it, and an example with none present
  keeps its bottleneck. The initial bottleneck tokens are learned. So
  `fusion_layer = num_layers` is late fusion (no exchange at all) and
  `fusion_layer = 0` exchanges from the first layer. As in scenic, the
  bottleneck a modality reads at `fusion_layer` is the learned one: its
  tokens first see the other modalities at layer `fusion_layer + 1`, so
  `fusion_layer = num_layers - 1` leaves them unfused too. Each modality
  ends with its own LayerNorm.

  Returns pooled [B, D]: each modality's tokens masked-mean pooled, averaged
  over the modalities present in the example; tokens [B, sum_m T_m, D]: the
  present keys' tokens in `modalities` order, without the bottleneck tokens
  (zeros where masked), with their mask.

  Attributes:
    num_layers: transformer layers per modality.
    fusion_layer: index of the first layer with bottleneck exchange, in
      [0, num_layers].
    num_bottlenecks: number of shared bottleneck tokens (>= 1).
    (num_heads, mlp_dim, block_options: see TransformerFusion; `scan` does
    not apply, as the layers change role at `fusion_layer`.)
  """
  num_layers: int = 2
  fusion_layer: int = 0
  num_bottlenecks: int = 4

  @nn.compact
  def __call__(self, tokens: Dict[str, jax.Array], masks: Dict[str, jax.Array],
               *, train: bool) -> base.FusionOutput:
    self.check_heads()
    num_layers = base.width(self.num_layers, 2, 'num_layers')
    fusion_layer = base.width(self.fusion_layer, 0, 'fusion_layer',
                              allow_zero=True)
    if fusion_layer > num_layers:
      raise ConfigError('model.fusion.fusion_layer', f'got {fusion_layer}, '
                        f'past the last layer; expected 0 to num_layers='
                        f'{num_layers} (num_layers: no exchange, late '
                        'fusion).')
    num_bottlenecks = base.width(self.num_bottlenecks, 4, 'num_bottlenecks')
    tokens, masks = base.prepare(tokens, masks, self.modalities, self.dim)
    batch = next(iter(tokens.values())).shape[0]
    if fusion_layer < num_layers:  # Late fusion has no bottleneck.
      initial = self.param(
          'bottleneck',
          layers.kernel((None, 'embed'), nn.initializers.normal(0.02)),
          (num_bottlenecks, self.dim), self.param_dtype)
      bottleneck = jnp.broadcast_to(initial.astype(self.dtype),
                                    (batch, num_bottlenecks, self.dim))
    present = jnp.stack([masks[m].any(axis=1) for m in tokens], axis=1)
    with_bottleneck = {
        m: jnp.concatenate([masks[m], jnp.ones((batch, num_bottlenecks),
                                               bool)], axis=1)
        for m in tokens}
    for i in range(num_layers):
      written = []
      for m in tokens:
        block = self.block(f'{m}_block{i}')
        if i < fusion_layer:
          y = self.apply_block(block, tokens[m], masks[m], train=train)
        else:
          y = self.apply_block(
              block, jnp.concatenate([tokens[m], bottleneck], axis=1),
              with_bottleneck[m], train=train)
          y, b = jnp.split(y, [tokens[m].shape[1]], axis=1)
          written.append(einops.rearrange(b, 'b n d -> b (n d)'))
        tokens[m] = transformer.zero_masked(y, masks[m])
      if written:
        # Mean over the present modalities' writes; kept where none is.
        mean = layers.masked_mean(jnp.stack(written, axis=1), present)
        bottleneck = jnp.where(present.any(axis=1)[:, None, None],
                               einops.rearrange(mean, 'b (n d) -> b n d',
                                                n=num_bottlenecks),
                               bottleneck)
    tokens = {m: transformer.zero_masked(
        layers.layer_norm(self.dtype, f'{m}_ln_final', self.param_dtype)(x),
        masks[m]) for m, x in tokens.items()}
    return base.FusionOutput(
        pooled=transformer.pool_present(tokens, masks),
        tokens=jnp.concatenate(list(tokens.values()), axis=1),
        mask=jnp.concatenate(list(masks.values()), axis=1))
