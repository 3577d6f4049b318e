"""Dataset specs: what the rest of mmjax knows about a dataset.

A spec is built from `config.dataset` (`DATASETS.get(name, ...)(cfg)`) and
reads or generates nothing until asked. It names the modalities and classes, prepares the TFDS data
on request, opens a split as a Grain random-access source and turns one stored
example into model inputs (`preprocess`). Pipelines and models use only this
interface, so a new dataset is a new spec plus, usually, a TFDS builder.
"""
import os
from typing import Dict, Tuple

import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from mmjax.data import tokenizers
from mmjax.data.builders import triad
from mmjax.errors import ConfigError
from mmjax.registry import DATASETS

TOKENIZERS = ('word', 'byte')


class DatasetSpec:
  """A dataset stored by a TFDS builder in array_record files.

  Subclasses set `builder_cls`, `modalities`, `num_classes`, `multilabel` and
  implement `preprocess`.
  """
  builder_cls: type
  modalities: Tuple[str, ...]
  num_classes: int
  multilabel: bool

  def __init__(self, cfg: ml_collections.ConfigDict):
    configs = {c.name: c for c in self.builder_cls.BUILDER_CONFIGS}
    if cfg.builder_config not in configs:
      raise ConfigError(
          'dataset.builder_config', f'{cfg.name!r} has no builder config '
          f'{cfg.builder_config!r}; valid configs are {", ".join(configs)}.')
    self.builder_config = configs[cfg.builder_config]
    # None lets TFDS pick $TFDS_DATA_DIR or ~/tensorflow_datasets.
    self.data_dir = os.path.expanduser(cfg.data_dir) if cfg.data_dir else None

  def _builder(self) -> tfds.core.DatasetBuilder:
    # A fresh builder reads the current state of data_dir (another process
    # may have prepared it since this spec was built).
    return self.builder_cls(config=self.builder_config.name,
                            data_dir=self.data_dir)

  def prepare(self) -> None:
    """Generates the dataset into data_dir unless it is already there."""
    self._builder().download_and_prepare()

  @property
  def splits(self) -> Dict[str, int]:
    """Split name -> number of examples."""
    return dict(self.builder_config.split_sizes)

  def num_examples(self, split: str, field: str = 'dataset.train_split') -> int:
    """Examples in `split`; `field` is the config path named in errors."""
    if split not in self.splits:
      raise ConfigError(field, f'unknown split {split!r}; valid splits are '
                        f'{", ".join(self.splits)}.')
    return self.splits[split]

  def source(self, split: str, field: str = 'dataset.train_split'):
    """A random-access source of `split` (Grain reads it; yields numpy)."""
    self.num_examples(split, field)
    builder = self._builder()
    if not builder.is_prepared():
      raise FileNotFoundError(
          f'{builder.name}/{builder.builder_config.name} is not prepared in '
          f'{builder.data_dir_root}; call spec.prepare() first.')
    return builder.as_data_source(split=split)

  def preprocess(self, example: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """One stored example -> the model's inputs (numpy, no batch axis)."""
    raise NotImplementedError

  def _empty_example(self) -> Dict[str, np.ndarray]:
    """A stored example of zeros (strings empty), as the source returns it."""
    features = self._builder().info.features.get_tensor_info()
    return {k: b'' if info.np_dtype == object else
            np.zeros(info.shape, info.np_dtype)
            for k, info in features.items()}

  def example_spec(self) -> Dict[str, jax.ShapeDtypeStruct]:
    """Shape and dtype of every key `preprocess` returns."""
    return {k: jax.ShapeDtypeStruct(v.shape, v.dtype)
            for k, v in self.preprocess(self._empty_example()).items()}


@DATASETS.register('triad')
class TriadSpec(DatasetSpec):
  """The embedded image + audio + text dataset (see `builders/triad.py`).

  Config fields (`config.dataset`): name, builder_config ('default' | 'tiny'),
  data_dir, text_length, and optionally tokenizer ('word', the default and
  exact for triad's fixed vocabulary, or 'byte').

  `preprocess` returns:
    image: float32 [32, 32, 3] scaled from [0, 255] to [-1, 1].
    audio: float32 [4000] in [-1, 1); audio_mask: bool [4000], all true
      (every clip has the same length).
    text: int32 [text_length] token ids, 0 = padding; text_mask: bool.
    label: int32 [] in [0, 8).
  """
  builder_cls = triad.Triad
  modalities = ('image', 'audio', 'text')
  num_classes = len(triad.LABEL_NAMES)
  multilabel = False
  sample_rate = triad.SAMPLE_RATE

  def __init__(self, cfg: ml_collections.ConfigDict):
    super().__init__(cfg)
    if not isinstance(cfg.text_length, int) or cfg.text_length <= 0:
      raise ConfigError('dataset.text_length', 'must be a positive int, got '
                        f'{cfg.text_length!r}.')
    self.text_length = cfg.text_length
    tokenizer = cfg.get('tokenizer', 'word')
    if tokenizer not in TOKENIZERS:
      raise ConfigError('dataset.tokenizer', f'unknown tokenizer {tokenizer!r};'
                        f' valid tokenizers are {", ".join(TOKENIZERS)}.')
    self.tokenizer = (tokenizers.WordTokenizer(triad.VOCABULARY)
                      if tokenizer == 'word' else tokenizers.ByteTokenizer())

  @property
  def vocab_size(self) -> int:
    """Rows the text embedding needs: padding, unknown and every word."""
    return self.tokenizer.vocab_size

  def preprocess(self, example):
    text, text_mask = self.tokenizer.encode(example['text'], self.text_length)
    audio = example['audio']
    return {
        'image': example['image'].astype(np.float32) / 127.5 - 1.,
        'audio': audio.astype(np.float32) / 32768.,
        'audio_mask': np.ones(audio.shape, bool),
        'text': text,
        'text_mask': text_mask,
        'label': np.asarray(example['label'], np.int32),
    }
