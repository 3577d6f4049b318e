"""Encoder(s) -> (fusion) -> text decoder: captioning, speech recognition and
generated answers.

Config (`config.model` with name 'seq2seq'): `modalities`, `encoders` and
`dim` as for the classifier; `fusion`: a token-level fusion method over the
modalities (one whose output has tokens: cross_attention, early, mbt,
mult), or name '' for the encoders' projected tokens themselves,
concatenated over the modalities (what one modality needs); `decoder`: a
registered text decoder (mmjax/models/decoders.py: 'transformer', 'lstm'
or 'ctc') with `size` and field overrides, as for encoders; `decoding`:
`method` ('greedy' or 'beam'), `beam_size`, `alpha` (beam search length
penalty) and `max_len` (0: the target length of the batch).

Token ids: the target text's ids (0 padding) and, after its vocabulary of V
ids, `bos_id = V` and `eos_id = V + 1`; `num_outputs` = V + 2 is the
decoder's vocabulary (see `mmjax.tokens.special_ids`). CTC uses id 0 as its
blank and never emits the other two.
"""
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from mmjax import decoding
from mmjax.errors import ConfigError, check_fields
from mmjax.models import decoders, layers
from mmjax.models.encoders import encode_modalities, resolve
from mmjax.models.fusion import base as fusion_base
from mmjax.registry import DECODERS, MODELS

Batch = Mapping[str, jax.Array]
FIELDS = ('name', 'modalities', 'encoders', 'fusion', 'decoder', 'decoding',
          'dim', 'dtype', 'param_dtype', 'remat', 'scan_layers', 'attention',
          'conv_kernel_grad')
DECODING_FIELDS = ('method', 'beam_size', 'alpha', 'max_len')
DECODING_METHODS = ('greedy', 'beam')


def decoder_inputs_and_targets(batch: Batch, eos_id: int, bos_id: int
                               ) -> Tuple[jax.Array, jax.Array, jax.Array]:
  """Teacher forcing: (decoder inputs, targets, target mask), each [B, T],
  from batch['target'] and batch['target_mask'] (the text's ids, then
  eos_id; inputs are bos_id then the targets shifted right)."""
  targets, mask = decoding.append_eos(batch['target'], batch['target_mask'],
                                      eos_id)
  return decoding.shift_right(targets, bos_id), targets, mask


