"""Builds a modality encoder from `config.model.encoders.<modality>`.

An encoder config holds `name` (the registered encoder), optionally `size` (a
key of the class's `SIZES`; without it the class defaults apply) and any
field of the class, which overrides the size's value:

  encoders.image = dict(name='resnet', size='tiny', stem='imagenet')

Encoder classes are Linen modules registered in `ENCODERS[modality]` with
`__call__(x, mask=None, *, train) -> (tokens [B, T, D], mask [B, T])`, a
`SIZES` dict and optionally `CHOICES` (field -> allowed values), which
`check_encoder_config` enforces.
"""
import dataclasses
from typing import Any, Dict, Mapping, Optional, Tuple, Type

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.errors import ConfigError, check_fields
from mmjax.models import audio, image, text  # noqa: F401  (registers encoders)
from mmjax.models import bert  # noqa: F401  (registers 'bert')
from mmjax.models import video  # noqa: F401  (registers 'vivit')
from mmjax.models import layers
from mmjax.registry import ENCODERS, MODALITIES, Registry

# Fields that come from the model or the dataset, never from the config.
_BUILD_FIELDS = ('vocab_size', 'sample_rate', 'bn_axis_name', 'dtype',
                 'param_dtype', 'block_options', 'parent', 'name')


def resolve(registry: Registry, cfg: Mapping[str, Any], prefix: str,
            kind: str) -> Tuple[Type[nn.Module], Dict[str, Any]]:
  """Checks a module config (`name`, `size`, fields) against `registry`.

  Returns the registered class and its config kwargs: the size's values
  overridden by the fields given. `prefix` is the config path named in
  errors (e.g. 'model.encoders.image'), `kind` the module kind ('image
  encoder').
  """
  if 'name' not in cfg:
    raise ConfigError(f'{prefix}.name', 'is missing; valid names are: '
                      f'{", ".join(registry.names())}.')
  name = cfg['name']
  cls = registry.get(name, field=f'{prefix}.name')
  kwargs = {}
  if 'size' in cfg:
    if cfg['size'] not in cls.SIZES:
      raise ConfigError(f'{prefix}.size', f'{kind} {name!r} has no size '
                        f'{cfg["size"]!r}; valid sizes are: '
                        f'{", ".join(cls.SIZES)}.')
    kwargs.update(cls.SIZES[cfg['size']])
  fields = ({f.name for f in dataclasses.fields(cls)} -
            set(_BUILD_FIELDS)) | {'name', 'size'}
  check_fields(cfg, fields, prefix, f'{kind} {name!r}')
  for key, value in cfg.items():
    if key in ('name', 'size'):
      continue
    # Config files and --config overrides may give lists; modules hash fields.
    kwargs[key] = tuple(value) if isinstance(value, list) else value
  for key, allowed in getattr(cls, 'CHOICES', {}).items():
    if key in kwargs and kwargs[key] not in allowed:
      raise ConfigError(f'{prefix}.{key}', f'{kwargs[key]!r} is not allowed; '
                        f'valid values are: '
                        f'{", ".join(map(str, allowed))}.')
  return cls, kwargs


def _resolve(modality: str, cfg: Mapping[str, Any]
             ) -> Tuple[Type[nn.Module], Dict[str, Any]]:
  """Checks `cfg` and returns the encoder class and its config kwargs."""
  if modality not in ENCODERS:
    raise ConfigError('model.modalities', f'unknown modality {modality!r}; '
                      f'valid modalities are {", ".join(MODALITIES)}.')
  return resolve(ENCODERS[modality], cfg, f'model.encoders.{modality}',
                 f'{modality} encoder')


def check_encoder_config(modality: str, cfg: Mapping[str, Any]) -> None:
  """Raises ConfigError for an unknown name, size, field or choice in `cfg`."""
  _resolve(modality, cfg)


def build_encoder(modality: str, cfg: Mapping[str, Any], *,
                  dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
                  block_options: layers.BlockOptions = layers.BlockOptions(),
                  vocab_size: Optional[int] = None,
                  sample_rate: Optional[int] = None,
                  bn_axis_name: Optional[str] = None,
                  name: Optional[str] = None) -> nn.Module:
  """The `modality` encoder described by `cfg` (unbound Linen module).

  Args:
    modality: 'image', 'audio', 'text' or 'video'.
    cfg: `config.model.encoders.<modality>`.
    dtype: compute dtype of the activations.
    param_dtype: dtype of the parameters.
    block_options: speed / memory options of transformer blocks, for the
      encoders that have them.
    vocab_size: text vocabulary size (from the dataset); text encoders need it.
    sample_rate: audio sample rate in Hz (from the dataset), for the audio
      front end; None keeps the encoder's default.
    bn_axis_name: `pmap` axis to average BatchNorm statistics over, for
      encoders with BatchNorm.
    name: module name (e.g. f'{modality}_encoder').
  """
  cls, kwargs = _resolve(modality, cfg)
  fields = {f.name for f in dataclasses.fields(cls)}
  given = dict(vocab_size=vocab_size, sample_rate=sample_rate,
               bn_axis_name=bn_axis_name, block_options=block_options)
  kwargs.update({k: v for k, v in given.items()
                 if k in fields and (v is not None or k != 'sample_rate')})
  return cls(**kwargs, dtype=dtype, param_dtype=param_dtype, name=name)


def model_encoder(model: nn.Module, modality: str) -> nn.Module:
  """The `modality` encoder of a multimodal `model` (a Linen module with the
  fields `encoders`, `dtype`, `param_dtype`, `block_options`, `vocab_size`,
  `sample_rate` and `bn_axis_name`), named f'{modality}_encoder'."""
  return build_encoder(modality, model.encoders[modality], dtype=model.dtype,
                       param_dtype=model.param_dtype,
                       block_options=model.block_options,
                       vocab_size=model.vocab_size,
                       sample_rate=model.sample_rate,
                       bn_axis_name=model.bn_axis_name,
                       name=f'{modality}_encoder')


def encode_modalities(model: nn.Module, batch: Mapping[str, jax.Array], *,
                      train: bool, modality_dropout: float = 0.0
                      ) -> Tuple[Dict[str, jax.Array], Dict[str, jax.Array]]:
  """Encodes and projects every modality of `model` that `batch` holds.

  Call from inside `model`'s compact method (`model_encoder` fields plus
  `modalities` and `dim`). Batch keys per modality `m`: `m`, optional
  `m + '_mask'` (valid steps) and `m + '_present'` [B] (0: the modality is
  missing for that example). In training, `modality_dropout` marks each
  (example, modality) missing with that probability ('dropout' RNG).

  Returns tokens {m: [B, T_m, dim]} (a dense layer f'{m}_proj' after the
  encoder) and masks {m: bool [B, T_m]}.
  """
  tokens, masks = {}, {}
  for m in model.modalities:
    if m not in batch:
      continue
    x, mask = model_encoder(model, m)(batch[m], batch.get(f'{m}_mask'),
                                      train=train)
    if f'{m}_present' in batch:
      mask = mask & batch[f'{m}_present'].astype(bool)[:, None]
    if train and modality_dropout > 0:
      kept = jax.random.bernoulli(model.make_rng('dropout'),
                                  1 - modality_dropout, mask.shape[:1])
      mask = mask & kept[:, None]
    tokens[m] = layers.dense(model.dim, None, 'embed', model.dtype,
                             name=f'{m}_proj',
                             param_dtype=model.param_dtype)(x)
    masks[m] = mask
  return tokens, masks
