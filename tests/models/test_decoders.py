"""Tests of the text decoders (mmjax.models.decoders)."""
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.models import decoders

B, S, T, V, D = 2, 5, 6, 11, 16
# Every variant is checked for shapes and parameter names; the compiled
# behaviour tests run on RUN (untied Transformer output differs from the
# tied one in the output layer only, which the shape test covers).
VARIANTS = {
    'lstm_additive': lambda: decoders.LSTMDecoder(V, dim=D, hidden_dim=12),
    'lstm_dot_tied': lambda: decoders.LSTMDecoder(
        V, dim=D, hidden_dim=12, attention='dot', tie_embedding=True),
    'transformer_tied': lambda: decoders.TransformerDecoder(
        V, dim=D, depth=2, num_heads=2, mlp_dim=32, max_len=T),
    'transformer_untied': lambda: decoders.TransformerDecoder(
        V, dim=D, depth=2, num_heads=2, mlp_dim=32, max_len=T,
        tie_embedding=False),
}
RUN = ('lstm_additive', 'lstm_dot_tied', 'transformer_tied')
MEMORY_LENGTHS = jnp.array([5, 2])


def inputs(seed=0):
  """Decoder input ids [B, T], memory [B, S, 8] and its mask [B, S]."""
  ids = jax.random.randint(jax.random.key(seed), (B, T), 3, V)
  memory = jax.random.normal(jax.random.key(seed + 1), (B, S, 8))
  return ids, memory, jnp.arange(S)[None] < MEMORY_LENGTHS[:, None]


@functools.lru_cache(maxsize=None)
def build(name):
  """The module, its variables and its jitted (teacher-forced logits, logits
  decoded one token at a time through make_step_fn)."""
  module = VARIANTS[name]()
  variables = jax.jit(functools.partial(module.init, train=False))(
      jax.random.key(0), *inputs())

  @jax.jit
  def run(ids, memory, memory_mask):
    logits = module.apply(variables, ids, memory, memory_mask, train=False)
    step_fn, state = module.make_step_fn(variables, memory, memory_mask, T)

    def step(state, xs):
      logits, state = step_fn(xs[0], state, xs[1])
      return state, logits

    _, stepped = jax.lax.scan(step, state, (ids.T, jnp.arange(T)))
    return logits, stepped.transpose(1, 0, 2)

  return module, variables, run


@pytest.mark.parametrize('name', VARIANTS)
def test_shapes_and_logical_axes(name):
  module = VARIANTS[name]()
  variables = jax.eval_shape(functools.partial(module.init, train=False),
                             jax.random.key(0), *inputs())
  logits = jax.eval_shape(functools.partial(module.apply, train=False),
                          variables, *inputs())
  assert logits.shape == (B, T, V)
  specs = nn.get_partition_spec(variables)['params']
  assert tuple(specs['embedding']['embedding']) == ('vocab', 'embed')
  if 'untied' in name or 'additive' in name:
    assert tuple(specs['logits']['kernel']) == ('embed', 'vocab')
  else:
    assert 'logits' not in specs  # Tied: the embedding table is the output.
  every_spec = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(
      x, jax.sharding.PartitionSpec))
  assert all(any(axis is not None for axis in spec) for spec in every_spec
             if len(spec) > 1)  # Every matrix shards along some axis.


@pytest.mark.parametrize('name', RUN)
def test_future_tokens_do_not_change_earlier_logits(name):
  _, _, run = build(name)
  ids, memory, memory_mask = inputs()
  changed = ids.at[:, 3].set((ids[:, 3] + 1 - 3) % (V - 3) + 3)
  logits, _ = run(ids, memory, memory_mask)
  new_logits, _ = run(changed, memory, memory_mask)
  np.testing.assert_allclose(new_logits[:, :3], logits[:, :3], atol=1e-6)
  assert np.abs(new_logits[:, 3] - logits[:, 3]).max() > 1e-4


@pytest.mark.parametrize('name', RUN)
def test_masked_memory_is_ignored(name):
  _, _, run = build(name)
  ids, memory, memory_mask = inputs()
  noise = 100 * jax.random.normal(jax.random.key(9), memory.shape)
  corrupted = jnp.where(memory_mask[..., None], memory, noise)
  logits, _ = run(ids, memory, memory_mask)
  np.testing.assert_allclose(run(ids, corrupted, memory_mask)[0], logits,
                             atol=1e-5)
  # ... while a valid memory token does change the logits.
  changed = memory.at[:, 0].add(jax.random.normal(jax.random.key(5), (8,)))
  assert np.abs(run(ids, changed, memory_mask)[0] - logits).max() > 1e-4


@pytest.mark.parametrize('name', RUN)
def test_one_token_steps_match_teacher_forcing(name):
  """The LSTM state / Transformer KV cache reproduce the full pass."""
  _, _, run = build(name)
  logits, stepped = run(*inputs())
  np.testing.assert_allclose(stepped, logits, atol=1e-5)


def test_max_len_is_checked():
  module = VARIANTS['transformer_tied']()
  ids, memory, memory_mask = inputs()
  too_long = jnp.concatenate([ids, ids], axis=1)
  with pytest.raises(ValueError, match='max_len'):
    module.init(jax.random.key(0), too_long, memory, memory_mask, train=False)
