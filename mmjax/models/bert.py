"""BERT text encoder (Devlin et al., 2019), the architecture of pretrained
sentence encoders such as all-MiniLM-L6-v2.

Where BERT differs from mmjax's pre-LN `TextTransformer`: token-type
embeddings added to the word and position embeddings, a LayerNorm (eps
`layer_norm_eps`, 1e-12) on the embedding sum, post-LN blocks (the residual
sum is normalised, not the block input), exact-erf GELU and no final
LayerNorm. `mmjax.models.pretrained` loads Hugging Face BERT checkpoints into
it; `mmjax/data/ops/wordpiece.py` makes its ids ([CLS] ... [SEP], 0 = [PAD]).

Parameters (under the encoder's scope):
  {word,position,token_type}/embedding, ln_embed
  layer{i}/attn/{query,key,value,out}, layer{i}/ln_attn,
  layer{i}/mlp/{fc1,fc2}, layer{i}/ln_mlp
  pooler (pooling='pooler' only)
"""
import functools
from typing import Any, ClassVar, Dict, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.models import layers
from mmjax.sharding import constrain
from mmjax.registry import ENCODERS

# 'tokens': every token [B, L, D] (for token-level fusion); 'cls': the [CLS]
# token's final state; 'mean': the mean of the valid tokens' states (how
# sentence-transformers pools all-MiniLM-L6-v2); 'pooler': BERT's pooler,
# tanh(dense([CLS])). The pooled ones return one token [B, 1, D].
POOLINGS = ('tokens', 'cls', 'mean', 'pooler')
_INIT = nn.initializers.normal(0.02)  # BERT's initializer_range.
_RESIDUAL = ('batch', None, None)


def _layer_norm(eps: float, dtype: layers.Dtype, param_dtype: layers.Dtype,
                name: str) -> nn.LayerNorm:
  """LayerNorm with BERT's epsilon and logical axis names."""
  return nn.LayerNorm(epsilon=eps, dtype=dtype, param_dtype=param_dtype,
                      name=name,
                      scale_init=layers.bias(('norm',),
                                             nn.initializers.ones_init()),
                      bias_init=layers.bias(('norm',)))


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """x / max(|x|, eps) over the last axis, as torch.nn.functional.normalize
  (and so sentence-transformers' Normalize) computes it."""
  norm = jnp.sqrt((x.astype(jnp.float32) ** 2).sum(-1, keepdims=True))
  return (x / jnp.maximum(norm, eps)).astype(x.dtype)


class BertLayer(nn.Module):
  """Post-LN block: x = LN(x + Attn(x)); x = LN(x + FC2(GELU(FC1(x)))).

  [B, L, D] and mask [B, L] -> [B, L, D]. Dropout (training only) on the
  attention weights and on each branch before its residual sum, as in BERT.
  """
  num_heads: int
  mlp_dim: int
  dropout: float
  layer_norm_eps: float
  dtype: layers.Dtype
  param_dtype: layers.Dtype
  attention: str

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, *,
               train: bool) -> jax.Array:
    drop = nn.Dropout(self.dropout, deterministic=not train)
    norm = functools.partial(_layer_norm, self.layer_norm_eps, self.dtype,
                             self.param_dtype)
    x = constrain(x, _RESIDUAL)
    y = layers.MultiHeadAttention(
        self.num_heads, self.dropout, self.dtype, self.param_dtype,
        self.attention, name='attn')(x, x, mask, train=train)
    x = norm(name='ln_attn')(x + drop(y))
    y = layers.dense(self.mlp_dim, 'embed', 'mlp', self.dtype, name='fc1',
                     init=_INIT, param_dtype=self.param_dtype)(x)
    y = constrain(y, ('batch', None, 'mlp'))
    y = nn.gelu(y, approximate=False)  # BERT's 'gelu' is the exact erf form.
    y = layers.dense(x.shape[-1], 'mlp', 'embed', self.dtype, name='fc2',
                     init=_INIT, param_dtype=self.param_dtype)(y)
    return constrain(norm(name='ln_mlp')(x + drop(y)), _RESIDUAL)


def _call_layer(layer: BertLayer, x, mask, train):
  # All-positional, so that nn.remat can mark `train` static.
  return layer(x, mask, train=train)


