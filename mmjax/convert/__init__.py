"""Converters from PyTorch checkpoints a user already has to mmjax towers.

    converted = convert_file('resnet', 'model.safetensors')
    converted.encoder    # config.model.encoders.image for the converted tower
    converted.variables  # {'params': ..., 'batch_stats': ...} of that tower

Families (Hugging Face layouts, described by the config.json saved with the
weights): 'resnet' (`ResNetModel`), 'vit' (`ViTModel`), 'clip_vision' and
'clip_text' (the towers of `CLIPModel`). Each maps every tensor of the file
to exactly one variable of the mmjax tower; a missing, extra or misshapen
tensor is a `ConversionError` that names it. `experiments/convert_weights.py`
writes the result as a checkpoint that `checkpoint.warm_start_from` loads.
"""
import dataclasses
import fnmatch
from typing import Any, Dict, Mapping, Optional, Sequence

import jax
import numpy as np

from mmjax.convert import clip, resnet, vit
from mmjax.convert.hf_config import default_config_path, read_config
from mmjax.convert.mapping import apply_rules, expected_variables, find_prefix
from mmjax.convert.tensors import ConversionError, read_tensors
from mmjax.models.encoders import build_encoder

FAMILIES = {'resnet': resnet, 'vit': vit, 'clip_vision': clip.Vision,
            'clip_text': clip.Text}


@dataclasses.dataclass(frozen=True)
class Converted:
  """A converted tower: its `modality`, its mmjax `encoder` config (name and
  fields, as config.model.encoders.<modality> takes it), the `vocab_size` it
  needs (text towers; None otherwise) and its `variables` ({collection:
  nested dict of NumPy arrays})."""
  modality: str
  encoder: Dict[str, Any]
  vocab_size: Optional[int]
  variables: Dict[str, Any]

  def build(self):
    """The unbound mmjax encoder module the variables belong to."""
    return build_encoder(self.modality, self.encoder,
                         vocab_size=self.vocab_size)


def convert(family: str, tensors: Mapping[str, np.ndarray],
            config: Mapping[str, Any], *, source: str = 'checkpoint',
            ignore: Sequence[str] = ()) -> Converted:
  """Converts `tensors` (name -> array) of a `family` checkpoint described
  by `config` (its Hugging Face config dict). `source` names the file in
  errors; `ignore`: fnmatch patterns of tensors to leave out on purpose."""
  if family not in FAMILIES:
    raise ConversionError(f'unknown family {family!r}; valid families are: '
                          f'{", ".join(FAMILIES)}.')
  fam = FAMILIES[family]
  # Ignored tensors are gone before anything looks at the file: a pooler or
  # projection left out is a tower without one.
  tensors = {name: x for name, x in tensors.items() if not any(
      fnmatch.fnmatchcase(name, pattern) for pattern in ignore)}
  names = list(tensors)
  prefix = find_prefix(tensors, fam.PROBE, fam.PREFIXES, source=source,
                       family=family)
  encoder = fam.encoder_config(config, names)
  vocab_size = fam.vocab_size(config) if hasattr(fam, 'vocab_size') else None
  shape, dtype = fam.example_input(config)
  expected = expected_variables(
      build_encoder(fam.MODALITY, encoder, vocab_size=vocab_size),
      jax.ShapeDtypeStruct(shape, dtype), None)
  variables = apply_rules(tensors, fam.rules(encoder, prefix, names),
                          expected, source=source)
  return Converted(fam.MODALITY, encoder, vocab_size, variables)


def convert_file(family: str, path: str, config_path: Optional[str] = None,
                 ignore: Sequence[str] = ()) -> Converted:
  """`convert` of the weights file at `path` (.safetensors, or .pth/.pt/.bin
  with PyTorch installed), described by `config_path` (default: the
  config.json beside it)."""
  config_path = config_path or default_config_path(path)
  if config_path is None:
    raise ConversionError(f'{path}: no config.json beside it; give the '
                          "model's config.json (--config_json).")
  return convert(family, read_tensors(path), read_config(config_path),
                 source=path, ignore=ignore)
