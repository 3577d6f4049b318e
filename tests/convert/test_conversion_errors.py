"""A checkpoint that does not fit its tower is refused, naming the tensors
at fault; files are read as safetensors or (with PyTorch) pickles; the
conversion script writes a checkpoint that warm starts the tower."""
import functools
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.flax

from cpu_devices import subprocess_env
from mmjax.convert import ConversionError, convert, convert_file
from mmjax.convert.tensors import read_tensors
from mmjax.train.checkpoint import read_latest_state
from mmjax.train.warm_start import merge_matching

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
CASE = os.path.join(REPO, 'tests', 'golden', 'convert', 'resnet18_tiny')
WEIGHTS = os.path.join(CASE, 'model.safetensors')
try:
  import torch
except ImportError:
  torch = None


@functools.lru_cache(maxsize=None)
def _golden():
  with open(os.path.join(CASE, 'config.json')) as f:
    return read_tensors(WEIGHTS), json.load(f)


def golden():
  """(tensors, config) of the tiny ResNet-18 golden checkpoint (copies)."""
  tensors, config = _golden()
  return dict(tensors), dict(config)


def refused(tensors, config, family='resnet', **kwargs) -> str:
  with pytest.raises(ConversionError) as error:
    convert(family, tensors, config, source='ckpt', **kwargs)
  return str(error.value)


def test_missing_tensor_is_named_with_its_parameter():
  tensors, config = golden()
  del tensors['encoder.stages.1.layers.0.shortcut.normalization.running_var']
  message = refused(tensors, config)
  assert ('encoder.stages.1.layers.0.shortcut.normalization.running_var '
          '(for batch_stats/stage1_block0/proj_norm/var)') in message
  assert 'not in the file' in message


def test_extra_tensor_is_named_and_can_be_ignored():
  tensors, config = golden()
  tensors['classifier.1.weight'] = np.zeros((10, 32), np.float32)
  message = refused(tensors, config)
  assert 'not used by the tower' in message
  assert 'classifier.1.weight' in message
  converted = convert('resnet', tensors, config, ignore=['classifier.*'])
  assert converted.encoder['depth'] == 18


def test_misshapen_tensor_is_named_with_both_shapes():
  tensors, config = golden()
  name = 'encoder.stages.2.layers.1.layer.0.convolution.weight'
  tensors[name] = np.zeros((16, 16, 3, 1), np.float32)
  message = refused(tensors, config)
  assert (f'{name}: [16, 16, 3, 1] in the file, [16, 16, 3, 3] needed for '
          'params/stage2_block1/Conv_0/kernel') in message


def test_every_failure_is_listed_at_once():
  tensors, config = golden()
  del tensors['embedder.embedder.normalization.weight']
  tensors['extra'] = np.zeros(3, np.float32)
  message = refused(tensors, config)
  assert 'embedder.embedder.normalization.weight' in message
  assert 'extra' in message


def test_bookkeeping_buffers_are_not_unused_tensors():
  tensors, config = golden()
  tensors['embedder.embedder.normalization.num_batches_tracked'] = np.array(3)
  convert('resnet', tensors, config)


def test_other_family_or_config_is_refused_by_name():
  tensors, config = golden()
  with pytest.raises(ConversionError, match="'embeddings.cls_token'"):
    convert('vit', tensors, dict(config, qkv_bias=True))
  with pytest.raises(ConversionError, match="'layer_type'"):
    convert('resnet', tensors, {k: v for k, v in config.items()
                                if k != 'layer_type'})
  with pytest.raises(ConversionError, match='depths \\[2, 2, 3, 2\\]'):
    convert('resnet', tensors, dict(config, depths=[2, 2, 3, 2]))
  with pytest.raises(ConversionError, match='valid families are'):
    convert('resnet101', tensors, config)


TV_WEIGHTS = os.path.join(REPO, 'tests', 'golden', 'convert',
                          'torchvision_resnet18_tiny', 'model.safetensors')


def tv_golden():
  """Tensors of the tiny torchvision ResNet-18 golden state dict (a copy)."""
  return dict(_tv_golden())


@functools.lru_cache(maxsize=None)
def _tv_golden():
  return read_tensors(TV_WEIGHTS)


def tv_refused(tensors, ignore=('fc.*',)) -> str:
  return refused(tensors, None, 'torchvision_resnet', ignore=ignore)


def test_torchvision_missing_extra_and_misshapen_tensors_are_named():
  tensors = tv_golden()
  del tensors['layer2.0.downsample.1.running_var']
  tensors['layer3.1.conv1.weight'] = np.zeros((16, 16, 3, 1), np.float32)
  tensors['layer4.1.bn3.weight'] = np.zeros(32, np.float32)
  message = tv_refused(tensors)
  assert ('layer2.0.downsample.1.running_var (for '
          'batch_stats/stage1_block0/proj_norm/var)') in message
  assert ('layer3.1.conv1.weight: [16, 16, 3, 1] in the file, '
          '[16, 16, 3, 3] needed for params/stage2_block1/Conv_0/kernel'
          ) in message
  assert 'not used by the tower' in message
  assert 'layer4.1.bn3.weight' in message
  assert 'num_batches_tracked' not in message  # Ignored by name.


