"""Dataset specs: what the rest of mmjax knows about a stored dataset.

A spec is built from `config.dataset` and reads nothing but metadata until
asked. Every dataset is a TFDS dataset in array_record files, read by Grain
through `builder.as_data_source()` (no TensorFlow):

- mmjax's own datasets (registered in `mmjax.registry.DATASETS`: 'scenes',
  'digits', 'av_digits', 'interaction', 'triad', 'moving_digits') are
  generated locally (or, for 'av_digits', from recordings shipped with the
  package) by their builders on `prepare()`;
- any other name is a TFDS dataset the user already has under `data_dir`: one
  converted by `experiments/prepare_dataset.py` from a manifest, or a TFDS
  catalog dataset (e.g. 'mnist', 'speech_commands') prepared in array_record
  format. mmjax never downloads.

`config.dataset.features` maps example keys (the modalities 'image', 'audio',
'text', 'video', the class 'label' and the 'target' text of a sequence task)
to the dataset's feature names, e.g. `{'text': 'question', 'target': 'answer'}`; a key not mapped (or mapped to '') defaults to the
feature of the same name, if there is one. A feature `<name>_present`
(manifest datasets: False where the row lacks that modality) comes along as
`<key>_present`.
"""
import os
import sys
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Tuple

import ml_collections
import numpy as np
import tensorflow_datasets as tfds
# TFDS's NumPy parser of stored tf.train.Examples: it can parse a subset of
# the features, which the public `as_data_source` cannot.
from tensorflow_datasets.core import example_parser

from mmjax.errors import ConfigError, check_fields
from mmjax.registry import DATASETS, MODALITIES

FIELDS = ('name', 'builder_config', 'data_dir', 'train_split', 'eval_split',
          'features', 'sample_rate')
EXAMPLE_KEYS = MODALITIES + ('label', 'target')
TARGETS = ('label', 'target')


