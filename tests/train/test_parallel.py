"""Sharded training equals single-device training; pmap equals jit;
activations are pinned to the mesh where tensor parallelism needs them."""
import gc

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from mmjax import sharding
from mmjax.experiment import Experiment
from mmjax.train import steps


def _losses(experiment, batches):
  """Per-step training losses of `experiment` on the given host batches."""
  runner = experiment.runner
  state = runner.init(experiment.init_rng)
  losses = []
  for batch in batches:
    state, metrics = runner.train_step(state, batch)
    losses.append(float(runner.fetch(metrics)['loss']))
  return np.array(losses), state


def _batches(experiment, n):
  data = experiment.train_iterator()
  return [next(data) for _ in range(n)]


@pytest.mark.parametrize('mesh', [dict(data=8, fsdp=1, tensor=1),
                                  dict(data=2, fsdp=4, tensor=1),
                                  dict(data=1, fsdp=8, tensor=1)])
def test_sharded_loss_equals_single_device(make_config, mesh):
  sharded = Experiment(make_config(parallel__mesh=mesh, model__dim=32))
  single = Experiment(make_config(model__dim=32), devices=jax.devices()[:1])
  batches = _batches(single, 3)
  sharded_losses, sharded_state = _losses(sharded, batches)
  single_losses, _ = _losses(single, batches)
  np.testing.assert_allclose(sharded_losses, single_losses, rtol=1e-5,
                             atol=1e-6)
  if mesh['fsdp'] > 1:  # fsdp really splits parameters over devices.
    specs = [s.spec for s in jax.tree.leaves(sharded.runner.state_sharding)]
    assert any('fsdp' in str(spec) for spec in specs)
    kernels = [x for x in jax.tree.leaves(sharded_state.params)
               if x.ndim >= 2 and x.shape[-1] % 8 == 0]
    assert any(len(x.sharding.device_set) == 8 and
               x.addressable_shards[0].data.size < x.size for x in kernels)


def test_tensor_parallel_transformers_equal_single_device(make_config):
  """Heads and MLP units over 'tensor', with activation constraints in every
  block (ViT and text transformer, cross-attention fusion; the audio
  transformer is the same block over spectrogram patches)."""
  variant = ('modalities=image+text,image=vit,text=transformer,'
             'fusion=cross_attention')
  mesh = dict(data=2, fsdp=1, tensor=4)
  sharded = Experiment(make_config(variant, parallel__mesh=mesh,
                                   model__dim=32))
  single = Experiment(make_config(variant, model__dim=32),
                      devices=jax.devices()[:1])
  batches = _batches(single, 3)
  np.testing.assert_allclose(_losses(sharded, batches)[0],
                             _losses(single, batches)[0], rtol=1e-5,
                             atol=1e-6)
  hlo = sharded.runner.lower_train_step(
      sharded.runner.init(sharded.init_rng),
      sharded.runner.put(batches[0])).as_text()
  # Heads / MLP units are pinned to 'tensor' inside the step.
  constraints = [line for line in hlo.splitlines()
                 if 'sharding_constraint' in line]
  assert any('"tensor"' in line for line in constraints), constraints[:5]


def test_tower_rules_override_the_rules_for_one_tower(make_config):
  config = make_config('text=transformer',
                       parallel__mesh=dict(data=1, fsdp=8, tensor=1),
                       model__dim=32)
  config.parallel.tower_rules.text = (('embed', None), ('vocab', None))
  experiment = Experiment(config)
  params = experiment.runner.state_sharding.params

  def split(tree):
    """Whether any leaf's spec names a mesh axis."""
    return any(any(s.spec) for s in jax.tree.leaves(tree))

  assert not split(params['text_encoder']) and not split(params['text_proj'])
  assert split(params['image_encoder']) and split(params['fusion'])
  # The optimizer state of the text tower follows its parameters.
  opt_specs = jax.tree_util.tree_leaves_with_path(
      experiment.runner.state_sharding.opt_state)
  text_opt = [s for path, s in opt_specs if 'text_encoder' in str(path)]
  assert text_opt and not split(text_opt)