def test_torchvision_classifier_is_named_unless_ignored():
  message = tv_refused(tv_golden(), ignore=())
  assert 'fc.weight' in message and 'fc.bias' in message
  assert 'not used by the tower' in message


def test_torchvision_depth_is_read_from_the_tensors_or_refused():
  tensors = {k: v for k, v in tv_golden().items()
             if not k.startswith('layer3.1.')}
  message = tv_refused(tensors)
  assert '[2, 2, 1, 2] basic' in message and 'layer3.0' in message
  assert 'not a ResNet mmjax has' in message
  # A conv3 in layer1.0 makes every block a bottleneck: 2-2-2-2 is none.
  tensors = tv_golden()
  tensors['layer1.0.conv3.weight'] = np.zeros((16, 4, 1, 1), np.float32)
  assert 'layer1.0.conv3.weight' in tv_refused(tensors)


def test_torchvision_wide_stage_is_refused_by_name():
  tensors = tv_golden()  # Stem width 4: layer1 blocks are 4 wide.
  tensors['layer1.0.conv1.weight'] = np.zeros((8, 4, 3, 3), np.float32)
  message = tv_refused(tensors)
  assert 'layer1.0.conv1.weight has 8 output channels' in message
  assert 'needs 4' in message


def test_torchvision_file_converts_without_a_config(tmp_path):
  converted = convert_file('torchvision_resnet', TV_WEIGHTS,
                           ignore=['fc.*'])
  assert converted.encoder['depth'] == 18 and converted.encoder['width'] == 4
  config = tmp_path / 'config.json'
  config.write_text('{}')
  with pytest.raises(ConversionError, match='reads no config'):
    convert_file('torchvision_resnet', TV_WEIGHTS, str(config))
  # The Hugging Face family on it: no config.json, and the family to use.
  with pytest.raises(ConversionError, match='torchvision_resnet'):
    convert_file('resnet', TV_WEIGHTS)
  with pytest.raises(ConversionError, match='needs its model'):
    convert('resnet', golden()[0])


def test_other_layout_is_refused_with_the_family_it_fits():
  tensors, config = golden()
  message = refused(tensors, None, 'torchvision_resnet')
  assert "'conv1.weight'" in message and 'torchvision layout' in message
  assert 'fit the family resnet' in message
  message = refused(tv_golden(), config)
  assert 'Hugging Face layout' in message
  assert 'fit the family torchvision_resnet' in message


def _touch(path):
  path.write_bytes(b'')
  return str(path)


def test_unknown_file_kind_and_missing_file(tmp_path):
  with pytest.raises(ConversionError, match='unknown checkpoint kind'):
    read_tensors(_touch(tmp_path / 'x.npz'))
  with pytest.raises(ConversionError, match='no such file'):
    read_tensors(str(tmp_path / 'absent.safetensors'))


def test_bfloat16_safetensors_are_read(tmp_path):
  path = str(tmp_path / 'bf16.safetensors')
  values = np.array([1.5, -2.0, 0.0078125], np.float32)
  safetensors.flax.save_file({'w': jnp.asarray(values, jnp.bfloat16)}, path)
  loaded = read_tensors(path)['w']
  assert loaded.dtype == jnp.bfloat16
  np.testing.assert_array_equal(loaded.astype(np.float32), values)


@pytest.mark.skipif(torch is not None, reason='PyTorch is installed')
def test_pickle_without_torch_says_how_to_fix(tmp_path):
  with pytest.raises(ConversionError, match='needs PyTorch'):
    read_tensors(_touch(tmp_path / 'model.pth'))


@pytest.mark.skipif(torch is None, reason='needs PyTorch')
def test_pickle_reads_as_the_safetensors_file(tmp_path):
  tensors, _ = golden()
  path = str(tmp_path / 'model.pth')
  torch.save({k: torch.from_numpy(v) for k, v in tensors.items()}, path)
  loaded = read_tensors(path)
  assert sorted(loaded) == sorted(tensors)
  for name, array in tensors.items():
    np.testing.assert_array_equal(loaded[name], array)


def test_script_writes_a_checkpoint_that_warm_starts_the_tower(tmp_path):
  workdir = str(tmp_path / 'converted')
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, 'experiments', 'convert_weights.py'),
       '--family=resnet', f'--weights={WEIGHTS}', f'--workdir={workdir}'],
      capture_output=True, text=True, timeout=300, env=subprocess_env(1),
      cwd=REPO)
  assert result.returncode == 0, result.stderr[-3000:]
  converted = convert_file('resnet', WEIGHTS)
  with open(os.path.join(workdir, 'encoder.json')) as f:
    assert json.load(f) == converted.encoder
  _, saved = read_latest_state(workdir)
  # A fresh model's tower: every array is replaced by the converted one.
  encoder = converted.build()
  fresh = jax.jit(lambda: nn.meta.unbox(encoder.init(
      jax.random.key(1), np.zeros((1, 32, 32, 3), np.float32),
      train=False)))()
  for name in ('params', 'batch_stats'):
    merged, kept = merge_matching({'image_encoder': fresh[name]},
                                  saved[name])
    assert kept == []
    for (path, x), y in zip(
        jax.tree_util.tree_leaves_with_path(merged['image_encoder']),
        jax.tree.leaves(converted.variables[name])):
      np.testing.assert_array_equal(np.asarray(x), y, err_msg=str(path))
