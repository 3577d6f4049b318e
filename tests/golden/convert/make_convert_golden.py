"""Reference outputs of Hugging Face ResNet, ViT and CLIP towers and of
torchvision ResNets with random weights, for the mmjax converter tests
(tests/convert/).

Run with PyTorch, transformers and torchvision installed (not mmjax's
requirements):

    /work/refvenv/bin/python tests/golden/convert/make_convert_golden.py

writes, per tiny case, <case>/model.safetensors and <case>/config.json
(`save_pretrained`; a torchvision case: its state_dict, no config) and
<case>/io.npz (inputs, reference outputs in mmjax's layout). With --full_dir
it also writes the full-size ResNet-18, ResNet-50 (both layouts), ViT-B/16
and CLIP ViT-B/32 cases there (too big to commit);
tests/golden/convert/check_full_size.py then converts them with mmjax and
records the largest differences in full_size.json.

The tests import `make_case` to compare live when PyTorch and transformers
are importable. Weights: each model's own random initialisation, then every
1-D parameter (biases, norm scales, CLIP's class embedding) shifted by
N(0, 0.1) so that swapped or dropped scales and biases change the outputs,
and BatchNorm running statistics measured on random images (fresh ones are
0 and 1, which would hide a mean/variance mix-up), the variances plus 0.5:
a random net's near-zero measured variances amplify float32 rounding so
much (PyTorch float32 vs float64: 3e-4 on resnet50_tiny) that no float32
implementation could match another within 1e-4.
"""
import argparse
import importlib.metadata
import importlib.util
import json
import os
import sys
import types

import numpy as np
import safetensors.torch
import torch
import transformers as tr

HERE = os.path.dirname(os.path.abspath(__file__))


def _resnet(basic, width, depths):
  return tr.ResNetConfig(
      embedding_size=width, depths=depths,
      layer_type='basic' if basic else 'bottleneck',
      hidden_sizes=[width * 2**i * (1 if basic else 4) for i in range(4)])


def torchvision_resnet_module():
  """`torchvision.models.resnet`. A torchvision wheel built for CUDA beside a
  CPU-only PyTorch fails in its package __init__ (its C ops cannot load, so
  registering their meta kernels raises); ResNet is pure Python and needs
  none of them, so then the package is entered without that __init__."""
  try:
    from torchvision.models import resnet  # pylint: disable=import-outside-toplevel
    return resnet
  except (OSError, RuntimeError):
    for name in [m for m in sys.modules if m.split('.')[0] == 'torchvision']:
      del sys.modules[name]
    spec = importlib.util.find_spec('torchvision')
    package = types.ModuleType('torchvision')
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    sys.modules['torchvision'] = package
    from torchvision.models import resnet  # pylint: disable=import-outside-toplevel
    return resnet


# transformers imports torchvision, where it is installed, as its models load
# (tr.ResNetModel below): make it importable first.
if importlib.util.find_spec('torchvision') is not None:
  torchvision_resnet_module()


def _torchvision(spec, num_classes=10):
  """torchvision's `ResNet` of `spec` = (arch, width): arch 'resnet18' or
  'resnet50', its stages `width` x (1, 2, 4, 8) channels wide (torchvision:
  64 x) and its `fc` to `num_classes`: torchvision's own blocks and stages,
  narrower."""
  arch, width = spec
  tv = torchvision_resnet_module()
  if width == 64:
    return getattr(tv, arch)()  # As torchvision builds it: 1,000 classes.
  block, depths = {'resnet18': (tv.BasicBlock, [2, 2, 2, 2]),
                   'resnet50': (tv.Bottleneck, [3, 4, 6, 3])}[arch]

  class Narrow(tv.ResNet):

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
      if planes == 64:  # The first stage takes the (narrower) stem's output.
        self.inplanes = width
      return super()._make_layer(block, planes * width // 64, blocks, stride,
                                 dilate)

  model = Narrow(block, depths, num_classes=num_classes)
  # The stem and classifier ResNet.__init__ built at 64 / 512 channels.
  model.conv1 = torch.nn.Conv2d(3, width, 7, 2, 3, bias=False)
  torch.nn.init.kaiming_normal_(model.conv1.weight, mode='fan_out',
                                nonlinearity='relu')
  model.bn1 = torch.nn.BatchNorm2d(width)
  model.fc = torch.nn.Linear(8 * width * block.expansion, num_classes)
  return model


