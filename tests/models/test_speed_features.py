"""Speed and memory options: mixed precision, remat, scan, attention kernel,
conv kernel gradients, gradient accumulation, compilation cache. Each keeps the model's results."""
import functools
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from cpu_devices import subprocess_env
from mmjax.errors import ConfigError
from configs import manifest
from mmjax.models import audio
from mmjax.models import image
from mmjax.models import layers
from mmjax.experiment import Experiment
from mmjax.train import parallel
from trees import assert_trees_close

REPO = os.path.join(os.path.dirname(__file__), '..', '..')
# Transformer towers and transformer-block fusion: every kind of block.
TRANSFORMERS = ('modalities=image+text,image=vit,text=transformer,'
                'fusion=cross_attention')
DEPTH = 2


class _Blocks(nn.Module):
  """A TransformerStack, then a cross-attention block over `context`."""
  options: layers.BlockOptions = layers.BlockOptions()

  @nn.compact
  def __call__(self, x, mask, context, context_mask, *, train):
    x = layers.TransformerStack(DEPTH, 2, 32, options=self.options,
                                name='transformer')(x, mask, train=train)
    block = layers.TransformerBlock(2, 32, attention=self.options.attention,
                                    name='cross')
    return layers.apply_block(block, x, mask, context, context_mask,
                              train=train, remat=self.options.remat)


def _inputs():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(3, 6, 16)), jnp.float32)
  context = jnp.asarray(rng.normal(size=(3, 4, 16)), jnp.float32)
  # Padding at the end; the last example has no valid context at all.
  mask = jnp.arange(6)[None] < jnp.array([[6], [3], [1]])
  context_mask = jnp.arange(4)[None] < jnp.array([[4], [2], [0]])
  return x, mask, context, context_mask


def _params():
  return nn.meta.unbox(_Blocks().init(jax.random.key(0), *_inputs(),
                                      train=False)['params'])


def _restack(params):
  """Unrolled params {block0, .., ln_final} -> scanned {blocks, ln_final}."""
  stack = params['transformer']
  blocks = [stack[f'block{i}'] for i in range(DEPTH)]
  return {**params, 'transformer': {
      'blocks': jax.tree.map(lambda *x: jnp.stack(x), *blocks),
      'ln_final': stack['ln_final']}}


def _loss_and_grads(params, **options):
  module = _Blocks(layers.BlockOptions(**options))
  def loss(p):
    return (module.apply({'params': p}, *_inputs(), train=True)**2).mean()
  return jax.jit(jax.value_and_grad(loss))(params)


def test_bfloat16_computes_in_bf16_with_float32_params_and_opt_state(
    make_config):
  experiment = Experiment(make_config(TRANSFORMERS, model__dtype='bfloat16'))
  model = experiment.model
  state = experiment.runner.init(experiment.init_rng)
  for tree in (state.params, state.opt_state):
    floats = [x.dtype for x in jax.tree.leaves(tree)
              if jnp.issubdtype(x.dtype, jnp.floating)]
    assert floats and all(d == jnp.float32 for d in floats)
  batch = next(experiment.train_iterator())
  # Every dense, attention, norm and conv layer computes in bf16.
  _, inter = jax.eval_shape(lambda p: model.apply(
      {'params': p}, batch, train=False,
      capture_intermediates=lambda m, _: isinstance(
          m, (nn.Dense, nn.DenseGeneral, nn.LayerNorm, nn.Conv))),
                            state.params)
  outputs = jax.tree.leaves(inter['intermediates'])
  assert len(outputs) > 20
  assert all(x.dtype == jnp.bfloat16 for x in outputs)
  # The bf16 loss is finite and close to the float32 loss, same params.
  f32 = model.clone(dtype=jnp.float32)
  losses = jax.jit(lambda p: [experiment.task.loss(m.apply(
      {'params': p}, batch, train=False), batch)[0] for m in (model, f32)])(
          state.params)
  assert np.isfinite(float(losses[0]))
  np.testing.assert_allclose(float(losses[0]), float(losses[1]), rtol=2e-2)
  # A bf16 training step keeps float32 params.
  state, metrics = experiment.runner.train_step(state, batch)
  assert np.isfinite(float(metrics['loss']))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.params))


