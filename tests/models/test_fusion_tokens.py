"""Tests of the token-level fusion methods: mult, mbt, early, perceiver.

The generic tests in test_fusion.py cover them too (shapes, absent values,
gradients, missing keys, recompiles, dropout). These check what each method
promises on its own, on two modalities and tiny shapes; every forward is
jitted once per (method, knobs, input structure) and reused.
"""
import functools

import flax
import flax.linen as nn
import jax
import numpy as np
import pytest

from mmjax.errors import ConfigError
from mmjax.models import fusion  # noqa: F401  (registers the methods)
from mmjax.models import layers
from mmjax.registry import FUSIONS

NAMES = ('mult', 'mbt', 'early', 'perceiver')
MODALITIES = ('image', 'audio')
LENGTHS = {'image': 4, 'audio': 5}
B, D = 3, 8
# Valid steps per example (0: absent). Example 0: both present; 1: image
# only; 2: neither.
PADDED = {'image': (3, 4, 0), 'audio': (5, 0, 0)}


def make_tokens(seed=0, lengths=LENGTHS):
  """{m: [B, T_m, D]} standard normal (numpy: no per-shape RNG compile)."""
  rng = np.random.default_rng(seed)
  return {m: rng.standard_normal((B, n, D), np.float32)
          for m, n in lengths.items()}


def make_masks(valid=PADDED, lengths=LENGTHS):
  """{m: [B, T_m]} from valid steps {m: one per example, or one for all}."""
  return {m: np.arange(lengths[m])[None, :] <
             np.broadcast_to(valid[m], (B,))[:, None] for m in lengths}


def module(name, **knobs):
  return FUSIONS.get(name, field='model.fusion.name')(
      modalities=MODALITIES, dim=D, **knobs)


def init_shapes(name, lengths=LENGTHS, **knobs):
  """(module, variable shapes) of `name` for inputs of `lengths`, all valid;
  traced, not compiled."""
  fusion_module = module(name, **knobs)
  return fusion_module, jax.eval_shape(
      functools.partial(fusion_module.init, train=False), jax.random.key(0),
      make_tokens(0, lengths), make_masks(lengths, lengths))


@functools.lru_cache(maxsize=None)
def variables(name):
  """Variables of `name` (the knobs varied here keep its parameter tree),
  every one drawn from N(0, 0.5^2): unlike `init`, no bias or norm offset
  starts at zero, where it could hide a leak, and nothing compiles."""
  rng = np.random.default_rng(0)
  return jax.tree.map(
      lambda s: rng.normal(0, 0.5, s.shape).astype(s.dtype),
      init_shapes(name)[1])


@functools.lru_cache(maxsize=None)
def forward(name, knobs):
  """Jitted (FusionOutput, intermediates) of `name` with `knobs` (sorted
  items), one compile per input structure."""
  fusion_module = module(name, **dict(knobs))

  @jax.jit
  def apply(params, tokens, masks):
    out, state = fusion_module.apply(params, tokens, masks, train=False,
                                     mutable=['intermediates'])
    return out, state.get('intermediates', {})

  return apply


def run(name, tokens, masks, **knobs):
  return forward(name, tuple(sorted(knobs.items())))(variables(name), tokens,
                                                      masks)


def modality_tokens(out, m):
  """The slice of FusionOutput.tokens that holds modality m."""
  start = 0
  for other in MODALITIES:
    if other == m:
      return out.tokens[:, start:start + LENGTHS[m]]
    start += LENGTHS[other]


def without(masks, m):
  """`masks` with modality m absent in every example."""
  return {**masks, m: np.zeros_like(masks[m])}


NO_EXCHANGE = dict(num_layers=2, fusion_layer=2)