# case -> (model class or builder, its config, input kind, image size or
# text length).
CASES = {
    # ResNet-18's and ResNet-50's block structure (basic / bottleneck, 2-2-2-2
    # and 3-4-6-3 blocks) at a small width. Even sizes at every strided conv
    # (where Flax's 'SAME' and PyTorch's padding differ); 64 px: a 2 x 2
    # final feature map (token order).
    # ViT: weights 10x the default scale, so that the exact-erf and tanh
    # GELUs differ by more than the tolerance.
    'resnet18_tiny': (tr.ResNetModel, _resnet(True, 4, [2, 2, 2, 2]),
                      'image', 32),
    'resnet50_tiny': (tr.ResNetModel, _resnet(False, 4, [3, 4, 6, 3]),
                      'image', 64),
    'vit_tiny': (tr.ViTModel, tr.ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, image_size=16, patch_size=4,
        initializer_range=0.2), 'image', 16),
    'clip_vision_tiny': (tr.CLIPVisionModelWithProjection, tr.CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, image_size=16, patch_size=4,
        projection_dim=24), 'image', 16),
    'clip_text_tiny': (tr.CLIPTextModelWithProjection, tr.CLIPTextConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=16, projection_dim=24, bos_token_id=62,
        eos_token_id=63, pad_token_id=63), 'text', 12),
    # torchvision's layout: a state_dict with no config beside it.
    'torchvision_resnet18_tiny': (_torchvision, ('resnet18', 4), 'image',
                                  32),
    'torchvision_resnet50_tiny': (_torchvision, ('resnet50', 4), 'image',
                                  64),
}
FULL_CASES = {
    'resnet18': (tr.ResNetModel, _resnet(True, 64, [2, 2, 2, 2]), 'image',
                 224),
    'resnet50': (tr.ResNetModel, tr.ResNetConfig(), 'image', 224),
    'vit_b16': (tr.ViTModel, tr.ViTConfig(), 'image', 224),
    'clip_b32_vision': (tr.CLIPVisionModelWithProjection,
                        tr.CLIPVisionConfig(), 'image', 224),
    'clip_b32_text': (tr.CLIPTextModelWithProjection, tr.CLIPTextConfig(),
                      'text', 77),
    'torchvision_resnet18': (_torchvision, ('resnet18', 64), 'image', 224),
    'torchvision_resnet50': (_torchvision, ('resnet50', 64), 'image', 224),
}


def _randomize(model, kind, size, seed):
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in model.parameters():
      if p.ndim == 1:
        p.add_(0.1 * torch.randn(p.shape, generator=gen))
    norms = [m for m in model.modules()
             if isinstance(m, torch.nn.BatchNorm2d)]
    if norms:
      for m in norms:
        m.reset_running_stats()
        m.momentum = None  # Cumulative average over the calibration batch.
      model.train()
      model(torch.randn((16, 3, size, size), generator=gen))
      for m in norms:
        m.running_var.add_(0.5)
  return model.eval()


def _inputs(kind, size, config, seed):
  rng = np.random.default_rng(seed)
  if kind == 'image':
    return {'pixels': rng.normal(size=(3, size, size, 3)).astype(np.float32)}
  # Texts of 12, 7 and 3 tokens: BOS, words, EOS, then padding (the EOS id).
  lengths, eos = (size, 7, 3), config.eos_token_id
  ids = rng.integers(0, eos - 1, (3, size))
  ids[:, 0] = config.bos_token_id
  mask = np.arange(size)[None] < np.array(lengths)[:, None]
  ids = np.where(mask, ids, eos)
  ids[np.arange(3), np.array(lengths) - 1] = eos
  return {'ids': ids.astype(np.int32), 'mask': mask}


