"""Two (or more) towers for contrastive retrieval: one encoder per modality ->
masked mean pool -> linear projection -> L2-normalised embedding.

Config (`config.model` with name 'two_tower'): `modalities`, `encoders` (as
for the classifier), `dim` (token width of the encoders' projection and the
embedding width), `dtype`, `param_dtype`, `remat`, `scan_layers`,
`attention`. The learnable temperature and bias start from
`config.task.temperature` and `config.task.bias` (see
mmjax/tasks/retrieval.py): they are parameters of the model, so they are
sharded, updated and checkpointed like every other parameter.
"""
import math
from typing import Any, Dict, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from mmjax.errors import ConfigError, check_fields
from mmjax.models import layers
from mmjax.models.encoders import model_encoder
from mmjax.registry import MODELS

Batch = Mapping[str, jax.Array]
FIELDS = ('name', 'modalities', 'encoders', 'dim', 'dtype', 'param_dtype',
          'remat', 'scan_layers', 'attention', 'conv_kernel_grad')


def l2_normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
  """x / |x| over the last axis; a zero row stays zero (no NaN)."""
  return x * jax.lax.rsqrt(jnp.maximum((x * x).sum(-1, keepdims=True),
                                       eps * eps))


@MODELS.register('two_tower')
class TwoTower(nn.Module):
  """One tower per modality, embedding each into a shared space.

  Batch keys per modality `m`: `m` (the input) and optional `m + '_mask'`.
  A modality whose key is absent from the batch is not embedded (e.g. text
  prompts alone, for zero-shot classification).

  Returns a dict: `m` -> float32 [B, dim] unit-norm embeddings for every
  modality in the batch, 'logit_scale' [] (exp of the learnable log inverse
  temperature, the factor of the cosine similarities) and 'logit_bias' []
  (the sigmoid loss's learnable bias; unused by the softmax loss).
  """
  modalities: Sequence[str]
  encoders: Mapping[str, ml_collections.ConfigDict]
  dim: int
  temperature: float = 0.07
  bias: float = 0.0
  vocab_size: Optional[int] = None
  sample_rate: Optional[int] = None
  dtype: Any = jnp.float32
  bn_axis_name: Optional[str] = None
  param_dtype: Any = jnp.float32
  block_options: layers.BlockOptions = layers.BlockOptions()

  @nn.compact
  def __call__(self, batch: Batch, *, train: bool) -> Dict[str, jax.Array]:
    outputs = {}
    for m in self.modalities:
      if m not in batch:
        continue
      encoder = model_encoder(self, m)
      tokens, mask = encoder(batch[m], batch.get(f'{m}_mask'), train=train)
      pooled = layers.masked_mean(tokens, mask)
      embedding = layers.dense(self.dim, None, 'embed', self.dtype,
                               name=f'{m}_proj',
                               param_dtype=self.param_dtype)(pooled)
      outputs[m] = l2_normalize(embedding.astype(jnp.float32))
    # Scalars as [1] parameters: a rank-0 leaf has no axis to name.
    log_scale = self.param(
        'log_scale', layers.bias((None,), nn.initializers.constant(
            -math.log(self.temperature))), (1,), jnp.float32)
    logit_bias = self.param(
        'logit_bias', layers.bias((None,), nn.initializers.constant(
            self.bias)), (1,), jnp.float32)
    outputs['logit_scale'] = jnp.exp(log_scale[0])
    outputs['logit_bias'] = logit_bias[0]
    return outputs

  @staticmethod
  def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError for a `config.model` field two towers do not take,
    a task other than 'retrieval' or a temperature that is not positive."""
    check_fields(config.model, FIELDS, 'model', "model 'two_tower'")
    if config.task.name != 'retrieval':
      raise ConfigError('task.name', f"model 'two_tower' returns embeddings, "
                        "which task 'retrieval' trains; got "
                        f'{config.task.name!r}.')
    if len(config.model.modalities) < 2:
      raise ConfigError('model.modalities', 'two towers need at least two '
                        f'modalities, got {tuple(config.model.modalities)}.')
    temperature = config.task.get('temperature', 0.07)
    if not isinstance(temperature, (int, float)) or temperature <= 0:
      raise ConfigError('task.temperature', 'must be a positive number, got '
                        f'{temperature!r}.')

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, *,
                  num_outputs: int, **dataset_fields) -> 'TwoTower':
    """The towers of `config.model`; `dataset_fields` (vocab_size,
    sample_rate, bn_axis_name) come from the dataset and the runner."""
    del num_outputs  # No classification head.
    mc = config.model
    return cls(
        modalities=tuple(mc.modalities),
        encoders={m: mc.encoders[m] for m in mc.modalities}, dim=mc.dim,
        temperature=config.task.get('temperature', 0.07),
        bias=config.task.get('bias', 0.0),
        dtype=jnp.dtype(mc.dtype), param_dtype=jnp.dtype(mc.param_dtype),
        block_options=layers.BlockOptions.from_config(mc),
        **dataset_fields)
