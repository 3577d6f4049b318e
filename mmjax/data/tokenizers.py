"""Text -> fixed-length int32 ids plus a validity mask, and back.

Every tokenizer reserves `tokens.PAD_ID` (0) for padding, so `ids == 0` is
exactly the padding and an embedding table of `vocab_size` rows covers every id it produces.
`decode(ids)` is the text of ids (padding and ids >= vocab_size, such as the
begin / end ids a decoder adds after the vocabulary, are skipped), for
metrics and predictions of generated text.
"""
import io
import os
import tempfile
from typing import Iterable, Protocol, Sequence, Tuple, Union

import numpy as np
import sentencepiece as spm

from mmjax.tokens import PAD_ID, UNK_ID

Text = Union[str, bytes]


class Tokenizer(Protocol):
  """What every tokenizer here provides."""
  vocab_size: int  # Ids are in [0, vocab_size).

  def encode(self, text: Text, length: int) -> Tuple[np.ndarray, np.ndarray]:
    """Returns the ids (int32 [length]) and mask (bool [length]) of `text`."""

  def decode(self, ids: Sequence[int]) -> str:
    """The text of `ids` (padding and ids >= vocab_size skipped)."""


def _known(ids: Sequence[int], vocab_size: int) -> list:
  """The ids of `ids` that are text: not padding, below vocab_size."""
  return [int(i) for i in ids if PAD_ID < i < vocab_size]


def _pad(ids: Sequence[int], length: int) -> Tuple[np.ndarray, np.ndarray]:
  """Truncates or zero-pads `ids` -> (int32 [length], bool mask [length])."""
  ids = np.asarray(ids[:length], np.int32)
  out = np.full((length,), PAD_ID, np.int32)
  out[:len(ids)] = ids
  return out, np.arange(length) < len(ids)


class WordTokenizer:
  """Whitespace-separated, lowercased words of a fixed vocabulary.

  Ids: 0 = padding, 1 = a word outside the vocabulary, 2 + i = vocabulary[i].
  """
  UNKNOWN_ID = UNK_ID
  UNKNOWN_WORD = '<unk>'

  def __init__(self, vocabulary: Sequence[str]):
    self._words = (None, self.UNKNOWN_WORD) + tuple(vocabulary)
    self._ids = {word: i + 2 for i, word in enumerate(vocabulary)}
    if len(self._ids) != len(vocabulary):
      raise ValueError('the vocabulary holds a word twice.')
    self.vocab_size = len(vocabulary) + 2

  def encode(self, text: Text, length: int) -> Tuple[np.ndarray, np.ndarray]:
    """Returns the ids (int32 [length]) and mask (bool [length]) of `text`."""
    if isinstance(text, bytes):
      text = text.decode('utf-8')
    return _pad([self._ids.get(w, self.UNKNOWN_ID)
                 for w in text.lower().split()], length)

  def decode(self, ids: Sequence[int]) -> str:
    """Space-joined words of `ids` (unknown ids as '<unk>')."""
    return ' '.join(self._words[i] for i in _known(ids, self.vocab_size))


class ByteTokenizer:
  """UTF-8 bytes: id = byte + 1 (0 is padding); needs no vocabulary."""
  vocab_size = 257

  def encode(self, text: Text, length: int) -> Tuple[np.ndarray, np.ndarray]:
    """Returns the ids (int32 [length]) and mask (bool [length]) of `text`."""
    if isinstance(text, str):
      text = text.encode('utf-8')
    return _pad(np.frombuffer(text, np.uint8).astype(np.int32) + 1, length)

  def decode(self, ids: Sequence[int]) -> str:
    """The UTF-8 text of `ids` (an invalid byte sequence as U+FFFD)."""
    return bytes(i - 1 for i in _known(ids, self.vocab_size)).decode(
        'utf-8', errors='replace')


class SentencePieceTokenizer:
  """A SentencePiece model (see `train_sentencepiece`): 0 = padding, 1 = unknown."""

  def __init__(self, model_file: str):
    self._model = spm.SentencePieceProcessor(model_file=model_file)
    self.vocab_size = self._model.get_piece_size()

  def encode(self, text: Text, length: int) -> Tuple[np.ndarray, np.ndarray]:
    """Returns the ids (int32 [length]) and mask (bool [length]) of `text`."""
    if isinstance(text, bytes):
      text = text.decode('utf-8')
    return _pad(self._model.encode(text), length)

  def decode(self, ids: Sequence[int]) -> str:
    return self._model.decode(_known(ids, self.vocab_size))


def train_sentencepiece(texts: Iterable[str], vocab_size: int,
                        model_file: str) -> None:
  """Trains a unigram SentencePiece model on `texts` and writes `model_file`.

  Ids: 0 padding, 1 unknown, 2 begin and 3 end of sequence. `vocab_size` is an
  upper bound: a small corpus (e.g. a fixed-vocabulary synthetic dataset) gets
  as many pieces as it supports. The file appears atomically, so concurrent
  readers never see half of it.
  """
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(texts), model_writer=model,
      vocab_size=vocab_size, hard_vocab_limit=False, model_type='unigram',
      character_coverage=1.0, pad_id=PAD_ID, unk_id=UNK_ID, bos_id=2, eos_id=3,
      minloglevel=2)
  directory = os.path.dirname(model_file)
  with tempfile.NamedTemporaryFile(dir=directory, delete=False) as f:
    f.write(model.getvalue())
  os.replace(f.name, model_file)
