"""Perceiver fusion (Jaegle et al., 2021, arXiv:2103.03206)."""
from typing import Dict

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.models import layers
from mmjax.models.fusion import base
from mmjax.models.fusion import transformer
from mmjax.registry import FUSIONS


@FUSIONS.register('perceiver')
class Perceiver(transformer.TransformerFusion):
  """`num_latents` learned latent tokens [B, N, D] cross-attend to the joint
  sequence of the present modalities' tokens (each plus a learned
  modality-type embedding, [B, sum_m T_m, D]), then go through a latent
  transformer of `depth` self-attention blocks; `cross_attends` times in
  all. As in the paper, the latent transformer's weights are shared by every
  repeat and the cross-attention's by every repeat after the first. The cost
  is linear in the input length and the output size does not depend on it.

  An example with no valid token (no modality present) has nothing to
  attend to, so its latents skip the cross-attention update (`attend`).
  The latents after each cross-attention are sown as
  intermediates/cross_attended [B, N, D].

  Returns pooled [B, D]: the mean of the final latents; no tokens (the
  latents do not correspond to input tokens).

  Attributes:
    num_latents: number of latent tokens.
    depth: self-attention blocks of the latent transformer.
    cross_attends: how many times the latents read the inputs.
    (num_heads, mlp_dim, block_options: see TransformerFusion; `scan`
    applies to the latent transformer.)
  """
  num_latents: int = 8
  depth: int = 1
  cross_attends: int = 1

  @nn.compact
  def __call__(self, tokens: Dict[str, jax.Array], masks: Dict[str, jax.Array],
               *, train: bool) -> base.FusionOutput:
    self.check_heads()
    num_latents = base.width(self.num_latents, 8, 'num_latents')
    depth = base.width(self.depth, 1, 'depth')
    cross_attends = base.width(self.cross_attends, 1, 'cross_attends')
    tokens, masks = base.prepare(tokens, masks, self.modalities, self.dim)
    context, context_mask = transformer.JoinModalities(
        self.modalities, self.dtype, self.param_dtype,
        name='modality_embedding')(tokens, masks)
    latents = self.param(
        'latents', layers.kernel((None, 'embed'),
                                 nn.initializers.normal(0.02)),
        (num_latents, self.dim), self.param_dtype).astype(self.dtype)
    x = jnp.broadcast_to(latents, (context.shape[0],) + latents.shape)
    latent_transformer = self.stack(depth, 'latent_transformer')
    blocks = [self.block('cross_attention0')]
    if cross_attends > 1:
      blocks.append(self.block('cross_attention'))
    for i in range(cross_attends):
      x = self.attend(blocks[min(i, 1)], x, None, context, context_mask,
                      train=train)
      self.sow('intermediates', 'cross_attended', x)
      x = latent_transformer(x, train=train)
    return base.FusionOutput(pooled=x.mean(axis=1))