def test_mbt_without_exchange_is_late_fusion():
  tokens, masks = make_tokens(), make_masks()
  full = run('mbt', tokens, masks, **NO_EXCHANGE)[0]
  alone = {m: run('mbt', tokens, without(masks, o), **NO_EXCHANGE)[0]
           for m, o in (('image', 'audio'), ('audio', 'image'))}
  changed = run('mbt', {**tokens, 'audio': make_tokens(1)['audio']}, masks,
                **NO_EXCHANGE)[0]
  # Each modality's tokens ignore the other modality: removed or changed.
  for m in MODALITIES:
    np.testing.assert_allclose(modality_tokens(full, m),
                               modality_tokens(alone[m], m), atol=1e-6)
  np.testing.assert_allclose(modality_tokens(changed, 'image'),
                             modality_tokens(full, 'image'), atol=1e-6)
  assert not np.allclose(modality_tokens(changed, 'audio'),
                         modality_tokens(full, 'audio'))
  # pooled: the mean of the per-modality outputs over the present ones.
  np.testing.assert_allclose(
      full.pooled[0], (alone['image'].pooled[0] + alone['audio'].pooled[0]) / 2,
      rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(full.pooled[1], alone['image'].pooled[1],
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(full.pooled[2], 0)


def test_mbt_bottleneck_exchanges_only_between_present_modalities():
  tokens, masks = make_tokens(), make_masks()
  out = run('mbt', tokens, masks)[0]  # Default: exchange from layer 0 of 2.
  changed = run('mbt', {**tokens, 'audio': make_tokens(1)['audio']},
                masks)[0]
  image, image_changed = (modality_tokens(o, 'image') for o in (out, changed))
  # Example 0 has both: audio reaches image through the bottleneck.
  assert not np.allclose(image[0], image_changed[0])
  # Example 1 has no audio: an absent modality does not write into the
  # bottleneck, so its image tokens are those of a batch without audio.
  image_only = run('mbt', {'image': tokens['image']},
                   {'image': masks['image']})[0]
  np.testing.assert_allclose(image[1], image_only.tokens[1], atol=1e-6)


@pytest.mark.parametrize('name', ['mult', 'early'])
def test_examples_are_independent_and_absent_modalities_leave_no_trace(name):
  tokens, masks = make_tokens(), make_masks()
  out = run(name, tokens, masks)[0]
  # Other examples' values and presence (example 1 gains audio) do not
  # change example 0.
  others = make_tokens(1)
  other_tokens = {m: np.concatenate([tokens[m][:1], others[m][1:]])
                  for m in tokens}
  other_masks = make_masks({'image': (3, 2, 4), 'audio': (5, 5, 1)})
  changed = run(name, other_tokens, other_masks)[0]
  np.testing.assert_allclose(changed.pooled[0], out.pooled[0], atol=1e-6)
  np.testing.assert_allclose(changed.tokens[0], out.tokens[0], atol=1e-6)
  # Example 1's absent audio gives what no audio key at all gives.
  image_only = run(name, {'image': tokens['image']},
                   {'image': masks['image']})[0]
  np.testing.assert_allclose(out.pooled[1], image_only.pooled[1], rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(modality_tokens(out, 'image')[1],
                             image_only.tokens[1], rtol=1e-5, atol=1e-6)


def test_perceiver_output_shape_does_not_depend_on_token_count():
  for lengths in ({'image': 2, 'audio': 3}, {'image': 9, 'audio': 7}):
    perceiver, shapes = init_shapes('perceiver', lengths, num_latents=3)
    out, state = jax.eval_shape(
        functools.partial(perceiver.apply, train=False,
                          mutable=['intermediates']),
        shapes, make_tokens(0, lengths), make_masks(lengths, lengths))
    assert out.pooled.shape == (B, D)
    assert state['intermediates']['cross_attended'][0].shape == (B, 3, D)


def test_perceiver_latents_skip_cross_attention_without_inputs():
  tokens, masks = make_tokens(), make_masks()
  latents = nn.unbox(variables('perceiver'))['params']['latents']
  cross_attended = run('perceiver', tokens, masks)[1]['cross_attended'][0]
  # Example 2 has no modality: its latents are the learned ones, not an
  # average over masked keys; the others read their inputs.
  np.testing.assert_array_equal(cross_attended[2], latents)
  assert not np.allclose(cross_attended[0], latents)
  assert not np.allclose(cross_attended[1], latents)


def test_perceiver_repeats_share_weights_after_the_first_cross_attention():
  params = init_shapes('perceiver', cross_attends=3)[1]['params']
  assert set(params) == {'latents', 'modality_embedding', 'cross_attention0',
                         'cross_attention', 'latent_transformer'}


@pytest.mark.parametrize('name', NAMES)
def test_block_options_reach_every_block(name):
  remat, shapes = init_shapes(
      name, block_options=layers.BlockOptions(remat='full'))
  blocks = {path[:path.index('attn')] for path in
            flax.traverse_util.flatten_dict(shapes['params']) if 'attn' in path}
  jaxpr = jax.make_jaxpr(functools.partial(remat.apply, train=False))(
      shapes, make_tokens(), make_masks())
  # One rematerialised call (an equation with a checkpoint policy) per block.
  remats = [e for e in jaxpr.eqns if 'policy' in e.params]
  assert blocks and len(remats) == len(blocks)


@pytest.mark.parametrize('name, knobs, field', [
    ('mbt', dict(num_layers=2, fusion_layer=3), 'model.fusion.fusion_layer'),
    ('mbt', dict(fusion_layer=-1), 'model.fusion.fusion_layer'),
    ('mbt', dict(num_bottlenecks=0), 'model.fusion.num_bottlenecks'),
    ('mult', dict(self_depth=-1), 'model.fusion.self_depth'),
    ('perceiver', dict(num_latents=0), 'model.fusion.num_latents'),
] + [(name, dict(num_heads=3), 'model.fusion.num_heads') for name in NAMES])
def test_bad_knob_raises_config_error(name, knobs, field):
  with pytest.raises(ConfigError) as error:
    init_shapes(name, **knobs)
  assert error.value.field == field
