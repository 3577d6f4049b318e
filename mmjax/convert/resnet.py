"""PyTorch ResNet checkpoints -> mmjax `resnet` (ResNet-18/34/50), in two
layouts: Hugging Face's `ResNetModel` (this module: family 'resnet') and
torchvision's `torchvision.models.resnet18/34/50` state dict (`Torchvision`:
family 'torchvision_resnet').

Hugging Face: a config.json describes the model. Also reads
`ResNetForImageClassification` files (tensors under 'resnet.'; ignore
'classifier.*'). Tokens [B, h * w, C] are `last_hidden_state` [B, C, h, w]
with the channels last.

Both are ResNet v1.5 (the stride on the 3x3 conv of a bottleneck) with the
ImageNet stem and PyTorch's symmetric padding (`padding='symmetric'`):
Flax's 'SAME' pads a strided 3x3 conv differently. BatchNorm running
statistics go to the 'batch_stats' collection.
"""
import re
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple

import numpy as np

from mmjax.convert import hf_config as hf
from mmjax.convert.mapping import CONV, Rule
from mmjax.convert.tensors import ConversionError
from mmjax.models.image import ResNet

MODALITY = 'image'
PREFIXES = ('', 'resnet.')
PROBE = 'embedder.embedder.convolution.weight'
# (conv, norm) module names of the stem (stage None), of a block's k-th conv
# and BatchNorm (stage, block, k) or of its shortcut (stage, block, 'proj').
Names = Callable[[Optional[int], Optional[int], Any], Tuple[str, str]]


def _depth(blocks: Sequence[int], bottleneck: bool) -> Optional[int]:
  """The mmjax ResNet depth of `blocks` per stage, if it has one."""
  return next((d for d, stages in ResNet.STAGES.items()
               if stages == (tuple(blocks), bottleneck)), None)


def _encoder(depth: int, width: int) -> dict:
  return dict(name='resnet', depth=depth, width=width, stem='imagenet',
              padding='symmetric')


def encoder_config(config: Mapping[str, Any],
                   names: Sequence[str] = ()) -> dict:
  """The mmjax encoder config of the ResNet a Hugging Face config describes."""
  del names  # Every ResNet checkpoint has the same parts.
  bottleneck = hf.field(config, 'layer_type') == 'bottleneck'
  depths = tuple(hf.field(config, 'depths'))
  depth = _depth(depths, bottleneck)
  if depth is None:
    raise ConversionError(
        f'depths {list(depths)} with {hf.field(config, "layer_type")} blocks '
        f'is not a ResNet depth mmjax has ({tuple(ResNet.STAGES)}).')
  width = hf.field(config, 'embedding_size')
  sizes = [width * 2**i * (4 if bottleneck else 1) for i in range(4)]
  if list(hf.field(config, 'hidden_sizes')) != sizes:
    raise ConversionError(
        f'hidden_sizes {hf.field(config, "hidden_sizes")} with embedding_size'
        f' {width}: mmjax stages are {sizes}.')
  hf.require(config, 'hidden_act', 'relu', 'relu')
  hf.require(config, 'downsample_in_first_stage', False, False)
  hf.require(config, 'downsample_in_bottleneck', False, False)
  return _encoder(depth, width)


def example_input(config: Mapping[str, Any]):
  """Shape and dtype of a batch the tower is initialised with."""
  return (1, 64, 64, hf.field(config, 'num_channels', 3)), 'float32'


def _conv_norm(conv: str, norm: str, target_conv: str,
               target_norm: str) -> list:
  """A bias-free torch Conv2d `conv` and BatchNorm2d `norm` -> mmjax conv
  and BatchNorm."""
  return [Rule(f'{conv}.weight', f'params/{target_conv}/kernel', CONV),
          Rule(f'{norm}.weight', f'params/{target_norm}/scale'),
          Rule(f'{norm}.bias', f'params/{target_norm}/bias'),
          Rule(f'{norm}.running_mean', f'batch_stats/{target_norm}/mean'),
          Rule(f'{norm}.running_var', f'batch_stats/{target_norm}/var')]


def _tower_rules(cfg: Mapping[str, Any], names: Names) -> list:
  """One rule per variable of the `resnet` tower `cfg`, from a file whose
  conv and BatchNorm modules `names` gives."""
  stages, bottleneck = ResNet.STAGES[cfg['depth']]
  out = _conv_norm(*names(None, None, None), 'stem_conv', 'stem_norm')
  for i, num_blocks in enumerate(stages):
    for j in range(num_blocks):
      block = f'stage{i}_block{j}'
      for k in range(3 if bottleneck else 2):
        out += _conv_norm(*names(i, j, k), f'{block}/Conv_{k}',
                          f'{block}/BatchNorm_{k}')
      # A stage's first block changes the resolution (stages 1-3) or the
      # width (bottlenecks' 4x) and so projects its shortcut.
      if j == 0 and (i > 0 or bottleneck):
        out += _conv_norm(*names(i, j, 'proj'), f'{block}/proj_conv',
                          f'{block}/proj_norm')
  return out


