"""Tests of greedy, sampling and beam search (mmjax.decoding)."""
import functools
import itertools
import math

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np
import pytest

from mmjax import decoding
from mmjax.models import decoders

B, S, V, MAX_LEN = 8, 5, 13, 6
BOS, EOS = 1, 2


# A toy model whose next-token distribution depends on the previous token
# only, so the best sequences are known by hand. Ids: 2 EOS, 3 'a', 4 'b'.
# After BOS: EOS .5, a .45, b .05; after a: EOS .8, b .2; after b: EOS 1.
TOY = np.zeros((5, 5))
TOY[:, EOS] = 1.0
TOY[BOS] = [0, 0, .5, .45, .05]
TOY[3] = [0, 0, .8, 0, .2]


def toy_step_fn(calls):
  """The toy's StepFn; appends 1 to `calls` (on the host) per step run."""
  def step_fn(tokens, state, step):
    jax.debug.callback(lambda: calls.append(1))
    return jnp.log(jnp.asarray(TOY, jnp.float32))[tokens], state
  return step_fn


@functools.lru_cache(maxsize=None)
def model():
  """A tiny Transformer decoder, its variables and a memory.

  The initial parameters are scaled up 3x so that the logits are far from
  uniform: greedy decodes then vary across rows and some end with EOS. One
  block: test_decoders checks the caches of a deeper stack.
  """
  module = decoders.TransformerDecoder(V, dim=16, depth=1, num_heads=2,
                                       mlp_dim=32, max_len=MAX_LEN)
  memory = jax.random.normal(jax.random.key(0), (B, S, 16))
  memory_mask = jnp.arange(S)[None] < jnp.array([5, 4, 3, 2, 1, 5, 4, 3])[:,
                                                                          None]
  ids = jnp.full((B, MAX_LEN), BOS, jnp.int32)
  variables = jax.jit(functools.partial(module.init, train=False))(
      jax.random.key(1), ids, memory, memory_mask)
  return module, jax.tree.map(lambda x: 3 * x, variables), memory, memory_mask


def uncached_step_fn(module, variables, memory, memory_mask):
  """A StepFn that reruns the whole prefix (state: tokens [N, MAX_LEN])."""
  def step_fn(tokens, prefix, step):
    prefix = prefix.at[:, step].set(tokens)
    logits = module.apply(variables, prefix, memory, memory_mask, train=False)
    return logits[:, step], prefix
  return step_fn


@functools.lru_cache(maxsize=None)
def results():
  """Every decode of the model, compiled as one program (one compile is
  much faster than one per method): {name: (tokens, scores)} as numpy."""
  module, variables, memory, memory_mask = model()
  args = dict(batch_size=B, max_len=MAX_LEN, bos_id=BOS, eos_id=EOS)

  def step_fns(beam_size):
    """(cached, uncached) StepFns with their initial states."""
    uncached = uncached_step_fn(
        module, variables,
        *decoding.tile_beams((memory, memory_mask), beam_size))
    return (module.make_step_fn(variables, memory, memory_mask, MAX_LEN,
                                beam_size),
            (uncached, jnp.zeros((B, MAX_LEN), jnp.int32)))

  @jax.jit
  def run():
    (cached, _), (cached3, uncached3) = step_fns(1), step_fns(3)
    return {
        'greedy': decoding.greedy(*cached, **args),
        'sample_top1': decoding.sample(*cached, jax.random.key(3), top_k=1,
                                       temperature=2.0, **args),
        'beam1': decoding.beam_search(*cached, beam_size=1, **args),
        'beam3': decoding.beam_search(*cached3, beam_size=3, **args),
        'beam3_uncached': decoding.beam_search(*uncached3, beam_size=3,
                                               **args),
    }

  return jax.tree.map(np.asarray, run())


def test_greedy_pads_after_eos_and_scores_its_tokens():
  tokens, log_prob = results()['greedy']
  assert tokens.shape == (B, MAX_LEN) and log_prob.shape == (B,)
  after_eos = (tokens == EOS).cumsum(axis=1) - (tokens == EOS) > 0
  assert after_eos.any(axis=1).sum() >= 2  # Some rows end early.
  assert (tokens[after_eos] == 0).all()
  assert (tokens[~after_eos] != 0).mean() > 0.9  # PAD only after EOS.
  # The scores are the log-probabilities of the tokens under the model.
  module, variables, memory, memory_mask = model()
  inputs = decoding.shift_right(jnp.asarray(tokens), BOS)
  log_probs = jax.nn.log_softmax(module.apply(variables, inputs, memory,
                                              memory_mask, train=False))
  token_log_probs = np.take_along_axis(np.asarray(log_probs),
                                       tokens[..., None], -1)[..., 0]
  np.testing.assert_allclose(
      log_prob, np.where(after_eos, 0, token_log_probs).sum(axis=1),
      rtol=1e-5)