def _outputs(model, kind, inputs):
  """Reference outputs in mmjax's layout ([B, tokens, channels])."""
  with torch.no_grad():
    if kind == 'text':
      out = model(input_ids=torch.from_numpy(inputs['ids']).long(),
                  attention_mask=torch.from_numpy(inputs['mask']).long())
      result = {'last_hidden_state': out.last_hidden_state,
                'text_embeds': out.text_embeds}
      # Configs from before transformers fixed eos_token_id say 2 and pool
      # at the largest id instead.
      model.text_model.eos_token_id = 2
      result['pooled_legacy'] = model.text_model(
          input_ids=torch.from_numpy(inputs['ids']).long(),
          attention_mask=torch.from_numpy(inputs['mask']).long()
      ).pooler_output
      model.text_model.eos_token_id = model.config.eos_token_id
      return {k: v.numpy() for k, v in result.items()}
    pixels = torch.from_numpy(inputs['pixels']).permute(0, 3, 1, 2)
    if isinstance(model, torchvision_resnet_module().ResNet):
      # torchvision's forward up to the average pool (its own modules).
      x = model.maxpool(model.relu(model.bn1(model.conv1(pixels))))
      x = model.layer4(model.layer3(model.layer2(model.layer1(x))))
      return {'last_hidden_state': x.flatten(2).transpose(1, 2).numpy()}
    out = model(pixel_values=pixels)
    if isinstance(model, tr.ResNetModel):
      return {'last_hidden_state': out.last_hidden_state.flatten(2)
              .transpose(1, 2).numpy()}
    if isinstance(model, tr.ViTModel):
      return {'last_hidden_state': out.last_hidden_state.numpy(),
              'pooler_output': out.pooler_output.numpy()}
    # CLIP: mmjax's tokens are every token after post_layernorm.
    post = model.vision_model.post_layernorm
    return {'image_embeds': out.image_embeds.numpy(),
            'pooler_output': post(out.last_hidden_state)[:, 0].numpy(),
            'tokens': post(out.last_hidden_state).numpy()}


def make_case(name, cases=CASES, seed=0):
  """(model, inputs, outputs) of case `name`: a random model in eval mode,
  its inputs and its reference outputs (NumPy, mmjax layout)."""
  cls, config, kind, size = cases[name]
  torch.manual_seed(seed)
  model = _randomize(cls(config), kind, size, seed)
  inputs = _inputs(kind, size, config, seed)
  return model, inputs, _outputs(model, kind, inputs)


def write_case(name, directory, cases=CASES):
  model, inputs, outputs = make_case(name, cases)
  path = os.path.join(directory, name)
  if cases[name][0] is _torchvision:
    os.makedirs(path, exist_ok=True)
    safetensors.torch.save_file(model.state_dict(),
                                os.path.join(path, 'model.safetensors'))
  else:
    model.save_pretrained(path)
  np.savez_compressed(os.path.join(path, 'io.npz'), **inputs, **outputs)
  print(name, sum(p.numel() for p in model.parameters()), 'parameters')


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--full_dir', default='',
                      help='also write the full-size cases here')
  args = parser.parse_args()
  for name in CASES:
    write_case(name, HERE)
  with open(os.path.join(HERE, 'versions.json'), 'w') as f:
    json.dump({'torch': torch.__version__,
               'transformers': tr.__version__,
               'torchvision': importlib.metadata.version('torchvision')},
              f, indent=1)
  if args.full_dir:
    for name in FULL_CASES:
      write_case(name, args.full_dir, FULL_CASES)


if __name__ == '__main__':
  main()