def rules(cfg: Mapping[str, Any], prefix: str,
          names: Sequence[str] = ()) -> list:
  """One rule per variable of the `resnet` tower `cfg` (from
  `encoder_config`), from a file whose names start with `prefix`."""
  del names  # One layout.

  def hf_names(stage, block, k):
    if stage is None:
      module = f'{prefix}embedder.embedder'
    else:
      module = f'{prefix}encoder.stages.{stage}.layers.{block}.' + (
          'shortcut' if k == 'proj' else f'layer.{k}')
    return f'{module}.convolution', f'{module}.normalization'

  return _tower_rules(cfg, hf_names)


class Torchvision:
  """torchvision's layout: the state dict of `torchvision.models.resnet18`,
  `resnet34` or `resnet50` (`conv1`, `bn1`, `layer1`-`layer4`, each block's
  `conv1`-`conv3` / `bn1`-`bn3` and `downsample.0` / `.1`), as a .pth file
  or safetensors. No config describes it: `describe` reads the depth (blocks
  per stage; bottlenecks where `layer1.0.conv3` exists) and the width (the
  stem's output channels) from the tensors. `fc.*`, the ImageNet classifier,
  is no part of the tower: leave it out with ignore 'fc.*' (as 'classifier.*'
  of a Hugging Face file); BatchNorm's `num_batches_tracked` is ignored by
  name. Files saved from `nn.DataParallel` (names under 'module.') read too.
  Tokens [B, h * w, C] are `layer4`'s output [B, C, h, w] with the channels
  last (the input of torchvision's average pool).
  """
  MODALITY = MODALITY
  PREFIXES = ('', 'module.')
  PROBE = 'conv1.weight'
  LAYOUT = 'torchvision'

  @staticmethod
  def describe(tensors: Mapping[str, np.ndarray], prefix: str,
               source: str) -> dict:
    """The ResNet the tensors (names under `prefix`) hold: {'depth',
    'width', 'num_channels'}, in place of a config.json.

    Raises:
      ConversionError: naming the tensors, when blocks per stage, block
        kind or stage widths are no ResNet mmjax has.
    """
    stem = np.shape(tensors[f'{prefix}conv1.weight'])
    if len(stem) != 4:
      raise ConversionError(f'{source}: {prefix}conv1.weight has shape '
                            f'{list(stem)}; a Conv2d weight has 4 axes.')
    width, bottleneck = stem[0], f'{prefix}layer1.0.conv3.weight' in tensors
    # Blocks per stage: one past the largest block index of layer1-layer4.
    blocks = [0] * 4
    for name in tensors:
      match = re.fullmatch(rf'{re.escape(prefix)}layer([1-4])\.(\d+)\..+',
                           name)
      if match:
        stage = int(match[1]) - 1
        blocks[stage] = max(blocks[stage], int(match[2]) + 1)
    depth = _depth(blocks, bottleneck)
    if depth is None:
      last = ', '.join(f'{prefix}layer{i + 1}.{n - 1}' if n else
                       f'no {prefix}layer{i + 1}' for i, n in enumerate(blocks))
      known = '; '.join(f'{d}: {list(s)} {"bottleneck" if b else "basic"}'
                        for d, (s, b) in ResNet.STAGES.items())
      kind = (f'bottleneck (it has {prefix}layer1.0.conv3.weight)'
              if bottleneck else f'basic (no {prefix}layer1.0.conv3.weight)')
      raise ConversionError(
          f'{source}: {blocks} {kind} blocks per stage (last blocks: {last}) '
          f'are not a ResNet mmjax has (depth: blocks per stage; {known}).')
    for stage in range(4):
      name = f'{prefix}layer{stage + 1}.0.conv1.weight'
      if name not in tensors:
        continue  # The rules report it missing.
      want, channels = width * 2**stage, np.shape(tensors[name])[:1]
      if channels != (want,):
        raise ConversionError(
            f'{source}: {name} has {channels[0] if channels else 0} output '
            f'channels; mmjax\'s ResNet with the stem\'s {width} '
            f'({prefix}conv1.weight) needs {want}: a wide ResNet or ResNeXt '
            '(width_per_group, groups) is not a ResNet mmjax has.')
    return dict(depth=depth, width=width, num_channels=stem[1])

  @staticmethod
  def encoder_config(config: Mapping[str, Any],
                     names: Sequence[str] = ()) -> dict:
    """The mmjax encoder config of the ResNet `describe` found."""
    del names  # `describe` read them.
    return _encoder(config['depth'], config['width'])

  example_input = staticmethod(example_input)

  @staticmethod
  def rules(cfg: Mapping[str, Any], prefix: str,
            names: Sequence[str] = ()) -> list:
    """One rule per variable of the `resnet` tower `cfg`, from a file whose
    names start with `prefix`."""
    del names  # One layout.

    def torchvision_names(stage, block, k):
      if stage is None:
        return f'{prefix}conv1', f'{prefix}bn1'
      module = f'{prefix}layer{stage + 1}.{block}.'
      if k == 'proj':
        return module + 'downsample.0', module + 'downsample.1'
      return module + f'conv{k + 1}', module + f'bn{k + 1}'

    return _tower_rules(cfg, torchvision_names)