def test_cached_decoding_matches_uncached():
  """The KV cache gives the tokens of rerunning the whole prefix, in beam
  search (whose beams also reorder the cache)."""
  cached = results()['beam3']
  uncached = results()['beam3_uncached']
  np.testing.assert_array_equal(cached[0], uncached[0])
  np.testing.assert_allclose(cached[1], uncached[1], rtol=1e-5)


def test_beam_size_one_is_greedy():
  tokens, log_prob = results()['greedy']
  beam_tokens, beam_scores = results()['beam1']
  np.testing.assert_array_equal(beam_tokens[:, 0], tokens)
  np.testing.assert_allclose(beam_scores[:, 0], log_prob, rtol=1e-5)


def test_beam_search_beats_or_ties_greedy():
  _, log_prob = results()['greedy']
  tokens, scores = results()['beam3']
  assert tokens.shape == (B, 3, MAX_LEN) and scores.shape == (B, 3)
  assert (np.diff(scores, axis=1) <= 0).all()  # Best first.
  assert (scores[:, 0] >= log_prob - 1e-5).all()
  assert (scores[:, 0] > log_prob + 1e-3).any()  # Beams found better ones.


def test_sampling_with_top_k_one_is_greedy():
  tokens, log_prob = results()['greedy']
  sampled, sampled_log_prob = results()['sample_top1']
  np.testing.assert_array_equal(sampled, tokens)
  np.testing.assert_allclose(sampled_log_prob, log_prob, rtol=1e-5)


def test_sharded_batch_decodes_the_same():
  module, variables, memory, memory_mask = model()
  mesh = Mesh(np.array(jax.devices()[:8]), ('data',))
  memory, memory_mask = jax.device_put(
      (memory, memory_mask), NamedSharding(mesh, P('data')))

  @jax.jit
  def run(memory, memory_mask):
    step_fn, state = module.make_step_fn(variables, memory, memory_mask,
                                         MAX_LEN)
    return decoding.greedy(step_fn, state, batch_size=B, max_len=MAX_LEN,
                           bos_id=BOS, eos_id=EOS)[0]

  tokens = run(memory, memory_mask)
  assert len(tokens.sharding.device_set) == 8
  np.testing.assert_array_equal(np.asarray(tokens), results()['greedy'][0])


def test_top_k_and_top_p_filtering():
  probs = jnp.array([0.15, 0.5, 0.05, 0.3])
  kept = lambda **kw: set(np.flatnonzero(np.isfinite(
      decoding.filter_logits(jnp.log(probs), **kw))))
  # The smallest set of most likely tokens holding at least top_p.
  assert kept(top_p=0.75) == {1, 3}  # .5 + .3 = .8 >= .75.
  assert kept(top_p=0.85) == {0, 1, 3}  # .8 < .85 <= .95.
  assert kept(top_p=0.5) == {1}
  assert kept(top_p=0.01) == {1}  # The top token always stays.
  assert kept(top_k=2) == {1, 3}
  assert kept(top_k=3, top_p=0.75) == {1, 3}


def test_sampling_follows_the_filtered_tempered_distribution():
  probs = np.array([0., 0., .1, .2, .3, .4])  # Never PAD or BOS.
  rows = 4000
  settings = (dict(), dict(temperature=0.5), dict(top_k=2), dict(top_p=0.6))

  @jax.jit
  def draw():
    step_fn = lambda tokens, state, step: (
        jnp.broadcast_to(jnp.log(jnp.asarray(probs, jnp.float32)),
                         (rows, len(probs))), state)
    return [decoding.sample(step_fn, None, jax.random.key(i),
                            batch_size=rows, max_len=1, bos_id=BOS,
                            eos_id=EOS, **kwargs)[0][:, 0]
            for i, kwargs in enumerate(settings)]

  plain, cold, top_k, top_p = [
      np.bincount(np.asarray(t), minlength=len(probs)) / rows
      for t in draw()]
  np.testing.assert_allclose(plain, probs, atol=0.03)
  # Temperature 0.5 squares the probabilities (then renormalised).
  np.testing.assert_allclose(cold, probs ** 2 / (probs ** 2).sum(),
                             atol=0.03)
  # top_k=2 keeps .3 and .4; top_p=0.6 keeps .4 and .3 (.4 < .6 <= .7).
  for frequencies in (top_k, top_p):
    np.testing.assert_allclose(frequencies, [0, 0, 0, 0, 3 / 7, 4 / 7],
                               atol=0.03)


def toy_beam_search(alpha, calls):
  return jax.jit(functools.partial(
      decoding.beam_search, toy_step_fn(calls), None, batch_size=1,
      max_len=5, bos_id=BOS, eos_id=EOS, beam_size=2, alpha=alpha))()


