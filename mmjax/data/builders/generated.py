"""The base of mmjax's generated TFDS datasets."""
import dataclasses
import sys
from typing import Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
import tensorflow_datasets as tfds


def bytes_tensor(shape: Tuple[Optional[int], ...],
                 dtype: np.dtype) -> tfds.features.Tensor:
  """An array feature stored as its raw bytes: images (an Image feature would
  need TensorFlow to encode) and int16 audio (see `mmjax.audio_io`); raw
  bytes rather than an int64 list are about 5x faster to write, and
  smaller."""
  return tfds.features.Tensor(shape=shape, dtype=dtype,
                              encoding=tfds.features.Encoding.BYTES)


@dataclasses.dataclass(eq=False)
class NoisyConfig(tfds.core.BuilderConfig):
  """Split sizes and noise levels of one variant of a generated dataset
  (subclasses set the dataset's default noise).

  Attributes:
    train_size, test_size: examples per split.
    image_noise: largest std of the Gaussian pixel noise, as a fraction of 255
      (each image draws its std uniformly below it).
    audio_noise: largest std of the white background noise (full scale 1;
      each clip draws its std uniformly below it).
  """
  train_size: int = 8192
  test_size: int = 2048
  image_noise: float = 0.
  audio_noise: float = 0.

  @property
  def split_sizes(self) -> Dict[str, int]:
    return {'train': self.train_size, 'test': self.test_size}


class GeneratedBuilder(tfds.core.GeneratorBasedBuilder,
                       skip_registration=True):
  """A dataset generated locally (nothing is downloaded) into array_record
  files, the format Grain reads (TFRecord would need TensorFlow).

  Subclasses define `_features()`, `_generate_chunk(split, indices)` and
  builder configs with a `split_sizes` property (split -> examples). Example i
  of a split is generated from i alone, so examples are stored in index order
  (the pipeline shuffles) and chunks only bound the memory of vectorised
  generation.
  """
  CHUNK = 512  # Examples generated together.

  def __init__(self, *, file_format='array_record', **kwargs):
    super().__init__(file_format=file_format, **kwargs)

  def _features(self) -> Dict[str, tfds.features.FeatureConnector]:
    raise NotImplementedError

  def _generate_chunk(self, split: str,
                      indices: Sequence[int]) -> Dict[str, np.ndarray]:
    """Feature -> values [len(indices), ...] of examples `indices` of `split`."""
    raise NotImplementedError

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=sys.modules[type(self).__module__].__doc__,
        features=tfds.features.FeaturesDict(self._features()),
        # Keep example i at position i: they are independent draws already.
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {split: self._generate_examples(split, size)
            for split, size in self.builder_config.split_sizes.items()}

  def _generate_examples(self, split: str,
                         size: int) -> Iterator[Tuple[int, dict]]:
    for start in range(0, size, self.CHUNK):
      indices = range(start, min(start + self.CHUNK, size))
      chunk = self._generate_chunk(split, indices)
      for row, index in enumerate(indices):
        yield index, {k: v[row] for k, v in chunk.items()}
