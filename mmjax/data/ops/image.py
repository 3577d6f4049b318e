"""Image ops: decode, resize, crop, flip, value range, normalise.

Images are HWC arrays; uint8 until `value_range` or `normalize` turn them into
float32, which is where every pipeline should end.
"""
import dataclasses
import io
from typing import Sequence, Tuple, Union

import numpy as np
from PIL import Image

from mmjax.data.ops.general import get
from mmjax.data.preprocess import Op
from mmjax.registry import OPS

Size = Union[int, Sequence[int]]
_RESAMPLING = {'nearest': Image.Resampling.NEAREST,
               'bilinear': Image.Resampling.BILINEAR,
               'bicubic': Image.Resampling.BICUBIC,
               'area': Image.Resampling.BOX}


def _size(size: Size) -> Tuple[int, int]:
  """32 -> (32, 32); (h, w) stays; both positive."""
  hw = (size, size) if isinstance(size, int) else tuple(size)
  if len(hw) != 2 or not all(isinstance(s, int) and s > 0 for s in hw):
    raise ValueError(f'size must be a positive int or (height, width), got '
                     f'{size!r}')
  return hw


def _check_crop(image: np.ndarray, hw: Tuple[int, int], op: Op) -> None:
  if image.shape[0] < hw[0] or image.shape[1] < hw[1]:
    raise ValueError(f'op {type(op).__name__}: image {image.shape[:2]} is '
                     f'smaller than the crop {hw}; resize first.')


@OPS.register('decode_image')
@dataclasses.dataclass
class DecodeImage(Op):
  """Encoded image bytes (PNG, JPEG, ... via Pillow) -> uint8 [H, W, channels].

  Arrays pass through (a [H, W] one gains a channel axis). Empty bytes, the
  manifest datasets' missing image, become a 1x1 black image: a later
  `resize` gives it the batch's shape and `image_present` marks it missing.
  """
  key: str = 'image'
  channels: int = 3

  def __post_init__(self):
    if self.channels not in (1, 3):
      raise ValueError(f'channels must be 1 or 3, got {self.channels}')

  def __call__(self, example, rng):
    value = get(example, self.key, self)
    if isinstance(value, (bytes, np.bytes_)):
      if not value:
        image = np.zeros((1, 1, self.channels), np.uint8)
      else:
        mode = 'L' if self.channels == 1 else 'RGB'
        image = np.asarray(Image.open(io.BytesIO(value)).convert(mode))
    else:
      image = np.asarray(value)
    if image.ndim == 2:
      image = image[..., None]
    if image.shape[-1] != self.channels:
      if image.shape[-1] == 1:  # Grey -> RGB.
        image = np.repeat(image, self.channels, axis=-1)
      else:
        raise ValueError(f'op decode_image: {self.key!r} has '
                         f'{image.shape[-1]} channels, not {self.channels}.')
    return {**example, self.key: image}


@OPS.register('resize')
@dataclasses.dataclass
class Resize(Op):
  """Resizes a uint8 image to `size` (int or (height, width)) with Pillow."""
  size: Size
  key: str = 'image'
  method: str = 'bilinear'

  def __post_init__(self):
    self.hw = _size(self.size)
    if self.method not in _RESAMPLING:
      raise ValueError(f'method must be one of {", ".join(_RESAMPLING)}, got '
                       f'{self.method!r}')

  def __call__(self, example, rng):
    image = get(example, self.key, self)
    if image.dtype != np.uint8:
      raise ValueError(f'op resize: {self.key!r} must be uint8 (resize before '
                       f'value_range / normalize), got {image.dtype}.')
    if image.shape[:2] != self.hw:
      pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
      resized = np.asarray(pil.resize(self.hw[::-1], _RESAMPLING[self.method]))
      image = resized.reshape(*self.hw, image.shape[-1])
    return {**example, self.key: image}


@OPS.register('central_crop')
@dataclasses.dataclass
class CentralCrop(Op):
  """The central `size` window of the image."""
  size: Size
  key: str = 'image'

  def __post_init__(self):
    self.hw = _size(self.size)

  def __call__(self, example, rng):
    image = get(example, self.key, self)
    _check_crop(image, self.hw, self)
    top = (image.shape[0] - self.hw[0]) // 2
    left = (image.shape[1] - self.hw[1]) // 2
    return {**example,
            self.key: image[top:top + self.hw[0], left:left + self.hw[1]]}


@OPS.register('random_crop')
@dataclasses.dataclass
class RandomCrop(Op):
  """A `size` window at a uniformly random position."""
  size: Size
  key: str = 'image'
  random = True

  def __post_init__(self):
    self.hw = _size(self.size)

  def __call__(self, example, rng):
    image = get(example, self.key, self)
    _check_crop(image, self.hw, self)
    top = rng.integers(0, image.shape[0] - self.hw[0] + 1)
    left = rng.integers(0, image.shape[1] - self.hw[1] + 1)
    return {**example,
            self.key: image[top:top + self.hw[0], left:left + self.hw[1]]}


@OPS.register('flip_lr')
@dataclasses.dataclass
class FlipLR(Op):
  """Mirrors the image left-right with probability `p`."""
  key: str = 'image'
  p: float = 0.5
  random = True

  def __call__(self, example, rng):
    image = get(example, self.key, self)
    if rng.random() < self.p:
      image = image[:, ::-1]
    return {**example, self.key: image}


@OPS.register('value_range')
@dataclasses.dataclass
class ValueRange(Op):
  """Maps [in_min, in_max] (uint8: [0, 255]) linearly to float32 [low, high]."""
  low: float = -1.0
  high: float = 1.0
  key: str = 'image'
  in_min: float = 0.0
  in_max: float = 255.0

  def __call__(self, example, rng):
    image = np.asarray(get(example, self.key, self), np.float32)
    scale = (self.high - self.low) / (self.in_max - self.in_min)
    return {**example,
            self.key: (image - self.in_min) * np.float32(scale) + self.low}


@OPS.register('normalize')
@dataclasses.dataclass
class Normalize(Op):
  """(image / 255 - mean) / std per channel, float32 (ImageNet-style)."""
  mean: Sequence[float] = (0.485, 0.456, 0.406)
  std: Sequence[float] = (0.229, 0.224, 0.225)
  key: str = 'image'

  def __call__(self, example, rng):
    image = np.asarray(get(example, self.key, self), np.float32) / 255.
    mean = np.asarray(self.mean, np.float32)
    std = np.asarray(self.std, np.float32)
    return {**example, self.key: (image - mean) / std}
