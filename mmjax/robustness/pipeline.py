"""Corruptions as a step of the evaluation preprocessing.

`corrupted(pp, modality, noise, level, seed)` returns the run's eval
preprocessing with one `Corrupt` op inserted where the noise makes sense:

- text: just before the `tokenize` op of the modality, on the string (typos
  and dropped words then go through the run's own tokenizer: a misspelt word
  becomes the word tokenizer's unknown id, or other bytes / pieces);
- audio: on the float waveform, after the modality's last op or, when the
  pipeline computes features (`audio_features`), just before that op;
- image, video: after the modality's last op, on the arrays the model
  receives, whose value range follows from the ops (`image_range`; videos
  take `value_range(..., key='video')`).

Each example's corruption draws from a generator seeded by `seed`, the noise
name and a hash of the example's content at that point, so it is
deterministic per example whatever the batch size, the number of hosts or the
order of reading, and every run with the same data and preprocessing up to
that point sees the same corrupted eval set (identical examples get identical
noise). The level does not enter the seed: the levels of one noise are nested
(see `mmjax.robustness.corruptions`).
"""
import dataclasses
import hashlib
import zlib
from typing import Any, Callable, List, Optional, Tuple

import numpy as np

from mmjax.data.ops.audio import AudioFeatures
from mmjax.data.ops.general import get
from mmjax.data.ops.image import Normalize, ValueRange
from mmjax.data.ops.text import Tokenize
from mmjax.data.preprocess import Op, Preprocess
from mmjax.robustness.corruptions import NOISES


def _content_hash(value) -> int:
  """A 64-bit hash of a string, bytes or array (its bytes, shape and dtype)."""
  if isinstance(value, str):
    data = value.encode('utf-8')
  elif isinstance(value, (bytes, np.bytes_)):
    data = bytes(value)
  else:
    array = np.ascontiguousarray(value)
    data = array.tobytes() + repr((array.shape, array.dtype.str)).encode()
  return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(),
                        'little')


@dataclasses.dataclass
class Corrupt(Op):
  """Applies `NOISES[modality][noise]` at `level` to `example[modality]`.

  Deterministic (eval pipelines allow it): the generator comes from `seed`,
  the noise name and the example's content. `value_range` ((low, high)) is
  the images' range, scalars or per-channel arrays.
  """
  modality: str
  noise: str
  level: float
  seed: int = 0
  value_range: Optional[Tuple[Any, Any]] = None

  def __post_init__(self):
    self._fn: Callable = NOISES[self.modality][self.noise]

  def __call__(self, example, rng):
    value = get(example, self.modality, self)
    rng = np.random.default_rng([self.seed, zlib.crc32(self.noise.encode()),
                                 _content_hash(value)])
    if self.modality == 'image':
      value = self._fn(value, self.level, rng, *self.value_range)
    elif self.modality == 'video':
      value = self._fn(value, self.level, rng, *self.value_range,
                       example.get(f'{self.modality}_mask'))
    elif self.modality == 'audio':
      value = self._fn(value, self.level, rng,
                       example.get(f'{self.modality}_mask'))
    else:
      value = self._fn(value, self.level, rng)
    return {**example, self.modality: value}


def _keyed(ops: List[Op], key: str) -> List[int]:
  """Indices of the ops acting on `key`."""
  return [i for i, op in enumerate(ops) if getattr(op, 'key', None) == key]


def image_range(ops: List[Op], key: str = 'image'):
  """(low, high) of the images after `ops`: uint8 [0, 255] until a
  `value_range` (its [low, high]) or `normalize` (per channel,
  ((0 - mean) / std, (1 - mean) / std)); the other image ops keep values."""
  low, high = 0., 255.
  for i in _keyed(ops, key):
    op = ops[i]
    if isinstance(op, ValueRange):
      low, high = op.low, op.high
    elif isinstance(op, Normalize):
      mean = np.asarray(op.mean, np.float32)
      std = np.asarray(op.std, np.float32)
      low, high = -mean / std, (1 - mean) / std
  return low, high


def _position(ops: List[Op], modality: str) -> int:
  """Where the modality's corruption goes in `ops` (see the module doc)."""
  keyed = _keyed(ops, modality)
  if modality == 'text':
    tokenize = [i for i in keyed if isinstance(ops[i], Tokenize)]
    if not tokenize:
      raise ValueError(f'the eval preprocessing has no tokenize op for '
                       f'{modality!r}; text corruptions act on the string '
                       'before it.')
    return tokenize[0]
  if modality == 'audio':
    features = [i for i in keyed if isinstance(ops[i], AudioFeatures)]
    if features:
      return features[0]
  return keyed[-1] + 1 if keyed else 0


def corrupted(pp: Preprocess, modality: str, noise: str, level: float,
              seed: int = 0) -> Preprocess:
  """`pp` with `Corrupt(modality, noise, level, seed)` inserted (see the
  module doc); `pp` itself is unchanged."""
  if noise not in NOISES.get(modality, {}):
    raise ValueError(f'unknown noise {modality}/{noise}; valid: '
                     + ', '.join(f'{m}/{n}' for m in NOISES
                                 for n in NOISES[m]))
  i = _position(pp.ops, modality)
  op = Corrupt(modality, noise, level, seed,
               image_range(pp.ops[:i], modality)
               if modality in ('image', 'video') else None)
  return dataclasses.replace(pp, ops=[*pp.ops[:i], op, *pp.ops[i:]])