class FeatureSubset:
  """Random access to some features of a split: only they are parsed and
  decoded (of a 'scenes' example, image + text + label read in half the time
  of all 12 features, and the 60 kB of audio are never decoded).

  Falls back to decoding everything when a feature left out is a nested
  sequence (stored as ragged values that TFDS's parser cannot skip).
  """

  def __init__(self, builder: tfds.core.DatasetBuilder, split: str,
               keys: Sequence[str]):
    features = builder.info.features
    specs = features.get_serialized_info()
    others = [k for k in features if k not in keys]
    if any(getattr(info, 'sequence_rank', 0) and info.sequence_rank > 1
           for k in others for info in tfds.core.utils.flatten_nest_dict(
               {k: specs[k]}).values()):
      self._full = builder.as_data_source(split=split)
      return
    self._full = None
    self._records = builder.as_data_source(
        split=split,
        deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
    self._parser = example_parser.ExampleParserNp(
        {k: specs[k] for k in keys})
    self._features = {k: features[k] for k in keys}

  def __len__(self) -> int:
    return len(self._full if self._full is not None else self._records)

  def __getitem__(self, index: int) -> Dict[str, Any]:
    if self._full is not None:
      return self._full[index]
    parsed = self._parser.parse_example(self._records[index])
    return {k: f.decode_example_np(parsed[k])
            for k, f in self._features.items()}


def _prepared_names(data_dir: Optional[str]):
  """Datasets with a prepared version under `data_dir`, for error messages."""
  root = data_dir or os.environ.get(
      'TFDS_DATA_DIR', os.path.expanduser('~/tensorflow_datasets'))
  if not os.path.isdir(root):
    return []
  return sorted(d for d in os.listdir(root)
                if not d.startswith('.') and d not in ('downloads',))


def _builder_constant(builder, name: str):
  """A constant of the module that defines the builder (or a base class of
  it): mmjax's builders state their SAMPLE_RATE and closed VOCABULARY there."""
  for cls in type(builder).__mro__:
    module = sys.modules.get(cls.__module__)
    if hasattr(module, name):
      return getattr(module, name)
  return None


class DatasetSpec:
  """One TFDS dataset, its feature mapping and its metadata.

  Attributes:
    name: the dataset name.
    modalities: the modalities read (mapped example keys).
    feature_map: example key -> dataset feature, for the modalities read and
      the targets ('label', 'target').
    num_classes, multilabel, label_names: of the 'label' target.
    meta: what preprocessing ops may need: 'sample_rate', 'vocabulary'
      (closed vocabulary of mmjax's synthetic datasets, or None),
      'num_classes', 'multilabel' and 'label_names' (of the 'label' target;
      () without one), 'dataset_dir' (where tokenizer models are stored) and
      'train_texts' (key -> iterator over the train split's texts).
  """

  def __init__(self, cfg: ml_collections.ConfigDict,
               modalities: Optional[Sequence[str]] = None):
    """Args:
      cfg: `config.dataset`.
      modalities: the modalities to read (`config.model.modalities`);
        default: every modality the dataset has.
    """
    check_fields(cfg, FIELDS, 'dataset', 'the dataset')
    self.name = cfg.name
    self.train_split, self.eval_split = cfg.train_split, cfg.eval_split
    # None lets TFDS pick $TFDS_DATA_DIR or ~/tensorflow_datasets.
    self.data_dir = os.path.expanduser(cfg.data_dir) if cfg.data_dir else None
    self.local = cfg.name in DATASETS
    self._prepared_builder = None
    self._config_name = self._check_builder_config(cfg.builder_config)
    builder = self._builder()
    self._features = builder.info.features
    feature_map = self._map_features(dict(cfg.get('features') or {}))
    available = [m for m in MODALITIES if m in feature_map]
    for m in modalities or ():
      if m not in available:
        raise ConfigError('model.modalities', (
            f'the model needs {m!r} but dataset {self.name!r} provides only '
            f'{", ".join(available)}; map a feature to it in '
            'config.dataset.features or drop it from the model.'))
    self.modalities = tuple(modalities or available)
    self.feature_map = {k: v for k, v in feature_map.items()
                        if k in self.modalities or k in TARGETS}
    self.num_classes, self.multilabel, self.label_names = self._label_info()
    self.meta = {
        'sample_rate': self._sample_rate(cfg.get('sample_rate'), builder),
        'vocabulary': _builder_constant(builder, 'VOCABULARY'),
        'num_classes': self.num_classes,
        'multilabel': self.multilabel,
        'label_names': self.label_names,
        'dataset_dir': builder.data_dir,
        'train_texts': self._train_texts,
    }

  # -- The builder -----------------------------------------------------------

  def _check_builder_config(self, name: str) -> Optional[str]:
    if not self.local:
      return name or None
    configs = [c.name for c in DATASETS.get(self.name, 'dataset.name')
               .BUILDER_CONFIGS]
    if not name:
      return configs[0]
    if name not in configs:
      raise ConfigError(
          'dataset.builder_config', f'{self.name!r} has no builder config '
          f'{name!r}; valid configs are {", ".join(configs)}.')
    return name

  def _builder(self) -> tfds.core.DatasetBuilder:
    """The dataset's builder. Until the data is prepared, a fresh one each
    time: it reads the current state of data_dir (another process may have
    prepared the data since this spec was built)."""
    if self._prepared_builder is None:
      builder = self._new_builder()
      if builder.is_prepared():
        self._prepared_builder = builder
      return builder
    return self._prepared_builder

  def _new_builder(self) -> tfds.core.DatasetBuilder:
    if self.local:
      return DATASETS.get(self.name, 'dataset.name')(
          config=self._config_name, data_dir=self.data_dir)
    name = (f'{self.name}/{self._config_name}' if self._config_name
            else self.name)
    try:
      builder = tfds.builder(name, data_dir=self.data_dir)
    except (tfds.core.registered.DatasetNotFoundError, ValueError) as e:
      raise ConfigError('dataset.name', (
          f'no dataset {name!r}: mmjax generates {", ".join(DATASETS.names())}'
          f'; other datasets must be prepared under data_dir '
          f'{self.data_dir or "(TFDS default)"} (found there: '
          f'{", ".join(_prepared_names(self.data_dir)) or "nothing"}). '
          'Convert your files with experiments/prepare_dataset.py. '
          f'TFDS said: {str(e).splitlines()[0]}')) from None
    if not builder.is_prepared():
      raise ConfigError('dataset.name', (
          f'{name!r} is not prepared under {builder.data_dir_root}, and mmjax '
          'downloads nothing. Prepare it where you have the source data: '
          f'`tfds build {self.name} --data_dir=DIR --file_format=array_record`'
          ', or convert your own files with experiments/prepare_dataset.py.'))
    if builder.info.file_format != tfds.core.FileFormat.ARRAY_RECORD:
      raise ConfigError('dataset.name', (
          f'{name!r} is stored as {builder.info.file_format.value}; Grain '
          'reads array_record. Convert it with `tfds convert_format '
          f'--dataset_version_dir={builder.data_dir} '
          '--out_file_format=array_record`.'))
    return builder

  def prepare(self) -> None:
    """Generates mmjax's own datasets into data_dir unless already there."""
    if self.local:
      self._builder().download_and_prepare()

  # -- Features and metadata -------------------------------------------------

  def _map_features(self, mapping: Dict[str, str]) -> Dict[str, str]:
    """Example key -> feature name, for the keys the dataset can fill.

    An empty or missing entry means the feature named like the key, if any.
    """
    names = set(self._features.keys())
    for key, feature in mapping.items():
      if key not in EXAMPLE_KEYS:
        raise ConfigError(f'dataset.features.{key}', (
            f'unknown example key; map any of {", ".join(EXAMPLE_KEYS)} to '
            'a dataset feature.'))
      if feature and feature not in names:
        raise ConfigError(f'dataset.features.{key}', (
            f'{self.name!r} has no feature {feature!r}; its features are '
            f'{", ".join(sorted(names))}.'))
    resolved = {k: mapping.get(k) or k for k in EXAMPLE_KEYS}
    return {k: f for k, f in resolved.items() if f in names}

  def _label_info(self) -> Tuple[int, bool, Tuple[str, ...]]:
    """(num_classes, multilabel, names) of the 'label' target, or (0, False, ())."""
    if 'label' not in self.feature_map:
      return 0, False, ()
    feature = self._features[self.feature_map['label']]
    multilabel = isinstance(feature, tfds.features.Sequence)
    label = feature.feature if multilabel else feature
    if not isinstance(label, tfds.features.ClassLabel):
      raise ConfigError('dataset.features.label', (
          f'feature {self.feature_map["label"]!r} of {self.name!r} is not a '
          'ClassLabel (or a Sequence of them); map label to one that is.'))
    return label.num_classes, multilabel, tuple(label.names)

  def _sample_rate(self, configured, builder) -> Optional[int]:
    """The stored audio's rate: config, else what the dataset says."""
    if configured:
      return configured
    if 'audio' not in self.feature_map:
      return None
    feature = self._features[self.feature_map['audio']]
    return (getattr(feature, 'sample_rate', None) or
            _builder_constant(builder, 'SAMPLE_RATE') or
            (builder.info.metadata or {}).get('sample_rate'))

  # -- Reading ---------------------------------------------------------------

  @property
  def splits(self) -> Dict[str, int]:
    """Split name -> number of examples (known before generating, for
    mmjax's own datasets)."""
    builder = self._builder()
    if builder.is_prepared():
      return {k: v.num_examples for k, v in builder.info.splits.items()}
    return dict(builder.builder_config.split_sizes)

  def num_examples(self, split: str, field: str = 'dataset.train_split') -> int:
    """Examples in `split`; `field` is the config path named in errors."""
    splits = self.splits
    if split not in splits:
      raise ConfigError(field, f'{self.name!r} has no split {split!r}; its '
                        f'splits are {", ".join(splits)}.')
    return splits[split]

  def source(self, split: str, field: str = 'dataset.train_split',
             features: Optional[Sequence[str]] = None) -> FeatureSubset:
    """A random-access source of `split`'s stored examples (dicts of NumPy)
    holding `features` (default: those `select` reads)."""
    self.num_examples(split, field)
    builder = self._builder()
    if not builder.is_prepared():
      raise FileNotFoundError(
          f'{builder.name}/{builder.builder_config.name} is not prepared in '
          f'{builder.data_dir_root}; call spec.prepare() first.')
    if features is None:
      mapped = list(self.feature_map.values())
      features = mapped + [f'{f}_present' for f in mapped
                           if f'{f}_present' in self._features]
    return FeatureSubset(builder, split, features)

  def select(self, stored: Mapping[str, Any]) -> Dict[str, Any]:
    """A stored example -> the example keys preprocessing starts from.

    'label' becomes int32 [] (multi-label: float32 multi-hot [num_classes]).
    """
    example = {}
    for key, feature in self.feature_map.items():
      value = stored[feature]
      if key == 'label':
        if self.multilabel:
          hot = np.zeros(self.num_classes, np.float32)
          hot[np.asarray(value, np.int64)] = 1.
          value = hot
        else:
          value = np.asarray(value, np.int32)
      example[key] = value
      if f'{feature}_present' in stored:
        example[f'{key}_present'] = np.asarray(stored[f'{feature}_present'],
                                               bool)
    return example

  def _train_texts(self, key: str) -> Iterator[str]:
    """The texts of `key` in the train split (for training tokenizers)."""
    feature = self.feature_map.get(key, key)
    source = self.source(self.train_split, features=[feature])
    for i in range(len(source)):
      text = source[i][feature]
      yield text.decode('utf-8') if isinstance(text, bytes) else text

