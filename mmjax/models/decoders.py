"""Text decoders over encoder tokens: an LSTM with attention, a Transformer.

Both take decoder input ids [B, T] (teacher forcing: `decoding.shift_right`
of the targets, see `mmjax.decoding` for the token conventions), encoder or
fusion tokens `memory` [B, S, D_m] and their mask [B, S], and return logits
[B, T, V]; position t sees inputs up to t only. Padding at the end of the
ids needs no mask: no valid position attends to it, and the task's loss
(`mmjax.tasks.seq2seq`) drops the logits at padded targets.

`make_step_fn` turns a decoder and its variables into the one-token
`decoding.StepFn` that greedy, sampling and beam search drive. The LSTM's
recurrent state or the Transformer's key/value cache is the decoding state,
so the decoder's own tokens cost one token's work per step; attention over
the memory projects its S tokens again at every step (as Flax's WMT example
does), which a later change could cache too.

`CTCHead` is the non-autoregressive alternative for speech recognition: a
linear layer over the encoder tokens trained with CTC (Graves et al., 2006;
the loss is the task's, `mmjax.tasks.seq2seq.ctc_losses`), decoded by
`ctc_greedy` (best path).

The decoders are registered in `mmjax.registry.DECODERS` ('lstm',
'transformer', 'ctc') for `config.model.decoder`.
"""
import functools
from typing import Any, ClassVar, Dict, Optional, Tuple

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.decoding import StepFn, tile_beams
from mmjax.models import layers
from mmjax.registry import DECODERS
from mmjax.tokens import CTC_BLANK_ID

Variables = Dict[str, Any]


def _embedding(vocab_size: int, dim: int, dtype: layers.Dtype,
               param_dtype: layers.Dtype) -> nn.Embed:
  # The module itself (not `text.embed_tokens`'s output) is needed so that a
  # tied output layer can `attend` with the same table.
  return nn.Embed(vocab_size, dim, dtype=dtype, param_dtype=param_dtype,
                  name='embedding',
                  embedding_init=layers.kernel(('vocab', 'embed'),
                                               nn.linear.default_embed_init))


def _output_logits(x: jax.Array, embedding: nn.Embed, tie: bool,
                   dtype: layers.Dtype, param_dtype: layers.Dtype
                   ) -> jax.Array:
  """[..., D] -> logits [..., V] in the caller's scope: the embedding table
  transposed (tied) or a dense layer `logits` (untied)."""
  if tie:
    # Scaled as in Flax's WMT example: the table's rows have unit-scale
    # entries, so raw dot products grow with the width D.
    return embedding.attend(x) / jnp.sqrt(x.shape[-1]).astype(x.dtype)
  return layers.dense(embedding.num_embeddings, 'embed', 'vocab', dtype,
                      name='logits', param_dtype=param_dtype)(x)


def _check_vocab(vocab_size: Optional[int]) -> None:
  if vocab_size is None:
    raise ValueError('text decoders need vocab_size (the target vocabulary '
                     'size, including the ids chosen for BOS and EOS).')


LSTM_ATTENTION = ('additive', 'dot')


