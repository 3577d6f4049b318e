"""Text encoders: embedding bag, bidirectional LSTM / GRU, transformer.

Each maps token ids [B, L] (0 = padding) and their mask [B, L] to tokens
[B, T, D] and a mask [B, T]. Masks are prefixes (padding at the end), as the
tokenizers produce them; without a mask, ids != 0 are the valid tokens.
`vocab_size` comes from the dataset (`build_encoder` passes it).
"""
from typing import Any, ClassVar, Dict, Optional, Tuple

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.models import layers
from mmjax.registry import ENCODERS

RNN_CELLS = {'lstm': nn.OptimizedLSTMCell, 'gru': nn.GRUCell}


def embed_tokens(ids: jax.Array, mask: Optional[jax.Array],
                 vocab_size: Optional[int], dim: int,
                 dtype: layers.Dtype, param_dtype: layers.Dtype = jnp.float32
                 ) -> Tuple[jax.Array, jax.Array]:
  """Embeds ids [B, L] -> ([B, L, dim], bool mask [B, L]) in the caller's scope.

  Call it inside a compact method; the table is the parameter `embedding`.
  """
  if vocab_size is None:
    raise ValueError('text encoders need vocab_size (the dataset vocabulary '
                     'size); build them with build_encoder(vocab_size=...).')
  mask = ids != 0 if mask is None else mask.astype(bool)
  table = nn.Embed(vocab_size, dim, dtype=dtype, param_dtype=param_dtype,
                   name='embedding',
                   embedding_init=layers.kernel(('vocab', 'embed'),
                                                nn.linear.default_embed_init))
  return table(ids), mask


class BiRNN(nn.Module):
  """Stacked bidirectional RNN: [B, T, F] and prefix mask [B, T] -> [B, T, 2H].

  Each layer runs one RNN forwards and one backwards over the valid steps
  only (`seq_lengths` from the mask), so padding never reaches the outputs
  at valid steps; outputs at padded steps are 0. Shared by the text and
  audio recurrent encoders.
  """
  cell: str = 'lstm'  # 'lstm' | 'gru'
  hidden_dim: int = 128
  num_layers: int = 1
  dropout: float = 0.0
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, *,
               train: bool) -> jax.Array:
    if self.cell not in RNN_CELLS:
      raise ValueError(f'RNN cell must be one of {tuple(RNN_CELLS)}, got '
                       f'{self.cell!r}')
    lengths = mask.sum(axis=-1, dtype=jnp.int32)

    def rnn():
      # parent=None: the cell and RNN are adopted by the module they are
      # passed to, so parameters nest as layer{i}/{forward,backward}_rnn/cell.
      cell = RNN_CELLS[self.cell](
          self.hidden_dim, dtype=self.dtype, param_dtype=self.param_dtype,
          parent=None,
          kernel_init=layers.kernel(('embed', 'mlp')),
          recurrent_kernel_init=layers.kernel((None, 'mlp'),
                                              nn.initializers.orthogonal()),
          bias_init=layers.bias(('mlp',)))
      return nn.RNN(cell, parent=None)

    for i in range(self.num_layers):
      if i:
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
      x = nn.Bidirectional(rnn(), rnn(), name=f'layer{i}')(
          x, seq_lengths=lengths)
    return jnp.where(mask[..., None], x, 0).astype(self.dtype)


@ENCODERS['text'].register('embedding_bag')
class EmbeddingBag(nn.Module):
  """Mean of the valid tokens' embeddings: tokens [B, 1, dim], mask [B, 1]
  (true where the text has any valid token)."""
  vocab_size: Optional[int] = None
  dim: int = 128
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  SIZES: ClassVar[Dict[str, Dict[str, Any]]] = {
      'tiny': dict(dim=32),
      'small': dict(dim=128),
  }

  @nn.compact
  def __call__(self, ids: jax.Array, mask: Optional[jax.Array] = None, *,
               train: bool) -> Tuple[jax.Array, jax.Array]:
    del train  # No dropout.
    x, mask = embed_tokens(ids, mask, self.vocab_size, self.dim, self.dtype,
                           self.param_dtype)
    return (einops.rearrange(layers.masked_mean(x, mask), 'b d -> b 1 d'),
            mask.any(axis=-1, keepdims=True))


