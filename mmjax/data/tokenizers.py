"""Text -> fixed-length int32 ids plus a validity mask.

Both tokenizers reserve id 0 for padding, so `ids == 0` is exactly the padding
and an embedding table of `vocab_size` rows covers every id they produce.
"""
from typing import Sequence, Tuple, Union

import numpy as np

PAD_ID = 0
Text = Union[str, bytes]


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
  UNKNOWN_ID = 1

  def __init__(self, vocabulary: Sequence[str]):
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


class ByteTokenizer:
  """UTF-8 bytes: id = byte + 1 (0 is padding); needs no vocabulary."""
  vocab_size = 257

  def encode(self, text: Text, length: int) -> Tuple[np.ndarray, np.ndarray]:
    """Returns the ids (int32 [length]) and mask (bool [length]) of `text`."""
    if isinstance(text, str):
      text = text.encode('utf-8')
    return _pad(np.frombuffer(text, np.uint8).astype(np.int32) + 1, length)
