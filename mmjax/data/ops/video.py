"""Video ops: decode, resize frames, fix the number of frames, and the frame
statistics of the order-blind baselines (mean frame, shuffled frames).

Videos are THWC arrays; uint8 until `value_range(key='video')` (the image op,
which works on any array) turns them into float32. `pad_video` /
`random_temporal_crop` give every video the same number of frames and add
`video_mask` (bool [T], the real frames) and `video_present` (False for a
video without frames, e.g. a manifest row without one).
"""
import dataclasses
import hashlib
import io

import numpy as np

from mmjax.data.ops.general import get
from mmjax.data.ops.image import Resize
from mmjax.data.preprocess import Op
from mmjax.registry import OPS


def _mask_key(key: str) -> str:
  return f'{key}_mask'


def _frame_mask(example, key: str, video: np.ndarray) -> np.ndarray:
  return np.asarray(example.get(_mask_key(key), np.ones(len(video), bool)),
                    bool)


def _positive(**values) -> None:
  for name, value in values.items():
    if not isinstance(value, int) or value <= 0:
      raise ValueError(f'{name} must be a positive int, got {value!r}')


@OPS.register('decode_video')
@dataclasses.dataclass
class DecodeVideo(Op):
  """A video -> uint8 [T, H, W, channels].

  Takes arrays [T, H, W] or [T, H, W, C] (mmjax's generated datasets) or the
  bytes of a `.npy` file of one (manifest datasets). Empty bytes, a manifest
  row without a video, become one black 1x1 frame: `resize_video` gives it
  the batch's size and `pad_video` marks it absent (`video_present`).
  """
  key: str = 'video'
  channels: int = 1

  def __post_init__(self):
    if self.channels not in (1, 3):
      raise ValueError(f'channels must be 1 or 3, got {self.channels}')

  def __call__(self, example, rng):
    value = get(example, self.key, self)
    present = True
    if isinstance(value, (bytes, np.bytes_)):
      present = bool(value)
      video = (np.load(io.BytesIO(value), allow_pickle=False) if present else
               np.zeros((1, 1, 1, self.channels), np.uint8))
    else:
      video = np.asarray(value)
    if video.ndim == 3:
      video = video[..., None]
    if video.ndim != 4 or video.dtype != np.uint8:
      raise ValueError(f'op decode_video: {self.key!r} must be uint8 [T, H, '
                       f'W] or [T, H, W, C], got {video.dtype} '
                       f'{list(video.shape)}.')
    if video.shape[-1] != self.channels:
      if video.shape[-1] == 1:  # Grey -> RGB.
        video = np.repeat(video, self.channels, axis=-1)
      else:
        raise ValueError(f'op decode_video: {self.key!r} has '
                         f'{video.shape[-1]} channels, not {self.channels}.')
    out = {**example, self.key: video}
    if not present:
      out[_mask_key(self.key)] = np.zeros(len(video), bool)
    return out


@OPS.register('resize_video')
@dataclasses.dataclass
class ResizeVideo(Resize):
  """Resizes every frame of a uint8 video to `size` (int or (height,
  width)) with Pillow, as `resize` does an image."""
  key: str = 'video'

  def __call__(self, example, rng):
    video = get(example, self.key, self)
    if video.shape[1:3] != self.hw:
      video = np.stack([super(ResizeVideo, self).__call__(
          {self.key: frame}, rng)[self.key] for frame in video])
    return {**example, self.key: video}


def _window(example, key: str, start: int, frames: int):
  """Frames [start, start + frames) of the video, zero-padded at the end,
  with `<key>_mask` and `<key>_present` (False when no frame is real)."""
  video = example[key]
  mask = _frame_mask(example, key, video)[start:start + frames]
  video = video[start:start + frames]
  out = np.zeros((frames,) + video.shape[1:], video.dtype)
  out_mask = np.zeros(frames, bool)
  out[:len(video)], out_mask[:len(video)] = video, mask
  present = bool(example.get(f'{key}_present', True)) and out_mask.any()
  return {**example, key: out, _mask_key(key): out_mask,
          f'{key}_present': np.bool_(present)}


@OPS.register('pad_video')
@dataclasses.dataclass
class PadVideo(Op):
  """Keeps the first `frames` frames (or the central ones, `center=True`)
  and zero-pads shorter videos; adds `video_mask` and `video_present`."""
  frames: int
  key: str = 'video'
  center: bool = False

  def __post_init__(self):
    _positive(frames=self.frames)

  def __call__(self, example, rng):
    video = get(example, self.key, self)
    start = max(len(video) - self.frames, 0) // 2 if self.center else 0
    return _window(example, self.key, start, self.frames)


@OPS.register('random_temporal_crop')
@dataclasses.dataclass
class RandomTemporalCrop(Op):
  """`frames` consecutive frames from a uniformly random start (shorter
  videos are zero-padded); adds `video_mask` and `video_present`."""
  frames: int
  key: str = 'video'
  random = True

  def __post_init__(self):
    _positive(frames=self.frames)

  def __call__(self, example, rng):
    video = get(example, self.key, self)
    start = rng.integers(0, max(len(video) - self.frames, 0) + 1)
    return _window(example, self.key, int(start), self.frames)


@OPS.register('mean_frames')
@dataclasses.dataclass
class MeanFrames(Op):
  """The mean of the real frames as a one-frame video [1, H, W, C] float32
  (mask [1]: whether any frame was real): what a model that ignores the order
  and the number of frames sees (the frame-averaged baseline)."""
  key: str = 'video'

  def __call__(self, example, rng):
    video = np.asarray(get(example, self.key, self), np.float32)
    mask = _frame_mask(example, self.key, video)
    weights = mask.astype(np.float32)[:, None, None, None]
    mean = (video * weights).sum(0, keepdims=True) / max(mask.sum(), 1)
    return {**example, self.key: mean,
            _mask_key(self.key): np.array([mask.any()])}


@OPS.register('shuffle_frames')
@dataclasses.dataclass
class ShuffleFrames(Op):
  """Permutes the real frames of each video (padding stays at the end): the
  frame-shuffled baseline. The permutation comes from `seed` and the video's
  bytes, so the op is deterministic (allowed in eval pipelines) and the same
  video is shuffled the same way in every epoch and every run."""
  seed: int = 0
  key: str = 'video'

  def __call__(self, example, rng):
    video = np.asarray(get(example, self.key, self))
    mask = _frame_mask(example, self.key, video)
    digest = hashlib.blake2b(np.ascontiguousarray(video).tobytes(),
                             digest_size=8).digest()
    order = np.random.default_rng(
        [self.seed, int.from_bytes(digest, 'little')]).permutation(
            np.flatnonzero(mask))
    out = video.copy()
    out[np.flatnonzero(mask)] = video[order]
    return {**example, self.key: out}