@ENCODERS['text'].register('bert')
class Bert(nn.Module):
  """BERT: ids [B, L] (0 = [PAD]) and mask [B, L] -> tokens and mask.

  Returns tokens [B, L, dim] and the mask (pooling 'tokens'), or one pooled
  token [B, 1, dim] and whether the text has any valid token [B, 1]. With
  `normalize`, the pooled vector is L2-normalised (all-MiniLM-L6-v2's
  sentence embedding is the normalised mean). `pretrained` names a
  checkpoint of `mmjax.pretrained_files.CHECKPOINTS` that
  `mmjax.models.pretrained.load_pretrained` initialises the tower from; the
  module itself only records it.

  `block_options`: `remat` and `attention` apply; `scan` does not (the
  layers stay unrolled, one parameter scope per checkpoint layer).
  """
  vocab_size: Optional[int] = None
  dim: int = 384
  depth: int = 6
  num_heads: int = 12
  mlp_dim: int = 1536
  max_len: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  dropout: float = 0.1
  pooling: str = 'tokens'
  normalize: bool = False
  pretrained: str = ''
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32
  block_options: layers.BlockOptions = layers.BlockOptions()

  SIZES: ClassVar[Dict[str, Dict[str, Any]]] = {
      'tiny': dict(dim=32, depth=2, num_heads=2, mlp_dim=64, max_len=64),
      'small': dict(dim=128, depth=4, num_heads=4, mlp_dim=256, max_len=128),
      # all-MiniLM-L6-v2 (and its MiniLM-L6-H384 base).
      'minilm_l6': dict(dim=384, depth=6, num_heads=12, mlp_dim=1536,
                        max_len=512),
  }
  CHOICES: ClassVar[Dict[str, Tuple[Any, ...]]] = {
      'pooling': POOLINGS, 'normalize': (False, True)}

  def _embed(self, name: str, num: int, axes, ids: jax.Array) -> jax.Array:
    return nn.Embed(num, self.dim, dtype=self.dtype,
                    param_dtype=self.param_dtype, name=name,
                    embedding_init=layers.kernel(axes, _INIT))(ids)

  @nn.compact
  def __call__(self, ids: jax.Array, mask: Optional[jax.Array] = None, *,
               train: bool, token_types: Optional[jax.Array] = None
               ) -> Tuple[jax.Array, jax.Array]:
    """ids, mask: [B, L]; token_types: [B, L] segment ids (None: all 0, a
    single sentence)."""
    if self.vocab_size is None:
      raise ValueError('bert needs vocab_size (the tokenizer\'s); build it '
                       'with build_encoder(vocab_size=...).')
    if self.block_options.scan:
      raise ValueError('text encoder bert keeps its layers unrolled; set '
                       'model.scan_layers=False.')
    if self.normalize and self.pooling == 'tokens':
      raise ValueError("bert: normalize=True needs a pooled output; set "
                       "pooling to 'cls', 'mean' or 'pooler'.")
    length = ids.shape[1]
    if length > self.max_len:
      raise ValueError(f'bert: {length} tokens exceed max_len {self.max_len}'
                       ' of the position embedding; tokenize to fewer.')
    mask = ids != 0 if mask is None else mask.astype(bool)
    if token_types is None:
      token_types = jnp.zeros_like(ids)
    x = (self._embed('word', self.vocab_size, ('vocab', 'embed'), ids) +
         self._embed('position', self.max_len, (None, 'embed'),
                     jnp.arange(length)[None]) +
         self._embed('token_type', self.type_vocab_size, (None, 'embed'),
                     token_types))
    x = _layer_norm(self.layer_norm_eps, self.dtype, self.param_dtype,
                    'ln_embed')(x)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    call = _call_layer
    if self.block_options.remat != 'none':
      call = nn.remat(_call_layer,
                      policy=layers.REMAT_POLICIES[self.block_options.remat],
                      static_argnums=(3,))
    for i in range(self.depth):
      layer = BertLayer(self.num_heads, self.mlp_dim, self.dropout,
                        self.layer_norm_eps, self.dtype, self.param_dtype,
                        self.block_options.attention, name=f'layer{i}')
      x = call(layer, x, mask, train)
    if self.pooling == 'tokens':
      return x, mask
    if self.pooling == 'mean':
      pooled = layers.masked_mean(x, mask)
    else:
      pooled = x[:, 0]
      if self.pooling == 'pooler':
        pooled = jnp.tanh(layers.dense(
            self.dim, None, 'embed', self.dtype, name='pooler', init=_INIT,
            param_dtype=self.param_dtype)(pooled))
    if self.normalize:
      pooled = l2_normalize(pooled)
    return pooled[:, None], mask.any(axis=-1, keepdims=True)
