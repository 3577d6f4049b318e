"""Initialises encoders from pretrained checkpoints shipped in pip packages.

An encoder config with `pretrained=<name>` (a key of
`mmjax.pretrained_files.CHECKPOINTS`), e.g.

  model.encoders.text = dict(name='bert', size='minilm_l6',
                             pretrained='all-minilm-l6-v2', pooling='mean')

gets every parameter of its tower from that checkpoint: `load_pretrained`
replaces the tower's freshly initialised parameters after init (a resumed
run restores its own checkpoint instead). The mapping is strict: a
checkpoint tensor that maps to no parameter, a parameter that no tensor
fills and a shape that differs are errors naming the tensors and parameters.
Nothing is downloaded.
"""
import json
from typing import Any, Callable, Dict, List, Mapping, Tuple

import jax
import ml_collections
import numpy as np
import safetensors.numpy
from absl import logging
from flax import traverse_util

from mmjax import pretrained_files
from mmjax.errors import ConfigError
from mmjax.models.encoders import resolve
from mmjax.registry import ENCODERS

Path = Tuple[str, ...]
# Checkpoint tensor name -> (parameter path in the tower, tensor -> parameter).
TensorMap = Dict[str, Tuple[Path, Callable[[np.ndarray], np.ndarray]]]


class PretrainedMismatch(ValueError):
  """A checkpoint does not fit the tower it is loaded into; the message names
  the checkpoint file and every tensor / parameter at fault."""


def _same(x: np.ndarray) -> np.ndarray:
  return x


def _linear(x: np.ndarray) -> np.ndarray:
  """torch.nn.Linear weight [out, in] -> Flax Dense kernel [in, out]."""
  return x.T


def _bert_mapping(depth: int, num_heads: int
                  ) -> Tuple[TensorMap, Dict[str, str], Tuple[str, ...]]:
  """Hugging Face `BertModel` tensor names -> `mmjax.models.bert.Bert`.

  Returns:
    (the mapping, {tensor name: why it is no parameter} for the tensors a
    BERT checkpoint holds that are no parameters, the tensors of BERT's
    pooler, whose parameters the tower has only with pooling='pooler').
  """
  def heads_in(x):  # [H * K, D] -> [D, H, K]: queries, keys, values.
    return x.T.reshape(x.shape[1], num_heads, -1)

  def heads_bias(x):  # [H * K] -> [H, K].
    return x.reshape(num_heads, -1)

  def heads_out(x):  # [D, H * K] -> [H, K, D]: the attention output.
    return x.T.reshape(num_heads, -1, x.shape[0])

  mapping: TensorMap = {
      'embeddings.word_embeddings.weight': (('word', 'embedding'), _same),
      'embeddings.position_embeddings.weight': (
          ('position', 'embedding'), _same),
      'embeddings.token_type_embeddings.weight': (
          ('token_type', 'embedding'), _same),
      'embeddings.LayerNorm.weight': (('ln_embed', 'scale'), _same),
      'embeddings.LayerNorm.bias': (('ln_embed', 'bias'), _same),
  }
  for i in range(depth):
    src, dst = f'encoder.layer.{i}.', f'layer{i}'
    for name in ('query', 'key', 'value'):
      mapping[f'{src}attention.self.{name}.weight'] = (
          (dst, 'attn', name, 'kernel'), heads_in)
      mapping[f'{src}attention.self.{name}.bias'] = (
          (dst, 'attn', name, 'bias'), heads_bias)
    for name, param, fn in (
        ('attention.output.dense', ('attn', 'out'), heads_out),
        ('intermediate.dense', ('fc1',), _linear),
        ('output.dense', ('fc2',), _linear)):
      mapping[f'{src}{name}.weight'] = ((dst, *param, 'kernel'), fn)
      mapping[f'{src}{name}.bias'] = ((dst, *param, 'bias'), _same)
    for name, param in (('attention.output.LayerNorm', 'ln_attn'),
                        ('output.LayerNorm', 'ln_mlp')):
      mapping[f'{src}{name}.weight'] = ((dst, param, 'scale'), _same)
      mapping[f'{src}{name}.bias'] = ((dst, param, 'bias'), _same)
  mapping['pooler.dense.weight'] = (('pooler', 'kernel'), _linear)
  mapping['pooler.dense.bias'] = (('pooler', 'bias'), _same)
  return (mapping, {'embeddings.position_ids':
                    'a buffer of position indices (checked to be 0, 1, ...)'},
          ('pooler.dense.weight', 'pooler.dense.bias'))


