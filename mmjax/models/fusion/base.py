"""Pieces shared by the fusion methods: output type, inputs, presence, pooling.

Every fusion method takes `tokens: {modality: [B, T_m, D]}` and
`masks: {modality: [B, T_m]}` for a subset of its configured `modalities`. A
modality is absent for an example when its mask row is all zeros and absent for
the whole batch when its key is missing. `prepare` zeroes every masked token
first, so no method can see (or pass gradients to) the values of absent
modalities or padding, however large they are.

Parameters of a per-modality piece (a head, a block) are created when that
modality's key is present: initialise a model with every modality in the batch.

A method's knobs are its dataclass fields other than MODEL_FIELDS;
`default_config` lists them, with their defaults, for `config.model.fusion`.
"""
import dataclasses
import typing
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
from ml_collections import config_dict

from mmjax.errors import ConfigError, check_fields
from mmjax.models import layers
from mmjax.registry import FUSIONS

# Fields every fusion method receives from the model, not from the config.
MODEL_FIELDS = ('modalities', 'dim', 'dtype', 'param_dtype', 'block_options',
                'parent', 'name')


@flax.struct.dataclass
class FusionOutput:
  """What a fusion method returns.

  Attributes:
    pooled: [B, out_dim], the vector the classifier reads.
    tokens: [B, T, D] fused tokens, for methods that produce them, else None.
    mask: [B, T] validity of `tokens`, else None.
  """
  pooled: jax.Array
  tokens: Optional[jax.Array] = None
  mask: Optional[jax.Array] = None


def prepare(tokens: Mapping[str, jax.Array], masks: Mapping[str, jax.Array],
            modalities: Sequence[str], dim: int
            ) -> Tuple[Dict[str, jax.Array], Dict[str, jax.Array]]:
  """Checks the inputs and zeroes masked tokens; keeps `modalities` order.

  Returns:
    tokens {m: [B, T_m, D]} with zeros wherever the mask is 0, and boolean
    masks {m: [B, T_m]}, for the keys that are present.
  """
  if set(tokens) != set(masks):
    raise ValueError(f'fusion got tokens for {sorted(tokens)} but masks for '
                     f'{sorted(masks)}; every modality needs both.')
  unknown = set(tokens) - set(modalities)
  if unknown:
    raise ValueError(f'fusion got modalities {sorted(unknown)} it is not '
                     f'configured with ({", ".join(modalities)}).')
  if not tokens:
    raise ValueError('fusion needs at least one modality key to know the '
                     'batch shape; mark absent examples with all-zero masks.')
  out_tokens, out_masks = {}, {}
  for m in modalities:
    if m not in tokens:
      continue
    if tokens[m].shape[-1] != dim:
      raise ValueError(f'{m} tokens have width {tokens[m].shape[-1]}; fusion '
                       f'expects the common width dim={dim}.')
    mask = masks[m].astype(bool)
    # `where`, not a product: huge or non-finite padding can't leak into
    # values or gradients.
    out_tokens[m] = jnp.where(mask[..., None], tokens[m], 0)
    out_masks[m] = mask
  return out_tokens, out_masks


def pool(tokens: Mapping[str, jax.Array], masks: Mapping[str, jax.Array],
         modalities: Sequence[str]) -> Tuple[jax.Array, jax.Array]:
  """Masked-mean pools each configured modality (the output of `prepare`).

  Returns:
    pooled [B, M, D] in `modalities` order (zeros where absent) and
    present [B, M] (bool).
  """
  ref = next(iter(tokens.values()))
  batch, dim = ref.shape[0], ref.shape[-1]
  pooled, present = [], []
  for m in modalities:
    if m in tokens:
      pooled.append(layers.masked_mean(tokens[m], masks[m]))
      present.append(masks[m].any(axis=1))
    else:
      pooled.append(jnp.zeros((batch, dim), ref.dtype))
      present.append(jnp.zeros((batch,), bool))
  return jnp.stack(pooled, axis=1), jnp.stack(present, axis=1)


