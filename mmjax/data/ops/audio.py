"""Audio ops: to float, resample, crop, pad (with a sample mask), features and
SpecAugment.

A waveform is float32 [N] in [-1, 1] after `decode_audio`. `audio_features`
turns it into log-mel or MFCC features [frames, K] with the functions the
models' front end uses (`mmjax.dsp`, NumPy path), for models configured
with `features='precomputed'`; `spec_augment` then masks them.
"""
import dataclasses

import numpy as np

from mmjax import audio_io
from mmjax import dsp
from mmjax.data.ops.general import get
from mmjax.data.preprocess import Op
from mmjax.registry import OPS


def _mask_key(key: str) -> str:
  return f'{key}_mask'


def _positive(**values) -> None:
  for name, value in values.items():
    if not isinstance(value, int) or value <= 0:
      raise ValueError(f'{name} must be a positive int, got {value!r}')


class _NeedsRate(Op):
  """An op that needs the audio's sample rate from the dataset metadata."""

  def setup(self, meta):
    if not meta.get('sample_rate'):
      raise ValueError('the dataset has no sample rate; set '
                       'config.dataset.sample_rate.')
    self.sample_rate = meta['sample_rate']


@OPS.register('decode_audio')
@dataclasses.dataclass
class DecodeAudio(Op):
  """Integer PCM (int16 / int32) or float audio -> float32 [N] in [-1, 1]
  (`audio_io.to_float`: int16 x is x / 32767)."""
  key: str = 'audio'

  def __call__(self, example, rng):
    audio = np.asarray(get(example, self.key, self))
    if audio.ndim != 1:
      raise ValueError(f'op decode_audio: {self.key!r} must be mono [samples],'
                       f' got shape {audio.shape}.')
    return {**example, self.key: audio_io.to_float(audio)}


@OPS.register('resample')
@dataclasses.dataclass
class Resample(_NeedsRate):
  """Resamples float audio to `rate` Hz (polyphase, exact rational ratio)."""
  rate: int
  key: str = 'audio'

  def __post_init__(self):
    _positive(rate=self.rate)

  def setup(self, meta):
    super().setup(meta)
    meta['sample_rate'] = self.rate

  def __call__(self, example, rng):
    audio = get(example, self.key, self)
    return {**example,
            self.key: audio_io.resample(audio, self.sample_rate, self.rate)}


@OPS.register('random_crop_audio')
@dataclasses.dataclass
class RandomCropAudio(Op):
  """A random window of `length` samples of clips longer than that."""
  length: int
  key: str = 'audio'
  random = True

  def __post_init__(self):
    _positive(length=self.length)

  def __call__(self, example, rng):
    audio = get(example, self.key, self)
    if len(audio) > self.length:
      start = rng.integers(0, len(audio) - self.length + 1)
      audio = audio[start:start + self.length]
    return {**example, self.key: audio}


@OPS.register('pad_audio')
@dataclasses.dataclass
class PadAudio(Op):
  """Truncates or zero-pads to `length` samples; adds `<key>_mask` (bool [length]).

  An existing mask is carried along, so padding twice stays exact.
  """
  length: int
  key: str = 'audio'

  def __post_init__(self):
    _positive(length=self.length)

  def __call__(self, example, rng):
    audio = get(example, self.key, self)
    mask = example.get(_mask_key(self.key), np.ones(len(audio), bool))
    out = np.zeros(self.length, np.float32)
    out_mask = np.zeros(self.length, bool)
    n = min(len(audio), self.length)
    out[:n], out_mask[:n] = audio[:n], mask[:n]
    return {**example, self.key: out, _mask_key(self.key): out_mask}


@OPS.register('audio_features')
@dataclasses.dataclass
class AudioFeatures(_NeedsRate):
  """Waveform [N] (+ mask) -> log-mel or MFCC features [frames, K] (+ frame mask).

  The same function the models' front end runs, so a model with
  `features='precomputed'` sees what a model with `features=kind` would.
  """
  kind: str = 'logmel'
  n_fft: int = 256
  hop_length: int = 128
  n_mels: int = 40
  n_mfcc: int = 13
  key: str = 'audio'

  def __post_init__(self):
    if self.kind not in dsp.FEATURE_KINDS:
      raise ValueError(f'kind must be one of {", ".join(dsp.FEATURE_KINDS)}, '
                       f'got {self.kind!r}')
    _positive(n_fft=self.n_fft, hop_length=self.hop_length,
              n_mels=self.n_mels, n_mfcc=self.n_mfcc)

  def __call__(self, example, rng):
    audio = get(example, self.key, self)
    mask = example.get(_mask_key(self.key), np.ones(len(audio), bool))
    features, valid = dsp.features(
        audio[None], mask[None], self.kind, self.sample_rate, self.n_fft,
        self.hop_length, self.n_mels, self.n_mfcc)
    features, valid = features[0].astype(np.float32), valid[0]
    return {**example, self.key: features, _mask_key(self.key): valid}


@OPS.register('spec_augment')
@dataclasses.dataclass
class SpecAugment(Op):
  """SpecAugment masking (Park et al. 2019) of features [frames, K].

  Sets `freq_masks` bands of up to `max_freq_width` feature bins and
  `time_masks` spans of up to `max_time_width` frames to zero (the value the
  front end gives padding), each width drawn uniformly.
  """
  freq_masks: int = 2
  max_freq_width: int = 8
  time_masks: int = 2
  max_time_width: int = 10
  key: str = 'audio'
  random = True

  def __call__(self, example, rng):
    features = get(example, self.key, self)
    if features.ndim != 2:
      raise ValueError(f'op spec_augment: {self.key!r} must be features '
                       f'[frames, bins]; add audio_features before it, got '
                       f'shape {features.shape}.')
    features = features.copy()
    for axis, count, max_width in ((1, self.freq_masks, self.max_freq_width),
                                   (0, self.time_masks, self.max_time_width)):
      size = features.shape[axis]
      for _ in range(count):
        width = rng.integers(0, min(max_width, size) + 1)
        start = rng.integers(0, size - width + 1)
        index = [slice(None), slice(None)]
        index[axis] = slice(start, start + width)
        features[tuple(index)] = 0.
    return {**example, self.key: features}