def test_shard_report_gives_each_parameters_share_per_device(make_config):
  experiment = Experiment(make_config(
      parallel__mesh=dict(data=1, fsdp=8, tensor=1), model__dim=32))
  report = experiment.runner.describe(experiment.runner.restore_target())
  header, *rows = report.splitlines()
  assert 'sharded over the mesh' in header and '(0%)' not in header
  params = experiment.runner.restore_target().params
  assert len(rows) == len(jax.tree.leaves(params))
  by_name = {row.split()[0]: row for row in rows}
  # The [32, 32] projection kernel: its output 'embed' axis over fsdp (8).
  assert by_name['text_proj/kernel'].endswith(
      "(32, 32) (None, 'fsdp') 0.125 per device")
  assert by_name['head/bias'].endswith('1 per device')


def test_constrain_pins_activations_only_under_activation_sharding():
  mesh = sharding.make_mesh(dict(data=2, fsdp=1, tensor=4))
  rules = (('batch', ('data', 'fsdp')), ('mlp', 'tensor'), ('heads', 'tensor'))
  x = jnp.ones((4, 3, 8))

  def pinned(axes):
    with sharding.activation_sharding(mesh, rules):
      return jax.jit(lambda x: sharding.constrain(x, axes) * 2)(x)

  def assert_spec(y, spec):
    assert y.sharding.is_equivalent_to(NamedSharding(mesh, spec), y.ndim), (
        y.sharding)

  assert_spec(pinned(('batch', None, 'mlp')), P('data', None, 'tensor'))
  # 3 heads do not split over 4 tensor devices: replicated, not an error.
  assert_spec(pinned(('batch', 'heads', None)), P('data', None, None))
  # Outside the context (pmap, init, plain apply) it is the identity.
  assert sharding.constrain(x, ('batch', None, 'mlp')) is x


def test_pmap_matches_jit_in_training_and_evaluation(make_config):
  # A ResNet image tower: BatchNorm statistics must be averaged over devices
  # under pmap to match the global-batch statistics of the jit mode.
  config = make_config('image=resnet,modalities=image+text', num_train_steps=3)
  jit = Experiment(config)
  config.parallel.mode = 'pmap'
  pmap = Experiment(config)
  batches = _batches(jit, 3)
  jit_losses, jit_state = _losses(jit, batches)
  pmap_losses, pmap_state = _losses(pmap, batches)
  np.testing.assert_allclose(pmap_losses, jit_losses, rtol=0, atol=1e-5)
  jit_eval, pmap_eval = jit.evaluate(jit_state), pmap.evaluate(pmap_state)
  for name, value in jit_eval.items():
    np.testing.assert_allclose(pmap_eval[name], value, atol=1e-5, err_msg=name)
  pmap_state = pmap.runner.to_checkpoint(pmap_state)
  for a, b in zip(jax.tree.leaves(jit_state.batch_stats),
                  jax.tree.leaves(pmap_state.batch_stats)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
  assert jax.tree.leaves(jit_state.batch_stats), 'expected BatchNorm stats'


@pytest.mark.parametrize('mode', ['jit', 'pmap'])
def test_steps_are_traced_with_the_garbage_collector_paused(
    make_config, monkeypatch, mode):
  """The runner pauses Python's cyclic collector while its steps are traced
  (a trace's objects are all live until it ends), and leaves it as it was."""
  traced = []

  def recording(step):
    def step_fn(*args, **kwargs):
      traced.append((step.__name__, gc.isenabled()))
      return step(*args, **kwargs)
    return step_fn

  for name in ('train_step', 'eval_step'):
    monkeypatch.setattr(steps, name, recording(getattr(steps, name)))
  config = make_config(num_train_steps=1)
  config.parallel.mode = mode
  experiment = Experiment(config)
  runner = experiment.runner
  batch = next(experiment.train_iterator())
  state, _ = runner.train_step(runner.init(experiment.init_rng), batch)
  experiment.evaluate(state)
  assert {name for name, _ in traced} == {'train_step', 'eval_step'}
  assert not any(enabled for _, enabled in traced), traced
  assert gc.isenabled()
  gc.disable()  # A caller's own pause stays.
  try:
    runner.train_step(state, batch)
    assert not gc.isenabled()
  finally:
    gc.enable()
