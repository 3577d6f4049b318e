"""Audio I/O: decoding files, the int16 <-> float conversion, resampling.

The one place that defines how mmjax stores audio, used by the manifest
converter, the TFDS builders and the pipeline's audio ops (pure functions
with no mmjax imports, so a builder module loads without the package):

  * Stored audio is int16 [samples]; sample x stands for the float x /
    INT16_SCALE. INT16_SCALE is 32767, not 32768: the scale is symmetric, so
    a waveform in [-1, 1] stores without clipping and decodes back to within
    half a step, and it is the scale every dataset mmjax generates and every
    committed result was made with. (libsndfile and scipy read 16-bit PCM as
    x / 32768; a 16-bit file is decoded here as x / 32767 instead, so that
    its samples store bit-exact.) -32768, which has no positive counterpart,
    decodes to -1.00003.
  * Integer PCM of any width decodes as x / (the largest value of its dtype),
    int16 by INT16_SCALE.
  * Resampling is polyphase with the exact rational ratio of the two rates.
"""
import functools
import math
from typing import Tuple

import numpy as np
import soundfile

INT16_SCALE = 32767
# libsndfile subtypes read as integers (x / iinfo.max, see `to_float`); the
# others (float, ADPCM, ...) as float32.
_INTEGER_SUBTYPES = {'PCM_16': 'int16', 'PCM_24': 'int32', 'PCM_32': 'int32'}


def to_float(samples: np.ndarray) -> np.ndarray:
  """Signed integer PCM (any shape) -> float32 x / iinfo(dtype).max; float
  samples as float32."""
  samples = np.asarray(samples)
  if np.issubdtype(samples.dtype, np.integer):
    return samples.astype(np.float32) / np.float32(np.iinfo(samples.dtype).max)
  return samples.astype(np.float32)


def to_int16(waveform: np.ndarray) -> np.ndarray:
  """Float waveform (any shape) -> int16 round(x * INT16_SCALE), saturating
  at the int16 range."""
  return np.clip(np.round(waveform * INT16_SCALE), -32768,
                 32767).astype(np.int16)


def resample(waveform: np.ndarray, rate: int, target_rate: int,
             axis: int = 0) -> np.ndarray:
  """Float waveform at `rate` Hz -> float32 at `target_rate` Hz along `axis`
  (polyphase filter of the exact ratio); unchanged when the rates agree."""
  if rate == target_rate or not waveform.size:
    return waveform
  # Imported on first use: scipy.signal takes about a second to import,
  # which every mmjax process would otherwise pay at start-up.
  import scipy.signal  # pylint: disable=g-import-not-at-top
  g = math.gcd(rate, target_rate)
  up, down = target_rate // g, rate // g
  return scipy.signal.resample_poly(
      waveform, up, down, axis=axis,
      window=_lowpass(up, down, waveform.dtype)).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _lowpass(up: int, down: int, dtype: np.dtype) -> np.ndarray:
  """The FIR low-pass `scipy.signal.resample_poly` designs for `up` / `down`
  by default (Kaiser window, beta 5), in the dtype it would use for a
  waveform of `dtype`, designed once per ratio rather than on every call
  (the design costs more than filtering a clip of a second). Passed as
  `window`, resample_poly copies it, so results are bitwise those of its own
  design (tests/data/test_audio_io.py)."""
  import scipy.signal  # pylint: disable=g-import-not-at-top
  max_rate = max(up, down)
  taps = scipy.signal.firwin(2 * 10 * max_rate + 1, 1. / max_rate,
                             window=('kaiser', 5.0))
  floating = np.issubdtype(dtype, np.floating) or np.issubdtype(
      dtype, np.complexfloating)
  taps = taps.astype(dtype if floating else np.float64)
  taps.setflags(write=False)
  return taps


def is_riff(path: str) -> bool:
  """Whether the file starts like a WAV (RIFF, RIFX or RF64) file."""
  with open(path, 'rb') as f:
    return f.read(4) in (b'RIFF', b'RIFX', b'RF64')


def read_wav_with_scipy(path: str) -> Tuple[np.ndarray, int]:
  """A WAV libsndfile rejects -> (float32 [frames, channels], rate).

  scipy reads some WAV variants libsndfile does not (e.g. 64-bit PCM). It
  only warns (scipy.io.wavfile.WavFileWarning) about a file that ends early;
  a caller that must reject cut-off audio turns that warning into an error.
  """
  import scipy.io.wavfile  # pylint: disable=g-import-not-at-top
  rate, audio = scipy.io.wavfile.read(path)
  audio = audio.reshape(len(audio), -1)
  if np.issubdtype(audio.dtype, np.unsignedinteger):  # 8-bit WAV: offset.
    half = (int(np.iinfo(audio.dtype).max) + 1) / 2
    audio = audio.astype(np.float32)
    audio -= half
    audio /= half
    return audio, rate
  return to_float(audio), rate


def read(path: str) -> Tuple[np.ndarray, int]:
  """Decodes an audio file -> (float32 [frames, channels], sample rate).

  Any format libsndfile reads (WAV, FLAC, OGG, ...), and WAV variants only
  scipy reads. Raises what libsndfile / scipy raise for a broken file
  (soundfile.LibsndfileError is a RuntimeError).
  """
  try:
    dtype = _INTEGER_SUBTYPES.get(soundfile.info(path).subtype, 'float32')
    samples, rate = soundfile.read(path, dtype=dtype, always_2d=True)
  except soundfile.LibsndfileError:
    if not is_riff(path):
      raise
    return read_wav_with_scipy(path)
  return to_float(samples), rate


def load_int16(path: str, sample_rate: int) -> np.ndarray:
  """An audio file as stored: int16 [samples] at `sample_rate`, mono
  (channels averaged)."""
  audio, rate = read(path)
  return to_int16(resample(audio.mean(axis=1), rate, sample_rate))