@pytest.mark.parametrize('remat', ['full', 'save_dots'])
def test_remat_gives_same_loss_and_gradients(remat):
  params = _params()
  loss, grads = _loss_and_grads(params)
  remat_loss, remat_grads = _loss_and_grads(params, remat=remat)
  np.testing.assert_allclose(float(remat_loss), float(loss), rtol=1e-6)
  assert_trees_close(remat_grads, grads, rtol=1e-5, atol=1e-7)


def test_scan_equals_unrolled_stack_with_restacked_params():
  params = _params()
  restacked = _restack(params)
  scan_init = nn.meta.unbox(_Blocks(layers.BlockOptions(scan=True)).init(
      jax.random.key(0), *_inputs(), train=False)['params'])
  assert (jax.tree.map(jnp.shape, restacked) ==
          jax.tree.map(jnp.shape, scan_init))
  for remat in ('none', 'full'):  # Scan composes with remat.
    loss, grads = _loss_and_grads(params, remat=remat)
    scan_loss, scan_grads = _loss_and_grads(restacked, scan=True, remat=remat)
    np.testing.assert_allclose(float(scan_loss), float(loss), rtol=1e-5)
    assert_trees_close(scan_grads, _restack(grads), rtol=1e-4, atol=1e-6)
  outputs = _Blocks().apply({'params': params}, *_inputs(), train=False)
  scan_outputs = _Blocks(layers.BlockOptions(scan=True)).apply(
      {'params': restacked}, *_inputs(), train=False)
  np.testing.assert_allclose(scan_outputs, outputs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('causal', [False, True])
def test_dot_product_attention_equals_einsum(causal):
  rng = np.random.default_rng(1)
  q = jnp.asarray(rng.normal(size=(3, 5, 16)), jnp.float32)
  kv = jnp.asarray(rng.normal(size=(3, 7 if not causal else 5, 16)),
                   jnp.float32)
  # Padding at the end, a row with one valid key, a row with none.
  mask = jnp.arange(kv.shape[1])[None] < jnp.array([[4], [1], [0]])
  einsum = layers.MultiHeadAttention(4, attention_kernel='einsum')
  params = einsum.init(jax.random.key(0), q, kv, mask, causal, train=False)
  dot = layers.MultiHeadAttention(4, attention_kernel='dot_product')
  for m in (mask, None):
    expected = einsum.apply(params, q, kv, m, causal, train=False)
    got = dot.apply(params, q, kv, m, causal, train=False)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_dot_product_attention_gives_same_loss_and_gradients():
  params = _params()
  loss, grads = _loss_and_grads(params)
  dot_loss, dot_grads = _loss_and_grads(params, attention='dot_product')
  np.testing.assert_allclose(float(dot_loss), float(loss), rtol=1e-5)
  assert_trees_close(dot_grads, grads, rtol=1e-4, atol=1e-6)


def test_config_options_reach_every_transformer_block(make_config):
  """model.remat / scan_layers / attention reach the encoders and the fusion
  (checked on the traced program; nothing is compiled)."""
  def trace(**model_fields):
    config = make_config(TRANSFORMERS, **{f'model__{k}': v
                                          for k, v in model_fields.items()})
    experiment = Experiment(config)
    model, batch = experiment.model, next(experiment.train_iterator())
    params = jax.eval_shape(experiment.runner.init, experiment.init_rng).params
    kernels = []

    def record(next_fun, args, kwargs, context):
      if isinstance(context.module, layers.MultiHeadAttention):
        kernels.append(context.module.attention_kernel)
      return next_fun(*args, **kwargs)

    grad = jax.grad(lambda p: model.apply({'params': p}, batch,
                                          train=True).sum())
    with nn.intercept_methods(record):
      hlo = jax.jit(grad).lower(params).as_text()
    return params, kernels, hlo.count('dot_general')

  params, kernels, dots = trace()
  assert set(kernels) == {'einsum'} and len(kernels) >= 3
  scan_params, kernels, _ = trace(scan_layers=True, attention='dot_product')
  assert set(kernels) == {'dot_product'}
  for name in ('image_encoder', 'text_encoder'):
    stack = scan_params[name]
    stack = stack.get('patches', stack)['transformer']
    assert set(stack) == {'blocks', 'ln_final'}
  # 'full' remat recomputes every block's matmuls in the backward pass.
  _, _, remat_dots = trace(remat='full')
  assert remat_dots > dots


def test_scanned_params_shard_with_a_replicated_layers_axis(make_config):
  config = make_config('modalities=text,text=transformer',
                       model__scan_layers=True,
                       parallel__mesh=dict(data=2, fsdp=4, tensor=1))
  experiment = Experiment(config)
  runner = experiment.runner
  batch = next(experiment.train_iterator())
  logical = nn.get_partition_spec(jax.eval_shape(functools.partial(
      experiment.model.init, train=False), experiment.init_rng, batch))[
          'params']
  path = ('text_encoder', 'transformer', 'blocks', 'mlp', 'fc1', 'kernel')
  kernel, sharding = logical, runner.state_sharding.params
  for key in path:
    kernel, sharding = kernel[key], sharding[key]
  assert tuple(kernel) == ('layers', 'embed', 'mlp')
  assert tuple(sharding.spec)[:2] == (None, 'fsdp')
  state = runner.init(experiment.init_rng)
  state, metrics = runner.train_step(state, batch)
  assert np.isfinite(float(metrics['loss']))


def test_accumulated_gradients_equal_the_full_batch(make_config):
  # Default encoders: no BatchNorm, no dropout, so the model is deterministic.
  full = Experiment(make_config('modalities=image+text',
                                input__global_batch_size=32))
  accumulated = Experiment(make_config('modalities=image+text',
                                       input__global_batch_size=32,
                                       optimizer__accumulation_steps=4))
  batch = next(full.train_iterator())
  state = full.runner.init(full.init_rng)
  full_state, full_metrics = full.runner.train_step(state, batch)
  state = accumulated.runner.init(accumulated.init_rng)
  acc_state, acc_metrics = accumulated.runner.train_step(state, batch)
  for name in ('loss', 'grad_norm', 'accuracy'):
    np.testing.assert_allclose(float(acc_metrics[name]),
                               float(full_metrics[name]), rtol=1e-5,
                               err_msg=name)
  assert_trees_close(acc_state.params, full_state.params, rtol=1e-5,
                      atol=1e-6)
  assert_trees_close(acc_state.opt_state, full_state.opt_state, rtol=1e-4,
                      atol=1e-7)


def test_compilation_cache_dir_receives_the_runs_executables(data_dir,
                                                            tmp_path):
  cache = tmp_path / 'xla_cache'
  result = subprocess.run([
      sys.executable, os.path.join(REPO, 'experiments', 'train.py'),
      '--config=configs/default.py:modalities=text',
      f'--workdir={tmp_path / "run"}',
      '--config.dataset.builder_config=tiny',
      f'--config.dataset.data_dir={data_dir}',
      '--config.input.global_batch_size=8', '--config.input.eval_batch_size=16',
      '--config.num_train_steps=1', '--config.optimizer.warmup_steps=0',
      f'--config.compilation_cache_dir={cache}',
  ], capture_output=True, text=True, timeout=600,
      env=subprocess_env(2), cwd=REPO)
  assert result.returncode == 0, result.stderr[-3000:]
  entries = [p for p in cache.rglob('*') if p.is_file()]
  assert len(entries) >= 3  # At least init, train step and eval step.


def test_compilation_cache_is_on_by_default(monkeypatch, tmp_path):
  assert default.get_config().compilation_cache_dir == 'auto'
  monkeypatch.setenv('HOME', str(tmp_path))
  monkeypatch.delenv('JAX_COMPILATION_CACHE_DIR', raising=False)
  assert parallel.cache_directory('auto') == str(
      tmp_path / '.cache' / 'mmjax' / 'xla')
  monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', '/scratch/xla')
  assert parallel.cache_directory('auto') == '/scratch/xla'
  assert parallel.cache_directory('~/c') == str(tmp_path / 'c')
  assert parallel.cache_directory('') == ''


@pytest.mark.parametrize('overrides, field', [
    (dict(model__param_dtype='float8'), 'model.param_dtype'),
    (dict(model__param_dtype='int32'), 'model.param_dtype'),
    (dict(model__param_dtype=None), 'model.param_dtype'),
    (dict(model__remat='some'), 'model.remat'),
    (dict(model__attention='flash'), 'model.attention'),
    (dict(model__conv_kernel_grad='fft'), 'model.conv_kernel_grad'),
    (dict(model__scan_layers=None), 'model.scan_layers'),
    (dict(optimizer__accumulation_steps=0), 'optimizer.accumulation_steps'),
    # 16 examples over 8 devices do not split into 4 micro-batches.
    (dict(optimizer__accumulation_steps=4), 'optimizer.accumulation_steps'),
])
def test_bad_speed_options_name_the_field(make_config, overrides, field):
  with pytest.raises(ConfigError, match=f'config.{field}'):
    Experiment(make_config(**overrides))


@pytest.mark.parametrize('shape,axes', [
    ((3, 7, 9, 4), (1, 2)),  # Odd sizes: the last row / column is dropped.
    ((2, 8, 6, 3), (1, 2)),
    ((4, 11, 5), (1,)),      # 1-D over time, as the temporal audio CNN.
])
def test_max_pool2_equals_flax_max_pool_bitwise(shape, axes):
  rng = np.random.default_rng(0)
  # After a ReLU, as in the CNNs: windows with tied zeros included.
  x = jnp.asarray(np.maximum(rng.normal(size=shape), 0).astype(np.float32))
  window = (2,) * len(axes)
  weights = jnp.asarray(rng.normal(size=[
      n // 2 if a in axes else n for a, n in enumerate(shape)]).astype(
          np.float32))
  flax_pool = lambda x: (nn.max_pool(x, window, strides=window) * weights
                         ).sum()
  ours = lambda x: (layers.max_pool2(x, axes) * weights).sum()
  (value, grad), (ref_value, ref_grad) = (
      jax.jit(jax.value_and_grad(f))(x) for f in (ours, flax_pool))
  assert value == ref_value
  np.testing.assert_array_equal(grad, ref_grad)
  assert (np.asarray(grad) != 0).sum() == weights.size  # One per window.


@pytest.mark.parametrize('encoder, shape', [
    (image.ImageCNN(channels=(8, 16)), (3, 16, 12, 3)),
    (audio.AudioCNN(channels=(8, 16)), (3, 2000)),  # 2-D over log-mel.
    (audio.AudioTemporalCNN(channels=(8, 16)), (3, 2000)),  # 1-D over time.
])
def test_offset_kernel_grads_change_only_the_kernel_gradients(encoder, shape):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=shape).astype(np.float32))

  def outputs_and_grads(kernel_grad):
    model = encoder.clone(
        block_options=layers.BlockOptions(conv_kernel_grad=kernel_grad))
    params = model.init(jax.random.key(0), x, train=False)
    loss = lambda p, x: (model.apply(p, x, train=False)[0]**2).sum()
    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    convs = grad.lower(params, x).as_text().count('stablehlo.convolution')
    return model.apply(params, x, train=False)[0], grad(params, x), convs

  tokens, (grads, input_grad), convs = outputs_and_grads('xla')
  offset_tokens, (offset_grads, offset_input_grad), offset_convs = (
      outputs_and_grads('offsets'))
  # Per conv: forward, input and kernel gradients; by offsets, no third.
  assert (convs, offset_convs) == (6, 4)
  np.testing.assert_array_equal(offset_tokens, tokens)
  np.testing.assert_array_equal(offset_input_grad, input_grad)
  for (path, grad), offset_grad in zip(
      jax.tree_util.tree_leaves_with_path(grads),
      jax.tree.leaves(offset_grads)):
    if 'bias' in jax.tree_util.keystr(path):  # Not a kernel: the same sums.
      np.testing.assert_array_equal(offset_grad, grad)
    else:  # The same products, summed in another order.
      np.testing.assert_allclose(offset_grad, grad, rtol=1e-5, atol=1e-6)


def test_offset_kernel_grad_leaves_other_convs_to_xla():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(2, 9, 9, 3)).astype(np.float32))
  kernel = jnp.asarray(rng.normal(size=(3, 3, 3, 4)).astype(np.float32))
  numbers = jax.lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1),
                                         (0, 3, 1, 2))
  strided = lambda conv: lambda x, k: (conv(
      x, k, (2, 2), 'SAME', dimension_numbers=numbers)**2).sum()
  np.testing.assert_array_equal(
      jax.grad(strided(layers.conv_offset_kernel_grad), 1)(x, kernel),
      jax.grad(strided(jax.lax.conv_general_dilated), 1)(x, kernel))


def test_manifest_config_uses_offset_kernel_grads():
  config = manifest.get_config('name=pets')
  assert config.model.conv_kernel_grad == 'offsets'
  assert default.get_config().model.conv_kernel_grad == 'xla'
