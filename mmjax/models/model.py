"""The multimodal model: one encoder per modality -> projection -> fusion -> head."""
from typing import Any, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from mmjax.errors import ConfigError
from mmjax.models import layers
from mmjax.models import gan  # noqa: F401  (registers 'gan')
from mmjax.models import seq2seq  # noqa: F401  (registers 'seq2seq')
from mmjax.models import two_tower  # noqa: F401  (registers 'two_tower')
from mmjax.models.encoders import encode_modalities
from mmjax.models.fusion import base as fusion_base
from mmjax.registry import MODELS

Batch = Mapping[str, jax.Array]


@MODELS.register('classifier')
class MultimodalModel(nn.Module):
  """Encoders for the configured modalities, a fusion method and a linear head.

  Batch keys per modality `m`: `m` (the input), optional `m + '_mask'` (valid
  steps of a variable-length input) and optional `m + '_present'` [B] (0 marks
  the modality as missing for that example, e.g. for robustness evaluation).
  A modality whose key is absent from the batch is missing for every example.
  Returns logits [B, num_outputs] (float32); the pooled features the head
  reads, [B, dim], are sown as intermediates/features.

  Modality dropout: when training, each modality of each example is marked
  missing with probability `modality_dropout` (drawn from the 'dropout' RNG),
  exactly as a 0 in `m + '_present'` would, so the fusion learns to cope
  with the missing-modality patterns it meets at test time.

  Activations are computed in `dtype`, parameters kept in `param_dtype`;
  `block_options` reach every transformer block (encoders and fusion).
  """
  modalities: Sequence[str]
  encoders: Mapping[str, ml_collections.ConfigDict]
  fusion: ml_collections.ConfigDict
  dim: int
  num_outputs: int
  vocab_size: Optional[int] = None
  sample_rate: Optional[int] = None
  head_dropout: float = 0.0
  modality_dropout: float = 0.0
  dtype: Any = jnp.float32
  bn_axis_name: Optional[str] = None
  param_dtype: Any = jnp.float32
  block_options: layers.BlockOptions = layers.BlockOptions()

  @nn.compact
  def __call__(self, batch: Batch, *, train: bool) -> jax.Array:
    tokens, masks = encode_modalities(
        self, batch, train=train, modality_dropout=self.modality_dropout)
    fused = fusion_base.build(self, self.fusion)(tokens, masks, train=train)
    # The features the head reads, e.g. for a Fréchet distance between
    # image sets in this classifier's feature space (mmjax/evaluators/gan.py).
    self.sow('intermediates', 'features', fused.pooled)
    pooled = nn.Dropout(self.head_dropout, deterministic=not train)(
        fused.pooled)
    logits = layers.dense(self.num_outputs, 'embed', 'classes', self.dtype,
                          name='head', init=nn.initializers.zeros_init(),
                          param_dtype=self.param_dtype)(
                              pooled)
    return logits.astype(jnp.float32)

  @staticmethod
  def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError for a bad fusion or modality dropout field, or a
    task that needs another model."""
    mc = config.model
    models = {'retrieval': 'two_tower (configs/retrieval.py)',
              'seq2seq': 'seq2seq (configs/captioning.py)'}
    if config.task.name in models:
      raise ConfigError('model.name', f'task {config.task.name!r} needs '
                        f'model.name={models[config.task.name]}.')
    fusion_base.check_config(mc.fusion)
    p = mc.modality_dropout
    if (not isinstance(p, (int, float)) or isinstance(p, bool) or
        not 0 <= p < 1):
      raise ConfigError('model.modality_dropout', f'got {p!r}; expected a '
                        'probability in [0, 1) (0: no modality dropout).')

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, *,
                  num_outputs: int, **dataset_fields) -> 'MultimodalModel':
    """The classifier of `config.model`; `dataset_fields` (vocab_size,
    sample_rate, bn_axis_name) come from the dataset and the runner."""
    mc = config.model
    return cls(
        modalities=tuple(mc.modalities),
        encoders={m: mc.encoders[m] for m in mc.modalities},
        fusion=mc.fusion, dim=mc.dim, num_outputs=num_outputs,
        head_dropout=mc.head_dropout, modality_dropout=mc.modality_dropout,
        dtype=jnp.dtype(mc.dtype), param_dtype=jnp.dtype(mc.param_dtype),
        block_options=layers.BlockOptions.from_config(mc),
        **dataset_fields)


def model_class(config: ml_collections.ConfigDict):
  """The registered model class `config.model.name` selects (a config
  without the field, from runs older than the field, means 'classifier')."""
  return MODELS.get(config.model.get('name', 'classifier'),
                    field='model.name')


def build_model(config: ml_collections.ConfigDict, *, num_outputs: int,
                vocab_size: Optional[int] = None,
                sample_rate: Optional[int] = None,
                bn_axis_name: Optional[str] = None) -> nn.Module:
  """The model described by `config.model` (dtypes given by name, e.g.
  'bfloat16'; `remat`, `scan_layers` and `attention` make its BlockOptions).

  `config.model.name` selects the model ('classifier': MultimodalModel,
  'two_tower': `two_tower.TwoTower`); `vocab_size` and `sample_rate` come
  from the dataset.
  """
  return model_class(config).from_config(
      config, num_outputs=num_outputs, vocab_size=vocab_size,
      sample_rate=sample_rate, bn_axis_name=bn_axis_name)