# Encoder config field -> Hugging Face config.json key it must equal.
_BERT_FIELDS = {
    'dim': 'hidden_size', 'depth': 'num_hidden_layers',
    'num_heads': 'num_attention_heads', 'mlp_dim': 'intermediate_size',
    'max_len': 'max_position_embeddings',
    'type_vocab_size': 'type_vocab_size', 'layer_norm_eps': 'layer_norm_eps',
}


def _check_bert_config(fields: Mapping[str, Any], hf: Mapping[str, Any],
                       prefix: str, path: str) -> None:
  """Raises ConfigError for an encoder field that differs from the
  checkpoint's config.json (`path`)."""
  if hf.get('model_type') != 'bert' or hf.get('hidden_act') != 'gelu':
    raise PretrainedMismatch(
        f'{path}: expected a BERT checkpoint with exact GELU (model_type '
        f"'bert', hidden_act 'gelu'), got model_type "
        f'{hf.get("model_type")!r}, hidden_act {hf.get("hidden_act")!r}.')
  for field, key in _BERT_FIELDS.items():
    if fields[field] != hf[key]:
      raise ConfigError(f'{prefix}.{field}', (
          f'is {fields[field]!r} but the checkpoint ({path}) has {key}='
          f'{hf[key]!r}; set it to {hf[key]!r} (size=\'minilm_l6\' sets the '
          'all-MiniLM-L6-v2 architecture).'))


def load_tower(tower: Mapping[str, Any], tensors: Mapping[str, np.ndarray],
               mapping: TensorMap, not_parameters: Mapping[str, str],
               optional: Tuple[str, ...], path: str) -> Dict[str, Any]:
  """The tower's parameters `tower` (nested dict) with every leaf replaced by
  its checkpoint tensor, cast to the leaf's dtype and placed with its
  sharding (a jax.Array keeps its sharding; NumPy stays NumPy).

  Args:
    tower: the fresh parameters of one encoder.
    tensors: checkpoint tensor name -> array.
    mapping: tensor name -> (parameter path, transform).
    not_parameters: tensor names that are known not to be parameters; they
      are skipped.
    optional: mapped tensors whose parameters the tower has only in some
      configurations (BERT's pooler); skipped, and logged, when it lacks them.
    path: the checkpoint file, named in errors.
  Raises:
    PretrainedMismatch listing the unmapped tensors, the parameters no
    tensor fills, or each tensor whose shape differs from its parameter's.
  """
  flat = traverse_util.flatten_dict(dict(tower))
  unknown = sorted(set(tensors) - set(mapping) - set(not_parameters))
  if unknown:
    raise PretrainedMismatch(f'{path}: checkpoint tensors that map to no '
                             f'parameter: {", ".join(unknown)}.')
  filled = {mapping[name][0]: name for name in tensors if name in mapping}
  missing = sorted('/'.join(p) for p in set(flat) - set(filled))
  if missing:
    raise PretrainedMismatch(f'{path}: parameters that no checkpoint tensor '
                             f'fills: {", ".join(missing)}.')
  unused = sorted(name for p, name in filled.items() if p not in flat)
  extra = [name for name in unused if name not in optional]
  if extra:
    raise PretrainedMismatch(f'{path}: checkpoint tensors whose parameter '
                             f'the tower lacks: {", ".join(extra)}.')
  if unused:
    logging.info('%s: tensors this configuration does not use: %s', path,
                 ', '.join(unused))
  out, bad = {}, []
  for param_path, leaf in flat.items():
    name = filled[param_path]
    value = mapping[name][1](tensors[name])
    if value.shape != leaf.shape:
      bad.append(f'{name} {list(tensors[name].shape)} -> '
                 f'{"/".join(param_path)} needs {list(leaf.shape)}')
      continue
    value = np.asarray(value, dtype=leaf.dtype)
    if isinstance(leaf, jax.Array):
      # Each process fills its own shards from the same host copy.
      value = jax.make_array_from_callback(
          leaf.shape, leaf.sharding, lambda index, v=value: v[index])
    out[param_path] = value
  if bad:
    raise PretrainedMismatch(f'{path}: shapes differ: {"; ".join(bad)}.')
  return traverse_util.unflatten_dict(out)