class _AttentionLSTMStep(nn.Module):
  """One step of the attention LSTM (Luong et al., 2015, input feeding).

  carry: ((c, h) [N, hidden_dim] each, attentional vector [N, dim]).
  x: embedded previous token [N, dim]; keys: the memory projected for the
  score [N, S, hidden_dim]; memory [N, S, D_m], memory_mask [N, S].
  Returns (carry, attentional vector [N, dim]). The LSTM reads the token and
  the previous attentional vector; its output h queries the memory;
  tanh(W [h; context]) is the step's output.
  """
  hidden_dim: int
  attention: str
  dtype: layers.Dtype
  param_dtype: layers.Dtype

  @nn.compact
  def __call__(self, carry, x: jax.Array, keys: jax.Array,
               memory: jax.Array, memory_mask: jax.Array):
    lstm, feed = carry
    dim = x.shape[-1]
    dense = functools.partial(layers.dense, dtype=self.dtype,
                              param_dtype=self.param_dtype)
    lstm, h = nn.OptimizedLSTMCell(
        self.hidden_dim, dtype=self.dtype, param_dtype=self.param_dtype,
        name='cell', kernel_init=layers.kernel(('embed', 'mlp')),
        recurrent_kernel_init=layers.kernel((None, 'mlp'),
                                            nn.initializers.orthogonal()),
        bias_init=layers.bias(('mlp',)))(lstm, jnp.concatenate([x, feed], -1))
    if self.attention == 'additive':  # Bahdanau: v . tanh(W_q h + W_k m).
      query = dense(self.hidden_dim, None, 'mlp', name='query')(h)
      scores = dense(1, 'mlp', None, use_bias=False, name='score')(
          jnp.tanh(keys + einops.rearrange(query, 'n h -> n 1 h')))[..., 0]
    else:  # Luong's 'general' score: h . W_k m.
      scores = einops.einsum(h, keys, 'n h, n s h -> n s')
    scores = jnp.where(memory_mask.astype(bool), scores.astype(jnp.float32),
                       jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
    context = einops.einsum(weights, memory, 'n s, n s d -> n d')
    out = jnp.tanh(dense(dim, None, 'embed', name='combine')(
        jnp.concatenate([h, context], axis=-1)))
    return (lstm, out), out


@DECODERS.register('lstm')
class LSTMDecoder(nn.Module):
  """LSTM decoder with additive or dot-product attention over the memory.

  Attributes:
    vocab_size: output vocabulary V.
    dim: width of the token embedding and of the attentional vector.
    hidden_dim: LSTM units.
    attention: 'additive' (Bahdanau) or 'dot' (Luong's general score).
    tie_embedding: output logits from the embedding table.
  """
  vocab_size: Optional[int] = None
  dim: int = 128
  hidden_dim: int = 256
  attention: str = 'additive'
  tie_embedding: bool = False
  dropout: float = 0.0
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  SIZES: ClassVar[Dict[str, Dict[str, Any]]] = {
      'tiny': dict(dim=32, hidden_dim=32),
      'small': dict(dim=128, hidden_dim=256),
  }
  CHOICES: ClassVar[Dict[str, Tuple[Any, ...]]] = {
      'attention': LSTM_ATTENTION}

  def initial_state(self, batch_size: int):
    """Zero LSTM carry and attentional vector for `batch_size` rows."""
    zeros = functools.partial(jnp.zeros, dtype=self.dtype)
    return ((zeros((batch_size, self.hidden_dim)),
             zeros((batch_size, self.hidden_dim))),
            zeros((batch_size, self.dim)))

  def __call__(self, ids: jax.Array, memory: jax.Array,
               memory_mask: jax.Array, *, train: bool) -> jax.Array:
    """Teacher-forced logits [B, T, V] of inputs ids [B, T]."""
    return self.run(ids, self.initial_state(ids.shape[0]), memory,
                    memory_mask, train=train)[0]

  @nn.compact
  def run(self, ids: jax.Array, state, memory: jax.Array,
          memory_mask: jax.Array, *, train: bool):
    """ids [N, T] from `state` -> (logits [N, T, V], state after T steps)."""
    _check_vocab(self.vocab_size)
    embedding = _embedding(self.vocab_size, self.dim, self.dtype,
                           self.param_dtype)
    drop = nn.Dropout(self.dropout, deterministic=not train)
    if self.attention not in LSTM_ATTENTION:
      raise ValueError(f'attention must be one of {LSTM_ATTENTION}, got '
                       f'{self.attention!r}')
    x = drop(embedding(ids))
    # Projected once for all T steps (the scan body would redo it per step).
    keys = layers.dense(
        self.hidden_dim, 'embed', 'mlp' if self.attention == 'additive'
        else None, self.dtype, use_bias=False, name='key',
        param_dtype=self.param_dtype)(memory)
    steps = nn.scan(_AttentionLSTMStep, variable_broadcast='params',
                    split_rngs={'params': False},
                    in_axes=(1,) + (nn.broadcast,) * 3, out_axes=1)
    state, x = steps(self.hidden_dim, self.attention, self.dtype,
                     self.param_dtype, name='step')(state, x, keys, memory,
                                                    memory_mask)
    return _output_logits(drop(x), embedding, self.tie_embedding, self.dtype,
                          self.param_dtype), state

  def make_step_fn(self, variables: Variables, memory: jax.Array,
                   memory_mask: jax.Array, max_len: int, beam_size: int = 1
                   ) -> Tuple[StepFn, Any]:
    """The `decoding.StepFn` over B * beam_size rows and its initial state
    (B rows) for memory [B, S, D_m]; max_len is unused (no cache)."""
    del max_len
    memory, memory_mask = tile_beams((memory, memory_mask), beam_size)

    def step_fn(tokens, state, step):
      del step  # The recurrent state carries the position.
      logits, state = self.apply(variables, tokens[:, None], state, memory,
                                 memory_mask, train=False, method='run')
      return logits[:, 0], state

    return step_fn, self.initial_state(memory.shape[0] // beam_size)


class DecoderBlock(nn.Module):
  """Pre-LN decoder block: causal self-attention, then cross-attention to the
  memory and an MLP (`layers.TransformerBlock` with a context).

  With `decode`, x is one token [N, 1, D] and the self-attention keys and
  values of the earlier tokens come from the 'cache' collection (Flax's
  autoregressive cache, which also masks the positions not yet written).
  """
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32
  options: layers.BlockOptions = layers.BlockOptions()

  @nn.compact
  def __call__(self, x: jax.Array, memory: jax.Array, memory_mask: jax.Array,
               *, train: bool, decode: bool) -> jax.Array:
    """x [N, T, D]; memory [N, S, D_m]; memory_mask [N, S] -> [N, T, D]."""
    y = layers.layer_norm(self.dtype, name='ln_self',
                          param_dtype=self.param_dtype)(x)
    y = nn.MultiHeadDotProductAttention(
        self.num_heads, dtype=self.dtype, param_dtype=self.param_dtype,
        dropout_rate=self.dropout, deterministic=not train, decode=decode,
        kernel_init=layers.kernel(('embed', 'heads', 'kv')),
        bias_init=layers.bias(('heads', 'kv')),
        out_kernel_init=layers.kernel(('heads', 'kv', 'embed')),
        out_bias_init=layers.bias(('embed',)), name='self_attn')(
            y, mask=None if decode else nn.make_causal_mask(x[..., 0]))
    x = x + nn.Dropout(self.dropout, deterministic=not train)(y)
    block = layers.TransformerBlock(
        self.num_heads, self.mlp_dim, self.dropout, self.dtype,
        self.param_dtype, self.options.attention, name='cross')
    return layers.apply_block(block, x, None, memory, memory_mask,
                              train=train, remat=self.options.remat)


@DECODERS.register('transformer')
class TransformerDecoder(nn.Module):
  """Transformer decoder: causal self-attention and cross-attention blocks.

  Attributes:
    vocab_size: output vocabulary V.
    dim, depth, num_heads, mlp_dim: width, blocks, heads, MLP hidden width.
    max_len: longest decoded sequence (learned position table).
    tie_embedding: output logits from the embedding table.
    block_options: `remat` of each block's cross-attention and MLP (the
      cached self-attention is not rematerialised) and the cross-attention
      kernel (`attention`); `scan` is not supported (each block has its own
      decode cache).
  """
  vocab_size: Optional[int] = None
  dim: int = 128
  depth: int = 2
  num_heads: int = 4
  mlp_dim: int = 256
  max_len: int = 64
  tie_embedding: bool = True
  dropout: float = 0.0
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32
  block_options: layers.BlockOptions = layers.BlockOptions()

  SIZES: ClassVar[Dict[str, Dict[str, Any]]] = {
      'tiny': dict(dim=32, depth=1, num_heads=2, mlp_dim=64),
      'small': dict(dim=128, depth=2, num_heads=4, mlp_dim=256),
  }

  def __call__(self, ids: jax.Array, memory: jax.Array,
               memory_mask: jax.Array, *, train: bool) -> jax.Array:
    """Teacher-forced logits [B, T, V] of inputs ids [B, T]."""
    return self.run(ids, memory, memory_mask, train=train)

  @nn.compact
  def run(self, ids: jax.Array, memory: jax.Array, memory_mask: jax.Array,
          start: jax.Array = 0, *, train: bool,
          decode: bool = False) -> jax.Array:
    """Logits [N, T, V] of ids [N, T] at positions start .. start + T - 1.

    decode: T == 1 and the earlier positions' keys / values are in the
    mutable 'cache' collection (see `make_step_fn`).
    """
    _check_vocab(self.vocab_size)
    if self.block_options.scan:
      raise ValueError('TransformerDecoder does not support '
                       'block_options.scan; use scan=False.')
    if ids.shape[1] > self.max_len:
      raise ValueError(f'{ids.shape[1]} tokens exceed max_len '
                       f'{self.max_len} of the decoder.')
    embedding = _embedding(self.vocab_size, self.dim, self.dtype,
                           self.param_dtype)
    positions = self.param('positions', layers.kernel(
        (None, 'embed'), nn.initializers.normal(0.02)),
                           (self.max_len, self.dim), self.param_dtype)
    x = embedding(ids) + jax.lax.dynamic_slice_in_dim(
        positions, start, ids.shape[1]).astype(self.dtype)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    for i in range(self.depth):
      x = DecoderBlock(self.num_heads, self.mlp_dim, self.dropout, self.dtype,
                       self.param_dtype, self.block_options,
                       name=f'block{i}')(x, memory, memory_mask, train=train,
                                         decode=decode)
    x = layers.layer_norm(self.dtype, name='ln_final',
                          param_dtype=self.param_dtype)(x)
    return _output_logits(x, embedding, self.tie_embedding, self.dtype,
                          self.param_dtype)

  def make_step_fn(self, variables: Variables, memory: jax.Array,
                   memory_mask: jax.Array, max_len: int, beam_size: int = 1
                   ) -> Tuple[StepFn, Any]:
    """The `decoding.StepFn` over B * beam_size rows and its initial state:
    an empty key/value cache of max_len positions for B rows."""
    batch = memory.shape[0]
    # Flax creates (zero) caches shaped like the inputs on a decode call
    # that finds none; only their shapes are needed.
    shapes = jax.eval_shape(
        lambda: self.apply(variables, jnp.zeros((batch, max_len), jnp.int32),
                           memory, memory_mask, train=False, decode=True,
                           method='run', mutable=['cache'])[1]['cache'])
    cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    memory, memory_mask = tile_beams((memory, memory_mask), beam_size)

    def step_fn(tokens, cache, step):
      logits, mutated = self.apply(
          {**variables, 'cache': cache}, tokens[:, None], memory, memory_mask,
          step, train=False, decode=True, method='run', mutable=['cache'])
      return logits[:, 0], mutated['cache']

    return step_fn, cache


def ctc_greedy(logits: jax.Array, logit_mask: jax.Array,
               max_len: int) -> jax.Array:
  """Best-path CTC decoding: the argmax token of every valid encoder token,
  repeats merged, blanks removed, left-aligned.

  logits [B, S, V], logit_mask [B, S] -> tokens [B, max_len] (padded with
  the blank, which is `PAD_ID`; tokens beyond max_len are dropped).
  """
  best = jnp.where(logit_mask.astype(bool), logits.argmax(-1), CTC_BLANK_ID)
  previous = jnp.pad(best, ((0, 0), (1, 0)),
                     constant_values=CTC_BLANK_ID)[:, :-1]
  keep = (best != CTC_BLANK_ID) & (best != previous)
  # Kept token i goes to position (number kept before it); the others to a
  # spill column max_len, cut off below.
  position = jnp.where(keep, jnp.cumsum(keep, axis=1) - 1, max_len)
  position = jnp.minimum(position, max_len)
  rows = jnp.arange(best.shape[0])[:, None]
  out = jnp.full((best.shape[0], max_len + 1), CTC_BLANK_ID, best.dtype)
  return out.at[rows, position].set(jnp.where(keep, best, CTC_BLANK_ID))[
      :, :max_len].astype(jnp.int32)


@DECODERS.register('ctc')
class CTCHead(nn.Module):
  """Per-token logits over the target vocabulary (`CTC_BLANK_ID` is the
  blank).

  Reads memory [B, S, D_m] (the encoder tokens) and returns logits
  [B, S, V]: train with the task's CTC loss, decode with `ctc_greedy`. Several
  frames per output token are needed: S must exceed the target length.
  """
  vocab_size: Optional[int] = None
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  SIZES: ClassVar[Dict[str, Dict[str, Any]]] = {'tiny': {}, 'small': {}}

  @nn.compact
  def __call__(self, memory: jax.Array) -> jax.Array:
    _check_vocab(self.vocab_size)
    return layers.dense(self.vocab_size, 'embed', 'vocab', self.dtype,
                        name='logits', param_dtype=self.param_dtype)(memory)
