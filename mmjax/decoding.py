"""Autoregressive decoding: greedy, sampling and beam search, jit-compiled.

Every function runs one `lax.while_loop` over at most `max_len` steps of a
`StepFn`, so decoding compiles once per shape and has no Python loop over
time. Everything is batched over the leading axis and pure `jnp`, so under
`jax.jit` with a batch-sharded input the decode is sharded the same way.

Token conventions (defined in `mmjax.tokens`):
  * id `PAD_ID` (0) is padding.
  * `bos_id` and `eos_id` are arguments of every function here; a task picks
    them (`tokens.special_ids`: the two ids after the target vocabulary).
  * A target sequence is the tokenizer's ids followed by `eos_id`
    (`append_eos`); the decoder is teacher-forced on `bos_id` followed by the
    target without its last token (`shift_right`).
  * Decoded tokens [B, max_len] exclude `bos_id`, include the `eos_id` that
    ends a sequence, and hold `PAD_ID` after it.

A `StepFn` is `step_fn(tokens, state, step) -> (logits, state)`: tokens [N]
are the previous tokens (`bos_id` at step 0), `step` the int32 position being
predicted, logits [N, V]. `state` is a pytree of the decoder's recurrent
state or key/value cache whose leaves are [N, ...]; scalar leaves (a cache
index shared by all rows) are allowed and never reordered. Beam search calls
it with N = B * beam_size rows (example-major: row b * beam_size + k), so a
step function that closes over per-example context (encoder tokens) tiles it
with `tile_beams`; the initial state is given with B rows and tiled here.
"""
from typing import Any, Callable, Tuple

import jax
import jax.numpy as jnp

from mmjax.tokens import PAD_ID

State = Any
StepFn = Callable[[jax.Array, State, jax.Array], Tuple[jax.Array, State]]


def shift_right(targets: jax.Array, bos_id: int) -> jax.Array:
  """Teacher-forcing inputs: bos_id then targets[:, :-1]. [B, T] -> [B, T]."""
  bos = jnp.full(targets.shape[:1] + (1,), bos_id, targets.dtype)
  return jnp.concatenate([bos, targets[:, :-1]], axis=1)


def append_eos(ids: jax.Array, mask: jax.Array, eos_id: int
               ) -> Tuple[jax.Array, jax.Array]:
  """Writes eos_id after the valid (prefix) ids: [B, T] ids, mask -> same.

  A sequence that fills all T positions has its last id replaced by eos_id,
  so every target ends; size T one larger than the longest text to avoid it.
  """
  end = jnp.minimum(mask.sum(axis=1), ids.shape[1] - 1)[:, None]
  position = jnp.arange(ids.shape[1])[None, :]
  ids = jnp.where(position == end, eos_id, jnp.where(position < end, ids,
                                                     PAD_ID))
  return ids.astype(jnp.int32), position <= end


def tile_beams(tree: Any, beam_size: int) -> Any:
  """Repeats every [B, ...] leaf of `tree` to [B * beam_size, ...]
  (example-major, as `beam_search` lays out its rows); scalars are kept."""
  return jax.tree.map(
      lambda x: x if x.ndim == 0 else jnp.repeat(x, beam_size, axis=0), tree)


def _gather_rows(tree: Any, index: jax.Array) -> Any:
  """Leaves [B * K, ...] -> [B * K', ...]: row (b, k') <- (b, index[b, k']).

  index: [B, K'] beam indices. Scalar leaves are shared and kept.
  """
  batch, new_beams = index.shape

  def gather(x):
    if x.ndim == 0:
      return x
    x = x.reshape((batch, -1) + x.shape[1:])
    x = jnp.take_along_axis(
        x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=1)
    return x.reshape((batch * new_beams,) + x.shape[2:])

  return jax.tree.map(gather, tree)