def masked_softmax(logits: jax.Array, valid: jax.Array,
                   axis: int) -> jax.Array:
  """Softmax over the valid entries along `axis`; zeros where invalid.

  A slice with no valid entry (every modality absent) gives all zeros, with
  finite gradients. Computed in float32.
  """
  logits = jnp.where(valid, logits.astype(jnp.float32),
                     jnp.finfo(jnp.float32).min)
  return jax.nn.softmax(logits, axis=axis) * valid


def width(value: Optional[int], default: int, field: str,
          allow_zero: bool = False) -> int:
  """A layer-width knob of a fusion method: None means `default`.

  Raises ConfigError naming `model.fusion.<field>` when out of range.
  """
  if value is None:
    return default
  if not isinstance(value, int) or value < (0 if allow_zero else 1):
    allowed = 'an integer >= 0 (0: no layer)' if allow_zero else (
        'a positive integer')
    raise ConfigError(f'model.fusion.{field}', f'got {value!r}; expected '
                      f'{allowed} or None (= {default}).')
  return value


def knobs(cls: type) -> Tuple[dataclasses.Field, ...]:
  """The fields of fusion class `cls` that `config.model.fusion` sets."""
  return tuple(f for f in dataclasses.fields(cls) if f.name not in MODEL_FIELDS)


def default_config(name: str) -> Dict[str, Any]:
  """`config.model.fusion` for the registered method `name`: its name and
  every knob at its default, so that `--config.model.fusion.<knob>=v` can
  override any of them in a locked config.

  A knob whose default is None ('None -> dim') becomes a typed placeholder
  (`ml_collections.config_dict.placeholder`): a None field cannot be
  overridden from the command line, a placeholder parses the knob's type.
  Call it after importing `mmjax.models.fusion`, which registers the methods.
  """
  cls = FUSIONS.get(name, field='model.fusion.name')
  hints = typing.get_type_hints(cls)
  config = {'name': name}
  for field in knobs(cls):
    default = (field.default_factory() if field.default is dataclasses.MISSING
               else field.default)
    if default is None:  # Optional[T]: a value must be a T.
      kinds = [typing.get_origin(t) or t
               for t in typing.get_args(hints[field.name])
               if t is not type(None)]
      default = config_dict.placeholder(kinds[0] if len(kinds) == 1
                                        else object)
    config[field.name] = default
  return config


class HiddenLayer(nn.Module):
  """dense -> GELU -> dropout on a fused vector: [B, F] -> [B, features].

  With `features` 0 it passes the vector through, so the classifier reads the
  fused vector directly.
  """
  features: int
  dropout: float = 0.0
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    if not self.features:
      return x
    x = nn.gelu(layers.dense(self.features, 'embed', 'mlp', self.dtype,
                             name='dense', param_dtype=self.param_dtype)(x))
    return nn.Dropout(self.dropout, deterministic=not train)(x)


def build(model: nn.Module, cfg: Mapping[str, Any]) -> nn.Module:
  """The fusion method `cfg` (`config.model.fusion`: name and knobs) of a
  multimodal `model` (fields modalities, dim, dtype, param_dtype,
  block_options), named 'fusion'."""
  cfg = dict(cfg)
  cls = FUSIONS.get(cfg.pop('name'), field='model.fusion.name')
  if 'block_options' in {f.name for f in dataclasses.fields(cls)}:
    cfg['block_options'] = model.block_options
  return cls(modalities=tuple(model.modalities), dim=model.dim,
             dtype=model.dtype, param_dtype=model.param_dtype, name='fusion',
             **cfg)


def check_config(cfg: Mapping[str, Any]) -> None:
  """Raises ConfigError for an unknown method or knob in `cfg`
  (`config.model.fusion`)."""
  cls = FUSIONS.get(cfg['name'], field='model.fusion.name')
  allowed = {f.name for f in knobs(cls)} | {'name'}
  check_fields(cfg, allowed, 'model.fusion', f'fusion {cfg["name"]!r}')