def _read_bert(name: str, prefix: str, fields: Mapping[str, Any]
               ) -> Tuple[Dict[str, np.ndarray], str]:
  """The tensors of BERT checkpoint `name`, checked against the encoder
  `fields`; returns (tensors, the weights file)."""
  with pretrained_files.checkpoint_file(
      name, 'config.json', f'{prefix}.pretrained') as config_path:
    with open(config_path) as f:
      hf = json.load(f)
    _check_bert_config(fields, hf, prefix, str(config_path))
  with pretrained_files.checkpoint_file(
      name, 'model.safetensors', f'{prefix}.pretrained') as weights:
    tensors = safetensors.numpy.load_file(str(weights))
    path = str(weights)
  positions = tensors.get('embeddings.position_ids')
  if positions is not None and not np.array_equal(
      positions.reshape(-1), np.arange(positions.size)):
    raise PretrainedMismatch(f'{path}: embeddings.position_ids is not '
                             '0, 1, ...: a BERT variant mmjax does not map.')
  return tensors, path


def _encoder_fields(modality: str, cfg: Mapping[str, Any]) -> Dict[str, Any]:
  """The encoder's field values: its class defaults, size, then `cfg`."""
  cls, kwargs = resolve(ENCODERS[modality], cfg, f'model.encoders.{modality}',
                        f'{modality} encoder')
  defaults = {f: getattr(cls, f) for f in cls.__dataclass_fields__
              if f not in ('parent', 'name')}
  return {**defaults, **kwargs}


def pretrained_towers(config: ml_collections.ConfigDict) -> List[str]:
  """The modalities whose encoder config names a `pretrained` checkpoint."""
  return [m for m in config.model.modalities
          if config.model.encoders.get(m, {}).get('pretrained')]


def check_pretrained_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for a `pretrained` field mmjax cannot load: an
  unknown checkpoint or an encoder with no converter."""
  for m in pretrained_towers(config):
    cfg = config.model.encoders[m]
    prefix = f'model.encoders.{m}'
    pretrained_files.package(cfg.pretrained, f'{prefix}.pretrained')
    if cfg.get('name') not in _LOADERS:
      raise ConfigError(f'{prefix}.pretrained', (
          f'encoder {cfg.get("name")!r} has no checkpoint converter; '
          f'encoders that load one: {", ".join(sorted(_LOADERS))}.'))


def _load_bert(tower, modality: str, cfg) -> Dict[str, Any]:
  prefix = f'model.encoders.{modality}'
  fields = _encoder_fields(modality, cfg)
  tensors, path = _read_bert(cfg.pretrained, prefix, fields)
  return load_tower(tower, tensors,
                    *_bert_mapping(fields['depth'], fields['num_heads']),
                    path=path)


# Encoder name -> loader(tower params, modality, encoder config).
_LOADERS = {'bert': _load_bert}


def load_pretrained(params: Mapping[str, Any],
                    config: ml_collections.ConfigDict) -> Dict[str, Any]:
  """`params` (a model's unboxed parameters, e.g. `TrainState.params` in
  checkpoint form) with each `pretrained` tower's parameters
  (`params[f'{m}_encoder']`) loaded from its checkpoint; other parameters
  are returned as they are. A config without `pretrained` towers returns
  `params` unchanged.
  """
  check_pretrained_config(config)
  params = dict(params)
  for m in pretrained_towers(config):
    scope = f'{m}_encoder'
    if scope not in params:
      raise ConfigError(f'model.encoders.{m}.pretrained', (
          f'the model has no parameters {scope!r} to load into (top-level '
          f'scopes: {", ".join(sorted(params))}).'))
    cfg = config.model.encoders[m]
    params[scope] = _LOADERS[cfg.name](params[scope], m, cfg)
    logging.info('Loaded %s tower from pretrained %r', m, cfg.pretrained)
  return params