def filter_logits(logits: jax.Array, top_k: int = 0,
                  top_p: float = 1.0) -> jax.Array:
  """Logits [..., V] with -inf outside the top-k and the top-p nucleus.

  top_k: keep the k most likely tokens (0: all). top_p: keep the smallest set
  of most likely tokens whose probability sums to at least top_p (1.0: all);
  the most likely token is always kept. Ties at a cut-off are all kept.
  """
  if not isinstance(top_k, int) or top_k < 0:
    raise ValueError(f'top_k must be an int >= 0 (0: no limit), got {top_k!r}')
  if not 0 < top_p <= 1:
    raise ValueError(f'top_p must be in (0, 1], got {top_p!r}')
  neg_inf = jnp.array(-jnp.inf, logits.dtype)
  if top_k:
    kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
    logits = jnp.where(logits < kth, neg_inf, logits)
  if top_p < 1.0:
    sorted_logits = -jnp.sort(-logits, axis=-1)
    probs = jax.nn.softmax(sorted_logits.astype(jnp.float32), axis=-1)
    # A token stays when the mass of the tokens before it is below top_p;
    # the least likely one kept sets the cut-off.
    before = jnp.cumsum(probs, axis=-1) - probs
    cutoff = jnp.min(jnp.where(before < top_p, sorted_logits, jnp.inf),
                     axis=-1, keepdims=True)
    logits = jnp.where(logits < cutoff, neg_inf, logits)
  return logits


def _check_length(max_len: int) -> None:
  if not isinstance(max_len, int) or max_len < 1:
    raise ValueError(f'max_len must be a positive int, got {max_len!r}')


def _decode(step_fn: StepFn, state: State, choose: Callable, batch_size: int,
            max_len: int, bos_id: int, eos_id: int
            ) -> Tuple[jax.Array, jax.Array]:
  """The greedy / sampling loop; choose(logits [B, V], step) -> ids [B].

  Stops when every row has emitted eos_id or after max_len steps. Returns
  tokens [B, max_len] and the summed model log-probabilities [B] of each
  row's tokens up to and including eos_id.
  """
  _check_length(max_len)

  def cond(carry):
    step, _, _, done, _, _ = carry
    return (step < max_len) & ~done.all()

  def body(carry):
    step, last, state, done, tokens, log_prob = carry
    logits, state = step_fn(last, state, step)
    token = choose(logits, step).astype(jnp.int32)
    token_log_prob = jnp.take_along_axis(
        jax.nn.log_softmax(logits.astype(jnp.float32)), token[:, None],
        axis=-1)[:, 0]
    token = jnp.where(done, PAD_ID, token)
    log_prob = log_prob + jnp.where(done, 0.0, token_log_prob)
    tokens = jax.lax.dynamic_update_slice(tokens, token[:, None], (0, step))
    return step + 1, token, state, done | (token == eos_id), tokens, log_prob

  carry = (jnp.int32(0), jnp.full((batch_size,), bos_id, jnp.int32), state,
           jnp.zeros((batch_size,), bool),
           jnp.full((batch_size, max_len), PAD_ID, jnp.int32),
           jnp.zeros((batch_size,), jnp.float32))
  *_, tokens, log_prob = jax.lax.while_loop(cond, body, carry)
  return tokens, log_prob


def greedy(step_fn: StepFn, state: State, *, batch_size: int, max_len: int,
           bos_id: int, eos_id: int) -> Tuple[jax.Array, jax.Array]:
  """Most likely token at every step.

  Returns tokens [B, max_len] (PAD_ID after eos_id) and their summed
  log-probabilities [B].
  """
  return _decode(step_fn, state, lambda logits, _: logits.argmax(axis=-1),
                 batch_size, max_len, bos_id, eos_id)


def sample(step_fn: StepFn, state: State, rng: jax.Array, *, batch_size: int,
           max_len: int, bos_id: int, eos_id: int, temperature: float = 1.0,
           top_k: int = 0, top_p: float = 1.0
           ) -> Tuple[jax.Array, jax.Array]:
  """Samples each token from softmax(logits / temperature) restricted to the
  top_k tokens and the top_p nucleus (`filter_logits`).

  The key of step t is `fold_in(rng, t)`. Returns tokens [B, max_len]
  (PAD_ID after eos_id) and their summed log-probabilities [B] under the
  model (before temperature and filtering).
  """
  if not temperature > 0:
    raise ValueError(f'temperature must be > 0, got {temperature!r}; use '
                     'greedy for the argmax.')

  def choose(logits, step):
    logits = filter_logits(logits.astype(jnp.float32) / temperature, top_k,
                           top_p)
    return jax.random.categorical(jax.random.fold_in(rng, step), logits)

  return _decode(step_fn, state, choose, batch_size, max_len, bos_id, eos_id)


def length_penalty(length: jax.Array, alpha: float) -> jax.Array:
  """GNMT length normalisation ((5 + length) / 6) ** alpha (Wu et al., 2016);
  beam scores are log-probabilities divided by it (alpha 0: no penalty)."""
  return ((5.0 + length) / 6.0) ** alpha


