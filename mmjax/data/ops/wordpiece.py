"""WordPiece op: text -> the ids a pretrained BERT tower was trained on.

    input.pp_train = '...|wordpiece(32)'
    input.pp_train = "...|wordpiece(32, key='caption', checkpoint='all-minilm-l6-v2')"

The tokenizer is the checkpoint's own `tokenizer.json` (normaliser,
pre-tokenizer, vocabulary and [CLS] ... [SEP] template), run by the
`tokenizers` package and read from the installed pip package that ships the
checkpoint (`mmjax.pretrained_files`), so the ids equal those the checkpoint
saw in training. Pair it with the 'bert' text encoder and
`model.encoders.text.pretrained` set to the same checkpoint.
"""
import dataclasses
from typing import Sequence, Tuple

import numpy as np
import tokenizers as hf_tokenizers

from mmjax import pretrained_files
from mmjax.data.ops.general import get
from mmjax.data.preprocess import Op
from mmjax.data.tokenizers import Text
from mmjax.registry import OPS


class WordPieceTokenizer:
  """A checkpoint's `tokenizer.json`, producing fixed-length ids and a mask.

  [PAD] is id 0 in BERT vocabularies, so `ids == 0` is exactly the padding,
  as mmjax's text encoders expect. Texts longer than `length` tokens keep
  their first `length - 2` word pieces between [CLS] and [SEP], as Hugging
  Face's truncation does.
  """

  def __init__(self, path: str):
    self._tokenizer = hf_tokenizers.Tokenizer.from_file(path)
    pad = self._tokenizer.token_to_id('[PAD]')
    if pad != 0:
      raise ValueError(f'{path}: [PAD] has id {pad!r}; mmjax needs a '
                       'vocabulary whose padding id is 0.')
    self.vocab_size = self._tokenizer.get_vocab_size()
    self._length = None

  def encode(self, text: Text, length: int) -> Tuple[np.ndarray, np.ndarray]:
    """Returns ids (int32 [length], 0 = padding) and mask (bool [length])."""
    if length != self._length:
      # Replaces the file's own settings (all-MiniLM-L6-v2 ships 128).
      self._tokenizer.enable_truncation(length)
      self._tokenizer.enable_padding(length=length, pad_id=0)
      self._length = length
    if isinstance(text, bytes):
      text = text.decode('utf-8')
    encoding = self._tokenizer.encode(text)
    return (np.asarray(encoding.ids, np.int32),
            np.asarray(encoding.attention_mask, bool))

  def decode(self, ids: Sequence[int]) -> str:
    """The text of `ids`, without special tokens and padding."""
    return self._tokenizer.decode([int(i) for i in ids if i != 0],
                                  skip_special_tokens=True)


@OPS.register('wordpiece')
@dataclasses.dataclass
class WordPiece(Op):
  """Text -> int32 ids [length] ([CLS] ... [SEP], 0 = [PAD]) and
  `<key>_mask` bool [length], with `checkpoint`'s tokenizer.

  Every id is of the first segment (token type 0), which the 'bert' encoder
  uses when given no token types. Sets `meta['vocab_size']` (30,522 for
  all-MiniLM-L6-v2) and `meta['tokenizers'][key]` to this op.
  """
  length: int
  key: str = 'text'
  checkpoint: str = 'all-minilm-l6-v2'

  def __post_init__(self):
    if not isinstance(self.length, int) or self.length < 2:
      raise ValueError(f'length must be an int >= 2 ([CLS] and [SEP]), got '
                       f'{self.length!r}')
    if self.checkpoint not in pretrained_files.CHECKPOINTS:
      raise ValueError(f'unknown checkpoint {self.checkpoint!r}; valid names '
                       f'are: {", ".join(sorted(pretrained_files.CHECKPOINTS))}')
    self._tokenizer = None

  def get_tokenizer(self) -> WordPieceTokenizer:
    if self._tokenizer is None:
      with pretrained_files.checkpoint_file(
          self.checkpoint, 'tokenizer.json', 'input.pp_train') as path:
        self._tokenizer = WordPieceTokenizer(str(path))
    return self._tokenizer

  @property
  def max_vocab_size(self) -> int:
    return self.get_tokenizer().vocab_size

  def setup(self, meta):
    meta['tokenizers'] = {**meta.get('tokenizers', {}), self.key: self}
    meta['vocab_size'] = self.get_tokenizer().vocab_size

  def __call__(self, example, rng):
    ids, mask = self.get_tokenizer().encode(get(example, self.key, self),
                                            self.length)
    return {**example, self.key: ids, f'{self.key}_mask': mask}