@ENCODERS['text'].register('lstm')
class TextRNN(nn.Module):
  """Embedding then a bidirectional RNN: tokens [B, L, 2 * hidden_dim]."""
  vocab_size: Optional[int] = None
  cell: str = 'lstm'  # 'lstm' | 'gru'; the registered name sets the default.
  embed_dim: int = 128
  hidden_dim: int = 128
  num_layers: int = 1
  dropout: float = 0.0
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  SIZES: ClassVar[Dict[str, Dict[str, Any]]] = {
      'tiny': dict(embed_dim=32, hidden_dim=32, num_layers=1),
      'small': dict(embed_dim=128, hidden_dim=128, num_layers=2),
  }
  CHOICES: ClassVar[Dict[str, Tuple[Any, ...]]] = {'cell': tuple(RNN_CELLS)}

  @nn.compact
  def __call__(self, ids: jax.Array, mask: Optional[jax.Array] = None, *,
               train: bool) -> Tuple[jax.Array, jax.Array]:
    x, mask = embed_tokens(ids, mask, self.vocab_size, self.embed_dim,
                           self.dtype, self.param_dtype)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = BiRNN(self.cell, self.hidden_dim, self.num_layers, self.dropout,
              self.dtype, self.param_dtype, name='rnn')(x, mask, train=train)
    return x, mask


@ENCODERS['text'].register('gru')
class TextGRU(TextRNN):
  """`TextRNN` with GRU cells."""
  cell: str = 'gru'


# 'tokens': every token; 'eos': the state at the first `eos_id` token of
# each text (CLIP's pooled output); 'argmax': at the first occurrence of the
# largest id (how CLIP checkpoints whose config says eos_token_id=2 pool: the
# end-of-text id is the largest in CLIP's vocabulary). A text without
# `eos_id` pools its first token, as Hugging Face's CLIP does.
TEXT_POOLINGS = ('tokens', 'eos', 'argmax')


@ENCODERS['text'].register('transformer')
class TextTransformer(nn.Module):
  """Embedding, positions and a pre-LN transformer: tokens [B, L, dim].

  Options for pretrained towers (CLIP's text tower, via `mmjax.convert`):
  `causal` attention (each token sees itself and earlier ones), the MLP
  `activation` and `ln_epsilon` (see `layers.TransformerStack`), `pooling`
  to one token [B, 1, dim] (see TEXT_POOLINGS; 'eos' needs `eos_id`) and a
  bias-free projection of the pooled token to `projection_dim` (> 0).
  """
  vocab_size: Optional[int] = None
  dim: int = 128
  depth: int = 4
  num_heads: int = 4
  mlp_dim: int = 256
  dropout: float = 0.0
  positions: str = 'learned'  # 'learned' | 'sinusoidal'
  max_len: int = 512
  causal: bool = False
  activation: str = 'gelu_tanh'
  ln_epsilon: float = 1e-6
  pooling: str = 'tokens'
  eos_id: int = -1
  projection_dim: int = 0
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32
  block_options: layers.BlockOptions = layers.BlockOptions()

  SIZES: ClassVar[Dict[str, Dict[str, Any]]] = {
      'tiny': dict(dim=32, depth=1, num_heads=2, mlp_dim=64),
      'small': dict(dim=128, depth=4, num_heads=4, mlp_dim=256),
  }
  CHOICES: ClassVar[Dict[str, Tuple[Any, ...]]] = {
      'positions': ('learned', 'sinusoidal'),
      'activation': tuple(layers.ACTIVATIONS), 'pooling': TEXT_POOLINGS}

  @nn.compact
  def __call__(self, ids: jax.Array, mask: Optional[jax.Array] = None, *,
               train: bool) -> Tuple[jax.Array, jax.Array]:
    if self.pooling == 'eos' and self.eos_id < 0:
      raise ValueError("transformer: pooling 'eos' needs eos_id (the "
                       'end-of-text token id).')
    if self.projection_dim and self.pooling == 'tokens':
      raise ValueError("transformer: projection_dim projects the pooled "
                       "token; set pooling to 'eos' or 'argmax'.")
    x, mask = embed_tokens(ids, mask, self.vocab_size, self.dim, self.dtype,
                           self.param_dtype)
    x = layers.AddPositions(self.positions, self.max_len, self.dtype,
                            self.param_dtype, name='positions')(x)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = layers.TransformerStack(self.depth, self.num_heads, self.mlp_dim,
                                self.dropout, self.dtype, self.param_dtype,
                                self.block_options, self.causal,
                                self.activation, self.ln_epsilon,
                                name='transformer')(x, mask, train=train)
    if self.pooling == 'tokens':
      return x, mask
    # argmax returns the first position of the largest value.
    position = jnp.argmax(ids == self.eos_id if self.pooling == 'eos' else ids,
                          axis=-1)
    pooled = jnp.take_along_axis(x, position[:, None, None], axis=1)
    if self.projection_dim:
      pooled = layers.dense(self.projection_dim, 'embed', None, self.dtype,
                            use_bias=False, name='projection',
                            param_dtype=self.param_dtype)(pooled)
    return pooled, mask.any(axis=-1, keepdims=True)
