"""Text ops: tokenise to fixed-length ids with a mask; text from the class
label."""
import dataclasses
import os

import numpy as np

from mmjax.data import tokenizers
from mmjax.data.ops.general import get
from mmjax.data.preprocess import Op
from mmjax.registry import OPS

TOKENIZERS = ('word', 'byte', 'sentencepiece')


@OPS.register('tokenize')
@dataclasses.dataclass
class Tokenize(Op):
  """Text -> int32 ids [length] (0 = padding) and `<key>_mask` bool [length].

  Tokenizers: 'word' (the dataset's closed vocabulary, for mmjax's synthetic
  datasets), 'byte' (UTF-8 bytes, any text) or 'sentencepiece' (a model with
  at most `vocab_size` pieces, trained offline on the train split's text of
  this key and stored with the dataset). Sets `meta['vocab_size']`. The op
  is the pipeline's `Preprocess.tokenizers[key]`: its `get_tokenizer()`
  decodes the ids of generated text and its `max_vocab_size` sizes a
  decoder's output.
  """
  length: int
  key: str = 'text'
  tokenizer: str = 'word'
  vocab_size: int = 1000  # sentencepiece only.

  def __post_init__(self):
    if not isinstance(self.length, int) or self.length <= 0:
      raise ValueError(f'length must be a positive int, got {self.length!r}')
    if self.tokenizer not in TOKENIZERS:
      raise ValueError(f'tokenizer must be one of {", ".join(TOKENIZERS)}, '
                       f'got {self.tokenizer!r}')
    self._tokenizer = None

  def _model_file(self, meta) -> str:
    return os.path.join(meta['dataset_dir'],
                        f'sentencepiece_{self.key}_{self.vocab_size}.model')

  @property
  def max_vocab_size(self) -> int:
    """The vocabulary size, or for SentencePiece its bound `vocab_size`
    (known before the model is trained; the model may have fewer pieces)."""
    if self.tokenizer == 'sentencepiece':
      return self.vocab_size
    return self._tokenizer.vocab_size

  def get_tokenizer(self) -> tokenizers.Tokenizer:
    """The tokenizer (SentencePiece loads lazily, in each worker)."""
    if self._tokenizer is None:
      self._tokenizer = tokenizers.SentencePieceTokenizer(self._model)
    return self._tokenizer

  def tokenizers(self):
    return {self.key: self}

  def setup(self, meta):
    if self.tokenizer == 'word':
      if not meta.get('vocabulary'):
        raise ValueError("tokenizer 'word' needs a dataset with a closed "
                         "vocabulary; use 'byte' or 'sentencepiece'.")
      self._tokenizer = tokenizers.WordTokenizer(meta['vocabulary'])
      meta['vocab_size'] = self._tokenizer.vocab_size
    elif self.tokenizer == 'byte':
      self._tokenizer = tokenizers.ByteTokenizer()
      meta['vocab_size'] = self._tokenizer.vocab_size
    else:
      self._model = self._model_file(meta)
      if os.path.exists(self._model):
        meta['vocab_size'] = tokenizers.SentencePieceTokenizer(
            self._model).vocab_size
      else:  # Known once `prepare` has trained the model.
        meta['vocab_size'] = None

  def prepare(self, meta):
    if self.tokenizer == 'sentencepiece' and not os.path.exists(self._model):
      tokenizers.train_sentencepiece(meta['train_texts'](self.key),
                                     self.vocab_size, self._model)

  def __call__(self, example, rng):
    ids, mask = self.get_tokenizer().encode(get(example, self.key, self),
                                            self.length)
    return {**example, self.key: ids, f'{self.key}_mask': mask}


@OPS.register('class_text')
@dataclasses.dataclass
class ClassText(Op):
  """Writes text made from the example's class label: example[key] =
  `template.format(name)`, with name the class name of example['label']
  (int32 []), e.g. `class_text("a drawing of the digit {}")|tokenize(16,
  tokenizer="byte")` conditions a generator on its class as text.

  Needs a single-label 'label' target whose classes have names
  (`meta['label_names']`); replaces any text already at `key`. A
  SentencePiece `tokenize` after it trains on the dataset's own text of
  `key`, not on these texts; use 'byte' or 'word' there.
  """
  template: str = '{}'
  key: str = 'text'

  def __post_init__(self):
    if not isinstance(self.template, str):
      raise ValueError(f'template must be a string, got {self.template!r}')
    try:
      takes_name = self.template.format('a') != self.template.format('b')
    except (IndexError, KeyError, ValueError):
      takes_name = False
    if not takes_name:
      raise ValueError(f'template {self.template!r} must have one field '
                       "'{}' for the class name.")
    self._names = ()

  def setup(self, meta):
    if meta.get('multilabel') or not meta.get('label_names'):
      raise ValueError(
          "class_text needs a dataset whose single-label 'label' target has "
          'class names; this one has '
          f'{"a multi-label target" if meta.get("multilabel") else "none"}.'
          ' Map label to a ClassLabel feature in config.dataset.features.')
    self._names = tuple(meta['label_names'])

  def __call__(self, example, rng):
    label = np.asarray(get(example, 'label', self))
    if label.ndim or not np.issubdtype(label.dtype, np.integer):
      raise ValueError(f'op ClassText: label must be an int class id, got '
                       f'{label.dtype} {label.shape}.')
    if not 0 <= label < len(self._names):
      raise ValueError(f'op ClassText: label {int(label)} is outside the '
                       f'{len(self._names)} named classes.')
    return {**example, self.key: self.template.format(self._names[int(label)])}
