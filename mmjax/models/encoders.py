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
import jax.numpy as jnp

from mmjax.errors import ConfigError, check_fields
from mmjax.models import audio, image, text  # noqa: F401  (registers encoders)
from mmjax.models import layers
from mmjax.registry import ENCODERS, MODALITIES

# Fields that come from the model or the dataset, never from the config.
_BUILD_FIELDS = ('vocab_size', 'sample_rate', 'bn_axis_name', 'dtype',
                 'param_dtype', 'block_options', 'parent', 'name')


def _resolve(modality: str, cfg: Mapping[str, Any]
             ) -> Tuple[Type[nn.Module], Dict[str, Any]]:
  """Checks `cfg` and returns the encoder class and its config kwargs."""
  prefix = f'model.encoders.{modality}'
  if modality not in ENCODERS:
    raise ConfigError('model.modalities', f'unknown modality {modality!r}; '
                      f'valid modalities are {", ".join(MODALITIES)}.')
  registry = ENCODERS[modality]
  if 'name' not in cfg:
    raise ConfigError(f'{prefix}.name', 'is missing; valid names are: '
                      f'{", ".join(registry.names())}.')
  name = cfg['name']
  cls = registry.get(name, field=f'{prefix}.name')
  kwargs = {}
  if 'size' in cfg:
    if cfg['size'] not in cls.SIZES:
      raise ConfigError(f'{prefix}.size', f'{modality} encoder {name!r} has '
                        f'no size {cfg["size"]!r}; valid sizes are: '
                        f'{", ".join(cls.SIZES)}.')
    kwargs.update(cls.SIZES[cfg['size']])
  fields = ({f.name for f in dataclasses.fields(cls)} -
            set(_BUILD_FIELDS)) | {'name', 'size'}
  check_fields(cfg, fields, prefix, f'{modality} encoder {name!r}')
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
    modality: 'image', 'audio' or 'text'.
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
