"""Token id conventions shared by the tokenizers (mmjax.data), the decoders
(mmjax.models), decoding and the tasks: the one place that defines them.

  * `PAD_ID` (0) is padding: every tokenizer pads with it, so `ids == PAD_ID`
    is exactly the padding, and CTC uses it as its blank (`CTC_BLANK_ID`).
  * `UNK_ID` (1) is a text piece outside the vocabulary (word and
    SentencePiece tokenizers; the byte tokenizer has none).
  * A target vocabulary of V ids has no begin/end-of-sequence ids of its own
    (the word and byte tokenizers have none), so a text decoder uses the two
    ids after it: `special_ids(V)` = (bos_id V, eos_id V + 1, decoder
    vocabulary V + 2). Decoding (`mmjax.decoding`) takes them as arguments.
"""
from typing import Tuple

PAD_ID = 0
UNK_ID = 1
CTC_BLANK_ID = PAD_ID  # A padded target never emits padding, so it is free.


def special_ids(vocab_size: int) -> Tuple[int, int, int]:
  """(bos_id, eos_id, decoder vocabulary) for a target vocabulary of
  `vocab_size` ids: the two ids after it."""
  return vocab_size, vocab_size + 1, vocab_size + 2
