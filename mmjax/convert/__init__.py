"""Converters from PyTorch checkpoints a user already has to mmjax towers.

    converted = convert_file('resnet', 'model.safetensors')
    converted.encoder    # config.model.encoders.image for the converted tower
    converted.variables  # {'params': ..., 'batch_stats': ...} of that tower

Families in Hugging Face layouts, described by the config.json saved with
the weights: 'resnet' (`ResNetModel`), 'vit' (`ViTModel`), 'clip_vision'
and 'clip_text' (the towers of `CLIPModel`); and 'torchvision_resnet'
(torchvision's ResNet-18/34/50 state dict, described by its tensors alone:
no config). Each maps every tensor of the file to exactly one variable of
the mmjax tower; a missing, extra or misshapen tensor is a
`ConversionError` that names it. `experiments/convert_weights.py`
writes the result as a checkpoint that `checkpoint.warm_start_from` loads.
"""
import dataclasses
import fnmatch
import re
from typing import Any, Dict, Mapping, Optional, Sequence

import flax
import jax
import numpy as np

from mmjax.convert import clip, resnet, vit
from mmjax.convert.hf_config import default_config_path, read_config
from mmjax.convert.mapping import apply_rules, expected_variables, find_prefix
from mmjax.convert.tensors import ConversionError, read_tensors
from mmjax.models import layers
from mmjax.models.encoders import build_encoder

FAMILIES = {'resnet': resnet, 'vit': vit, 'clip_vision': clip.Vision,
            'clip_text': clip.Text, 'torchvision_resnet': resnet.Torchvision}


def _reads_config(fam) -> bool:
  """Whether a family is described by a config.json (else by `describe`,
  from its tensors)."""
  return not hasattr(fam, 'describe')


@dataclasses.dataclass(frozen=True)
class Converted:
  """A converted tower: its `modality`, its mmjax `encoder` config (name and
  fields, as config.model.encoders.<modality> takes it), the `vocab_size` it
  needs (text towers; None otherwise), its `variables` ({collection: nested
  dict of NumPy arrays}) and whether its transformer blocks are stacked for
  `nn.scan` (`scan_layers`, as config.model.scan_layers)."""
  modality: str
  encoder: Dict[str, Any]
  vocab_size: Optional[int]
  variables: Dict[str, Any]
  scan_layers: bool = False

  def build(self):
    """The unbound mmjax encoder module the variables belong to."""
    return build_encoder(self.modality, self.encoder,
                         vocab_size=self.vocab_size,
                         block_options=layers.BlockOptions(
                             scan=self.scan_layers))


def stack_blocks(variables: Mapping[str, Any]) -> Dict[str, Any]:
  """Variables of unrolled transformer blocks ('.../block{i}/...') as those
  of one scanned module ('.../blocks/...', each array stacked on a new
  leading axis in block order): the layout `nn.scan` gives
  `layers.TransformerStack` with BlockOptions(scan=True)."""
  flat = flax.traverse_util.flatten_dict(variables)
  stacked, out = {}, {}
  for path, array in flat.items():
    index = next((i for i, key in enumerate(path)
                  if re.fullmatch(r'block\d+', key)), None)
    if index is None:
      out[path] = array
    else:
      key = path[:index] + ('blocks',) + path[index + 1:]
      stacked.setdefault(key, {})[int(path[index][len('block'):])] = array
  for key, arrays in stacked.items():
    out[key] = np.stack([arrays[i] for i in sorted(arrays)])
  return flax.traverse_util.unflatten_dict(out)


def convert(family: str, tensors: Mapping[str, np.ndarray],
            config: Optional[Mapping[str, Any]] = None, *,
            source: str = 'checkpoint', ignore: Sequence[str] = (),
            scan_layers: bool = False) -> Converted:
  """Converts `tensors` (name -> array) of a `family` checkpoint described
  by `config` (its Hugging Face config dict; None for 'torchvision_resnet',
  which the tensors describe). `source` names the file in errors;
  `ignore`: fnmatch patterns of tensors to leave out on purpose;
  `scan_layers`: transformer blocks stacked for a model trained with
  config.model.scan_layers=True."""
  if family not in FAMILIES:
    raise ConversionError(f'unknown family {family!r}; valid families are: '
                          f'{", ".join(FAMILIES)}.')
  fam = FAMILIES[family]
  # Ignored tensors are gone before anything looks at the file: a pooler or
  # projection left out is a tower without one.
  tensors = {name: x for name, x in tensors.items() if not any(
      fnmatch.fnmatchcase(name, pattern) for pattern in ignore)}
  names = list(tensors)
  try:
    prefix = find_prefix(tensors, fam.PROBE, fam.PREFIXES, source=source,
                         family=family,
                         layout=getattr(fam, 'LAYOUT', 'Hugging Face'))
  except ConversionError as e:
    fits = [name for name, other in FAMILIES.items() if other is not fam and
            any(p + other.PROBE in tensors for p in other.PREFIXES)]
    if fits:
      raise ConversionError(f'{e}\nIts tensors fit the family '
                            f'{" or ".join(fits)}.') from None
    raise
  if not _reads_config(fam):
    config = fam.describe(tensors, prefix, source)
  elif config is None:
    raise ConversionError(f'{source}: a {family} checkpoint needs its '
                          "model's config.json.")
  encoder = fam.encoder_config(config, names)
  vocab_size = fam.vocab_size(config) if hasattr(fam, 'vocab_size') else None
  example = jax.ShapeDtypeStruct(*fam.example_input(config))
  unrolled = Converted(fam.MODALITY, encoder, vocab_size, {})
  variables = apply_rules(tensors, fam.rules(encoder, prefix, names),
                          expected_variables(unrolled.build(), example, None),
                          source=source)
  converted = dataclasses.replace(unrolled, variables=variables)
  if scan_layers:
    converted = dataclasses.replace(
        converted, variables=stack_blocks(variables), scan_layers=True)
    stacked = expected_variables(converted.build(), example, None)
    got = {'/'.join(k): v.shape for k, v in flax.traverse_util.flatten_dict(
        converted.variables).items()}
    # A converter bug if the stacked layout is not the scanned tower's.
    assert got == {k: v.shape for k, v in stacked.items()}, (got, stacked)
  return converted


def convert_file(family: str, path: str, config_path: Optional[str] = None,
                 ignore: Sequence[str] = (), scan_layers: bool = False
                 ) -> Converted:
  """`convert` of the weights file at `path` (.safetensors, or .pth/.pt/.bin
  with PyTorch installed), described by `config_path` (default: the
  config.json beside it; none for 'torchvision_resnet')."""
  fam = FAMILIES.get(family)
  if fam is not None and not _reads_config(fam):
    if config_path:
      raise ConversionError(f'{config_path}: a {family} checkpoint reads no '
                            'config; its tensors describe it (leave out '
                            '--config_json).')
    config = None
  else:
    config_path = config_path or default_config_path(path)
    if config_path is None:
      free = [f for f, m in FAMILIES.items() if not _reads_config(m)]
      raise ConversionError(
          f'{path}: no config.json beside it; give the model\'s config.json '
          f'(--config_json). Families read without one: {", ".join(free)} '
          "(e.g. a torchvision ResNet's state dict).")
    config = read_config(config_path)
  return convert(family, read_tensors(path), config, source=path,
                 ignore=ignore, scan_layers=scan_layers)
