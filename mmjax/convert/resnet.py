"""Hugging Face `ResNetModel` checkpoints -> mmjax `resnet` (ResNet-18/34/50).

Also reads `ResNetForImageClassification` files (tensors under 'resnet.';
ignore 'classifier.*'). The tower is ResNet v1.5 with the ImageNet stem and
PyTorch's symmetric padding (`padding='symmetric'`): Flax's 'SAME' pads a
strided 3x3 conv differently. BatchNorm running statistics go to the
'batch_stats' collection. Tokens [B, h * w, C] are `last_hidden_state`
[B, C, h, w] with the channels last.
"""
from typing import Any, Mapping, Sequence

from mmjax.convert import hf_config as hf
from mmjax.convert.mapping import CONV, Rule
from mmjax.convert.tensors import ConversionError
from mmjax.models.image import ResNet

MODALITY = 'image'
PREFIXES = ('', 'resnet.')
PROBE = 'embedder.embedder.convolution.weight'


def encoder_config(config: Mapping[str, Any],
                   names: Sequence[str] = ()) -> dict:
  """The mmjax encoder config of the ResNet a Hugging Face config describes."""
  del names  # Every ResNet checkpoint has the same parts.
  bottleneck = hf.field(config, 'layer_type') == 'bottleneck'
  depths = tuple(hf.field(config, 'depths'))
  depth = [d for d, stages in ResNet.STAGES.items()
           if stages == (depths, bottleneck)]
  if not depth:
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
  return dict(name='resnet', depth=depth[0], width=width, stem='imagenet',
              padding='symmetric')


def example_input(config: Mapping[str, Any]):
  """Shape and dtype of a batch the tower is initialised with."""
  return (1, 64, 64, hf.field(config, 'num_channels', 3)), 'float32'


def _conv_norm(source: str, target_conv: str, target_norm: str) -> list:
  """A ResNetConvLayer (conv + BatchNorm) -> mmjax conv and BatchNorm."""
  norm = f'{source}.normalization'
  return [Rule(f'{source}.convolution.weight', f'params/{target_conv}/kernel',
               CONV),
          Rule(f'{norm}.weight', f'params/{target_norm}/scale'),
          Rule(f'{norm}.bias', f'params/{target_norm}/bias'),
          Rule(f'{norm}.running_mean', f'batch_stats/{target_norm}/mean'),
          Rule(f'{norm}.running_var', f'batch_stats/{target_norm}/var')]


def rules(cfg: Mapping[str, Any], prefix: str,
          names: Sequence[str] = ()) -> list:
  """One rule per variable of the `resnet` tower `cfg` (from
  `encoder_config`), from a file whose names start with `prefix`."""
  del names  # One layout.
  stages, bottleneck = ResNet.STAGES[cfg['depth']]
  out = _conv_norm(f'{prefix}embedder.embedder', 'stem_conv', 'stem_norm')
  for i, num_blocks in enumerate(stages):
    for j in range(num_blocks):
      source = f'{prefix}encoder.stages.{i}.layers.{j}'
      block = f'stage{i}_block{j}'
      for k in range(3 if bottleneck else 2):
        out += _conv_norm(f'{source}.layer.{k}', f'{block}/Conv_{k}',
                          f'{block}/BatchNorm_{k}')
      # A stage's first block changes the resolution (stages 1-3) or the
      # width (bottlenecks' 4x) and so projects its shortcut.
      if j == 0 and (i > 0 or bottleneck):
        out += _conv_norm(f'{source}.shortcut', f'{block}/proj_conv',
                          f'{block}/proj_norm')
  return out
