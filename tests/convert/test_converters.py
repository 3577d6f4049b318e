"""Converted ResNet-18/50, ViT and CLIP towers reproduce the reference
(Hugging Face transformers, and torchvision for its ResNet layout; random
weights, eval mode) within 1e-4.

Live when PyTorch and transformers (and torchvision, for its cases) are
importable (the reference is built here by
tests/golden/convert/make_convert_golden.py's `make_case`); otherwise
against the golden files that script committed.
"""
import functools
import importlib.util
import json
import os
import sys

import jax
import numpy as np
import pytest

from mmjax.convert import convert
from mmjax.convert.tensors import read_tensors
from mmjax.models.encoders import build_encoder

GOLDEN = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'golden', 'convert')
TOLERANCE = 1e-4
try:
  import torch  # noqa: F401
  import transformers  # noqa: F401
  LIVE = True
except ImportError:
  LIVE = False
TORCHVISION = 'torchvision_'  # Cases in torchvision's layout: no config.
LIVE_TORCHVISION = LIVE and importlib.util.find_spec('torchvision') is not None


@functools.lru_cache(maxsize=None)
def reference(case):
  """(tensors, HF config dict or None, inputs, reference outputs) of
  `case`."""
  torchvision = case.startswith(TORCHVISION)
  if LIVE_TORCHVISION if torchvision else LIVE:
    sys.path.insert(0, GOLDEN)
    from make_convert_golden import make_case  # pylint: disable=import-outside-toplevel
    model, inputs, outputs = make_case(case)
    tensors = {k: v.numpy() for k, v in model.state_dict().items()}
    return (tensors, None if torchvision else model.config.to_dict(), inputs,
            outputs)
  config = None
  if not torchvision:
    with open(os.path.join(GOLDEN, case, 'config.json')) as f:
      config = json.load(f)
  io = dict(np.load(os.path.join(GOLDEN, case, 'io.npz')))
  inputs = {k: io.pop(k) for k in ('pixels', 'ids', 'mask') if k in io}
  return (read_tensors(os.path.join(GOLDEN, case, 'model.safetensors')),
          config, inputs, io)


def run(converted_encoder, variables, inputs, vocab_size=None):
  """Tokens of the tower `converted_encoder` (a config) in eval mode."""
  modality = 'text' if 'ids' in inputs else 'image'
  encoder = build_encoder(modality, converted_encoder, vocab_size=vocab_size)
  x = inputs['ids'] if modality == 'text' else inputs['pixels']
  tokens, _ = jax.jit(lambda v, x, m: encoder.apply(v, x, m, train=False))(
      variables, x, inputs.get('mask'))
  return np.asarray(tokens)


def assert_close(actual, expected):
  assert actual.shape == expected.shape
  error = np.abs(actual - expected).max()
  assert error <= TOLERANCE, f'max |difference| {error} > {TOLERANCE}'


@pytest.mark.parametrize('case,depth', [('resnet18_tiny', 18),
                                        ('resnet50_tiny', 50)])
def test_resnet(case, depth):
  tensors, config, inputs, outputs = reference(case)
  converted = convert('resnet', tensors, config)
  assert converted.encoder['depth'] == depth  # Basic vs bottleneck blocks.
  assert_close(run(converted.encoder, converted.variables, inputs),
               outputs['last_hidden_state'])


@pytest.mark.parametrize('case,depth', [('torchvision_resnet18_tiny', 18),
                                        ('torchvision_resnet50_tiny', 50)])
def test_torchvision_resnet(case, depth):
  """A torchvision state dict, no config: depth and width read from the
  tensors; its classifier `fc` left out on purpose."""
  tensors, _, inputs, outputs = reference(case)
  assert 'fc.weight' in tensors and any(
      k.endswith('num_batches_tracked') for k in tensors)
  converted = convert('torchvision_resnet', tensors, ignore=['fc.*'])
  assert converted.encoder == dict(name='resnet', depth=depth, width=4,
                                   stem='imagenet', padding='symmetric')
  assert_close(run(converted.encoder, converted.variables, inputs),
               outputs['last_hidden_state'])


def test_torchvision_data_parallel_file_converts():
  """Saved from nn.DataParallel: every name under 'module.'."""
  tensors, _, inputs, outputs = reference('torchvision_resnet18_tiny')
  converted = convert('torchvision_resnet',
                      {f'module.{k}': v for k, v in tensors.items()},
                      ignore=['module.fc.*'])
  assert_close(run(converted.encoder, converted.variables, inputs),
               outputs['last_hidden_state'])