def test_length_penalty_and_eos_early_stop():
  # Without a penalty: 'EOS' (log .5) beats 'a EOS' (log .36).
  calls = []
  tokens, scores = toy_beam_search(0.0, calls)
  np.testing.assert_array_equal(tokens[0], [[EOS, 0, 0, 0, 0],
                                            [3, EOS, 0, 0, 0]])
  np.testing.assert_allclose(scores[0], [math.log(.5), math.log(.36)],
                             rtol=1e-6)
  # After 2 steps both beams have ended and the alive 'a b' (log .09)
  # cannot beat them: the loop stops before max_len = 5.
  assert len(calls) == 2
  # With alpha = 4, length 2 is divided by (7 / 6) ** 4 = 1.85: 'a EOS'
  # (-0.55) beats 'EOS' (-0.69) and 'a b EOS' (log .09 / (8 / 6) ** 4).
  calls = []
  tokens, scores = toy_beam_search(4.0, calls)
  np.testing.assert_array_equal(tokens[0], [[3, EOS, 0, 0, 0],
                                            [EOS, 0, 0, 0, 0]])
  np.testing.assert_allclose(
      scores[0], [math.log(.36) / (7 / 6) ** 4, math.log(.5)], rtol=1e-6)
  # Step 3 ends 'a b EOS' and leaves no alive hypothesis.
  assert len(calls) == 3


def test_wide_beam_search_is_exhaustive_search():
  """With a beam wider than all hypotheses, beam search ranks every
  sequence as brute-force enumeration does, length penalty included."""
  length, alpha, words = 3, 0.7, (EOS, 3, 4)
  # Random next-token log-probabilities given (step, previous token); PAD
  # and BOS are never emitted.
  logits = np.random.default_rng(4).normal(size=(length, 5, 5))
  logits[..., :2] = -np.inf
  log_probs = np.asarray(jax.nn.log_softmax(jnp.asarray(logits)))

  def step_fn(tokens, state, step):
    return jnp.asarray(log_probs)[step, tokens], state

  def score(seq):
    prev, total = BOS, 0.0
    for step, token in enumerate(seq):
      total, prev = total + log_probs[step, prev, token], token
    return total / ((5 + len(seq)) / 6) ** alpha

  hypotheses = [seq for n in range(1, length + 1)
                for seq in itertools.product(words, repeat=n)
                if EOS not in seq[:-1] and (seq[-1] == EOS or n == length)]
  expected = sorted(((score(h), h) for h in hypotheses), reverse=True)
  tokens, scores = jax.jit(lambda: decoding.beam_search(
      step_fn, None, batch_size=1, max_len=length, bos_id=BOS, eos_id=EOS,
      beam_size=len(hypotheses), alpha=alpha))()
  np.testing.assert_allclose(scores[0], [s for s, _ in expected], rtol=1e-5)
  for row, (_, seq) in zip(np.asarray(tokens[0]), expected):
    assert tuple(row) == seq + (0,) * (length - len(seq))


def test_greedy_stops_when_every_row_has_ended():
  calls = []
  tokens, log_prob = jax.jit(lambda: decoding.greedy(
      toy_step_fn(calls), None, batch_size=2, max_len=5, bos_id=BOS,
      eos_id=EOS))()
  np.testing.assert_array_equal(tokens, [[EOS, 0, 0, 0, 0]] * 2)
  np.testing.assert_allclose(log_prob, [math.log(.5)] * 2, rtol=1e-6)
  assert len(calls) == 1


def test_teacher_forcing_inputs_and_eos():
  ids = jnp.array([[5, 6, 7, 0], [5, 6, 7, 8]])
  mask = ids != 0
  targets, target_mask = decoding.append_eos(ids, mask, EOS)
  np.testing.assert_array_equal(targets, [[5, 6, 7, EOS], [5, 6, 7, EOS]])
  np.testing.assert_array_equal(target_mask, [[1, 1, 1, 1]] * 2)
  # A full row ends with EOS in place of its last id.
  targets, target_mask = decoding.append_eos(ids[:, :3], mask[:, :3], EOS)
  np.testing.assert_array_equal(targets, [[5, 6, EOS], [5, 6, EOS]])
  np.testing.assert_array_equal(target_mask, [[1, 1, 1]] * 2)
  targets, target_mask = decoding.append_eos(jnp.array([[5, 0, 0]]),
                                             jnp.array([[1, 0, 0]]), EOS)
  np.testing.assert_array_equal(targets, [[5, EOS, 0]])
  np.testing.assert_array_equal(target_mask, [[1, 1, 0]])
  np.testing.assert_array_equal(decoding.shift_right(targets, BOS),
                                [[BOS, 5, EOS]])


@pytest.mark.parametrize('method, kwargs, match', [
    ('beam_search', dict(alpha=-1.0), 'alpha'),
    ('beam_search', dict(beam_size=0), 'beam_size'),
    ('sample', dict(rng=jax.random.key(0), temperature=0.0), 'temperature'),
    ('sample', dict(rng=jax.random.key(0), top_p=0.0), 'top_p'),
    ('greedy', dict(max_len=0), 'max_len'),
])
def test_bad_arguments_are_rejected(method, kwargs, match):
  args = dict(batch_size=1, max_len=5, bos_id=BOS, eos_id=EOS)
  with pytest.raises(ValueError, match=match):
    getattr(decoding, method)(toy_step_fn([]), None, **{**args, **kwargs})