@MODELS.register('seq2seq')
class Seq2Seq(nn.Module):
  """Encoders for the configured modalities, an optional token-level fusion
  and a text decoder over the resulting memory tokens.

  Batch keys: per modality `m`, `m` and optional `m + '_mask'` /
  `m + '_present'` (as for the classifier); 'target' int [B, T] and
  'target_mask' [B, T] (the text to produce, without end id).

  Returns a dict. Attention decoders: 'logits' [B, T, num_outputs]
  (teacher-forced, float32). CTC: 'ctc_logits' [B, S, num_outputs] and
  'ctc_mask' [B, S] over the memory tokens. Outside training (and init),
  also 'tokens' int [B, max_len]: the decoded text ids (eos_id ends a
  sequence, PAD_ID after it), by `decoding.method`.
  """
  modalities: Sequence[str]
  encoders: Mapping[str, ml_collections.ConfigDict]
  fusion: ml_collections.ConfigDict
  decoder: ml_collections.ConfigDict
  decoding: ml_collections.ConfigDict
  dim: int
  num_outputs: int
  vocab_size: Optional[int] = None
  sample_rate: Optional[int] = None
  dtype: Any = jnp.float32
  bn_axis_name: Optional[str] = None
  param_dtype: Any = jnp.float32
  block_options: layers.BlockOptions = layers.BlockOptions()

  def encode(self, batch: Batch, *, train: bool
             ) -> Tuple[jax.Array, jax.Array]:
    """Memory tokens [B, S, dim] and their mask [B, S]."""
    tokens, masks = encode_modalities(self, batch, train=train)
    name = self.fusion['name']
    if not name:
      tokens, masks = fusion_base.prepare(tokens, masks, self.modalities,
                                          self.dim)
      return (jnp.concatenate(list(tokens.values()), axis=1),
              jnp.concatenate(list(masks.values()), axis=1))
    fused = fusion_base.build(self, self.fusion)(tokens, masks, train=train)
    if fused.tokens is None:
      raise ConfigError('model.fusion.name', f'{name!r} returns a pooled '
                        'vector only; a decoder attends to tokens: use '
                        "cross_attention, early, mbt or mult (or '').")
    return fused.tokens, fused.mask

  def _decoder(self) -> nn.Module:
    cls, kwargs = resolve(DECODERS, self.decoder, 'model.decoder',
                          'text decoder')
    if cls is decoders.TransformerDecoder:
      kwargs['block_options'] = self.block_options
    return cls(vocab_size=self.num_outputs, dtype=self.dtype,
               param_dtype=self.param_dtype, name='decoder', **kwargs)

  @nn.compact
  def __call__(self, batch: Batch, *, train: bool) -> Dict[str, jax.Array]:
    memory, memory_mask = self.encode(batch, train=train)
    decoder = self._decoder()
    bos_id, eos_id = self.num_outputs - 2, self.num_outputs - 1
    max_len = self.decoding.max_len or batch['target'].shape[1]
    if isinstance(decoder, decoders.CTCHead):
      logits = decoder(memory).astype(jnp.float32)
      outputs = {'ctc_logits': logits, 'ctc_mask': memory_mask}
      if not train:
        outputs['tokens'] = decoders.ctc_greedy(logits, memory_mask, max_len)
      return outputs
    inputs, _, _ = decoder_inputs_and_targets(batch, eos_id, bos_id)
    outputs = {'logits': decoder(inputs, memory, memory_mask,
                                 train=train).astype(jnp.float32)}
    if not train and not self.is_initializing():
      outputs['tokens'] = self._generate(decoder, memory, memory_mask,
                                         max_len, bos_id, eos_id)
    return outputs

  def _generate(self, decoder: nn.Module, memory: jax.Array,
                memory_mask: jax.Array, max_len: int, bos_id: int,
                eos_id: int) -> jax.Array:
    """Decoded ids [B, max_len] with the (bound) decoder's parameters."""
    # The step function applies an unbound copy of the decoder to its own
    # variables, a pure function that lax loops can call.
    variables = {'params': decoder.variables['params']}
    unbound = decoder.clone(parent=None, name=None)
    beam = self.decoding.method == 'beam'
    beam_size = self.decoding.beam_size if beam else 1
    step_fn, state = unbound.make_step_fn(variables, memory, memory_mask,
                                          max_len, beam_size)
    common = dict(batch_size=memory.shape[0], max_len=max_len,
                  bos_id=bos_id, eos_id=eos_id)
    if beam:
      tokens, _ = decoding.beam_search(step_fn, state, beam_size=beam_size,
                                       alpha=self.decoding.alpha, **common)
      return tokens[:, 0]
    return decoding.greedy(step_fn, state, **common)[0]

  @staticmethod
  def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError for a field seq2seq models do not take, an
    unknown decoder, fusion or decoding method, or a task other than
    'seq2seq'."""
    mc = config.model
    check_fields(mc, FIELDS, 'model', "model 'seq2seq'")
    if config.task.name != 'seq2seq':
      raise ConfigError('task.name', "model 'seq2seq' generates text, which "
                        f"task 'seq2seq' trains; got {config.task.name!r}.")
    resolve(DECODERS, mc.decoder, 'model.decoder', 'text decoder')
    if mc.fusion.get('name'):
      fusion_base.check_config(mc.fusion)
    elif set(mc.fusion) - {'name'}:
      raise ConfigError('model.fusion', "name '' (no fusion) takes no other "
                        f'fields; got {sorted(mc.fusion)}.')
    check_fields(mc.decoding, DECODING_FIELDS, 'model.decoding', 'decoding')
    d = mc.decoding
    if d.method not in DECODING_METHODS:
      raise ConfigError('model.decoding.method', f'got {d.method!r}; valid '
                        f'methods are: {", ".join(DECODING_METHODS)}.')
    for field, value, low in (('beam_size', d.beam_size, 1),
                              ('max_len', d.max_len, 0)):
      if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f'model.decoding.{field}', f'got {value!r}; '
                          f'expected an integer >= {low}.')
    if not isinstance(d.alpha, (int, float)) or d.alpha < 0:
      raise ConfigError('model.decoding.alpha', f'got {d.alpha!r}; expected '
                        'a number >= 0 (0: no length penalty).')

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, *,
                  num_outputs: int, **dataset_fields) -> 'Seq2Seq':
    """The model of `config.model`; `num_outputs` is the decoder vocabulary
    (the task's: target vocabulary + BOS + EOS); `dataset_fields`
    (vocab_size, sample_rate, bn_axis_name) come from the dataset and the
    runner."""
    mc = config.model
    return cls(
        modalities=tuple(mc.modalities),
        encoders={m: mc.encoders[m] for m in mc.modalities},
        fusion=mc.fusion, decoder=mc.decoder, decoding=mc.decoding,
        dim=mc.dim, num_outputs=num_outputs,
        dtype=jnp.dtype(mc.dtype), param_dtype=jnp.dtype(mc.param_dtype),
        block_options=layers.BlockOptions.from_config(mc),
        **dataset_fields)