def test_vit_pooled_and_tokens():
  tensors, config, inputs, outputs = reference('vit_tiny')
  converted = convert('vit', tensors, config)
  assert converted.encoder['pooling'] == 'pooler'
  assert_close(run(converted.encoder, converted.variables, inputs)[:, 0],
               outputs['pooler_output'])
  # Without the pooler (ignored): every token, class token first.
  converted = convert('vit', tensors, config, ignore=['pooler.*'])
  assert_close(run(converted.encoder, converted.variables, inputs),
               outputs['last_hidden_state'])


def test_vit_classifier_file_converts_without_its_head():
  """A ViTForImageClassification file: the tower under 'vit.', no pooler,
  a classifier head left out on purpose."""
  tensors, config, inputs, outputs = reference('vit_tiny')
  tensors = {f'vit.{k}': v for k, v in tensors.items()
             if not k.startswith('pooler.')}
  tensors['classifier.weight'] = np.zeros((10, 32), np.float32)
  converted = convert('vit', tensors, config, ignore=['classifier.*'])
  assert converted.encoder['pooling'] == 'tokens'
  assert_close(run(converted.encoder, converted.variables, inputs),
               outputs['last_hidden_state'])


def test_clip_vision_projected_and_tokens():
  tensors, config, inputs, outputs = reference('clip_vision_tiny')
  converted = convert('clip_vision', tensors, config)
  assert_close(run(converted.encoder, converted.variables, inputs)[:, 0],
               outputs['image_embeds'])
  # The same weights as a token tower: every token after post_layernorm.
  params = dict(converted.variables['params'])
  del params['projection']
  tokens = run(dict(converted.encoder, pooling='tokens', projection_dim=0),
               {'params': params}, inputs)
  assert_close(tokens, outputs['tokens'])
  assert_close(tokens[:, 0], outputs['pooler_output'])


def test_clip_text_eos_pooled_and_tokens():
  tensors, config, inputs, outputs = reference('clip_text_tiny')
  converted = convert('clip_text', tensors, config)
  assert converted.encoder['pooling'] == 'eos'
  assert_close(run(converted.encoder, converted.variables, inputs,
                   converted.vocab_size)[:, 0], outputs['text_embeds'])
  tokens = run(dict(converted.encoder, pooling='tokens', projection_dim=0),
               {'params': {k: v for k, v in converted.variables[
                   'params'].items() if k != 'projection'}}, inputs,
               converted.vocab_size)
  mask = inputs['mask']  # Padded positions differ: both ignore them.
  assert_close(tokens[mask], outputs['last_hidden_state'][mask])


def test_clip_text_legacy_eos_config_pools_at_largest_id():
  tensors, config, inputs, outputs = reference('clip_text_tiny')
  converted = convert('clip_text', tensors, dict(config, eos_token_id=2),
                      ignore=['text_projection.*'])
  assert converted.encoder['pooling'] == 'argmax'
  assert_close(run(converted.encoder, converted.variables, inputs,
                   converted.vocab_size)[:, 0], outputs['pooled_legacy'])


def test_scanned_layers_give_the_same_outputs():
  """scan_layers=True: the blocks stacked for `nn.scan`, as a model with
  config.model.scan_layers=True holds them."""
  tensors, config, inputs, outputs = reference('clip_text_tiny')
  converted = convert('clip_text', tensors, config, scan_layers=True)
  blocks = converted.variables['params']['transformer']['blocks']
  assert blocks['attn']['query']['kernel'].shape == (2, 32, 4, 8)
  encoder = converted.build()
  tokens, _ = encoder.apply(converted.variables, inputs['ids'],
                            inputs['mask'], train=False)
  assert_close(np.asarray(tokens)[:, 0], outputs['text_embeds'])


def test_full_clip_model_file_converts_each_tower():
  """A CLIPModel file holds both towers, both projections and logit_scale;
  its config nests each tower's part. Each tower converts with the other
  left out."""
  vision, vision_config, vision_in, vision_out = reference('clip_vision_tiny')
  text, text_config, text_in, text_out = reference('clip_text_tiny')
  tensors = {**vision, **text, 'logit_scale': np.array(2.6, np.float32)}
  config = {'model_type': 'clip', 'vision_config': vision_config,
            'text_config': text_config}
  converted = convert('clip_vision', tensors, config, ignore=[
      'text_model.*', 'text_projection.*', 'logit_scale'])
  assert_close(run(converted.encoder, converted.variables, vision_in)[:, 0],
               vision_out['image_embeds'])
  converted = convert('clip_text', tensors, config, ignore=[
      'vision_model.*', 'visual_projection.*', 'logit_scale'])
  assert_close(run(converted.encoder, converted.variables, text_in,
                   converted.vocab_size)[:, 0], text_out['text_embeds'])