def beam_search(step_fn: StepFn, state: State, *, batch_size: int,
                max_len: int, bos_id: int, eos_id: int, beam_size: int = 4,
                alpha: float = 0.0) -> Tuple[jax.Array, jax.Array]:
  """Beam search with GNMT length penalty `alpha` and early stopping.

  Each step extends the `beam_size` alive hypotheses by every token and
  ranks the best 2 * beam_size extensions; those ending in eos_id among the
  first beam_size join the finished set (scored log-prob / length_penalty(
  length incl. eos_id)) and the best beam_size not ending in eos_id stay
  alive. The loop stops once no alive hypothesis of any example can still
  beat its worst finished one (an alive score can at best reach log-prob /
  length_penalty(max_len), as alpha >= 0), or after max_len steps.
  Hypotheses still alive then compete with the finished ones at their
  length.

  Args:
    step_fn: see the module docstring; called with B * beam_size rows.
    state: the initial decoder state with B rows (tiled here).
  Returns:
    tokens [B, beam_size, max_len] best first (PAD_ID after eos_id) and
    their scores [B, beam_size].
  """
  _check_length(max_len)
  if not isinstance(beam_size, int) or beam_size < 1:
    raise ValueError(f'beam_size must be a positive int, got {beam_size!r}')
  if not alpha >= 0:
    raise ValueError(f'alpha (length penalty) must be >= 0, got {alpha!r}')
  beams, neg_inf = beam_size, jnp.float32(-jnp.inf)

  def top(scores, k, *arrays):
    """The k best of scores [B, M], their indices and the matching rows of
    arrays [B, M, ...]."""
    scores, index = jax.lax.top_k(scores, k)
    return (scores, index) + tuple(
        jnp.take_along_axis(a, index.reshape(index.shape + (1,) * (a.ndim - 2)),
                            axis=1) for a in arrays)

  def cond(carry):
    step, alive_log_prob, _, _, finished_score, _ = carry
    best_alive = alive_log_prob[:, 0] / length_penalty(max_len, alpha)
    done = (finished_score.min(axis=1) > best_alive) | (best_alive == neg_inf)
    return (step < max_len) & ~done.all()

  def body(carry):
    step, alive_log_prob, alive, state, finished_score, finished = carry
    last = jnp.where(step == 0, bos_id,
                     alive[:, :, jnp.maximum(step - 1, 0)]).reshape(-1)
    logits, state = step_fn(last, state, step)
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
    vocab = log_probs.shape[-1]
    scores = (alive_log_prob[..., None] +
              log_probs.reshape(batch_size, beams, vocab)).reshape(
                  batch_size, beams * vocab)
    scores, index = jax.lax.top_k(scores, 2 * beams)
    origin, token = index // vocab, index % vocab  # [B, 2K]
    seqs = jnp.take_along_axis(alive, origin[..., None], axis=1)
    seqs = seqs.at[:, :, step].set(token)
    ended = token == eos_id
    alive_log_prob, keep, seqs_alive = top(
        jnp.where(ended, neg_inf, scores), beams, seqs)
    state = _gather_rows(state, jnp.take_along_axis(origin, keep, axis=1))
    # As in fairseq, a hypothesis ends only when its eos_id extension ranks
    # among the best beam_size candidates; so beam_size 1 is greedy search.
    ended = ended & (jnp.arange(2 * beams) < beams)
    ended_score = jnp.where(ended, scores / length_penalty(step + 1, alpha),
                            neg_inf)
    finished_score, _, finished = top(
        jnp.concatenate([finished_score, ended_score], axis=1), beams,
        jnp.concatenate([finished, seqs], axis=1))
    return step + 1, alive_log_prob, seqs_alive, state, finished_score, finished

  empty = jnp.full((batch_size, beams, max_len), PAD_ID, jnp.int32)
  # Only beam 0 is alive at first, so the beams do not start as duplicates.
  alive_log_prob = jnp.tile(
      jnp.array([0.0] + [-jnp.inf] * (beams - 1), jnp.float32), (batch_size, 1))
  carry = (jnp.int32(0), alive_log_prob, empty, tile_beams(state, beams),
           jnp.full((batch_size, beams), neg_inf), empty)
  step, alive_log_prob, alive, _, finished_score, finished = (
      jax.lax.while_loop(cond, body, carry))
  scores, _, tokens = top(
      jnp.concatenate([finished_score,
                       alive_log_prob / length_penalty(step, alpha)], axis=1),
      beams, jnp.concatenate([finished, alive], axis=1))
  return tokens, scores
