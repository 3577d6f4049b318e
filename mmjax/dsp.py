"""Audio DSP as pure functions: framing, mel filterbank, log-mel spectrogram,
MFCC and frame masks.

This is the one implementation of audio features in mmjax, below both the
input pipeline and the models: the input pipeline's `audio_features` op calls
`features` on NumPy arrays and the models' `AudioFrontend`
(mmjax/models/audio_frontend.py) on JAX arrays, so both agree. The functions
compute with NumPy when given NumPy arrays (host-side, no device dispatch per
example) and with jax.numpy otherwise.

Conventions:
  framing   not centered (like ``tf.signal.stft`` or ``librosa`` with
            ``center=False``): frame t covers samples
            [t * hop_length, t * hop_length + n_fft), so a clip of N samples
            has ``1 + (N - n_fft) // hop_length`` frames and trailing samples
            that do not fill a frame are dropped. No padding is invented.
  window    periodic Hann, ``scipy.signal.get_window('hann', n_fft)``.
  spectrum  power |rfft(window * frame)|^2 over n_fft // 2 + 1 bins, unscaled.
  mel scale HTK, mel(f) = 2595 log10(1 + f / 700). Filter m is a triangle over
            linear frequency with peak 1 at edge m + 1 of ``n_mels + 2`` edges
            equally spaced in mel from fmin to fmax, falling to 0 at edges m
            and m + 2 (no area normalisation).
  log-mel   ln(mel power + log_offset).
  MFCC      orthonormal DCT-II of the log-mel over the mel axis, first n_mfcc.
  masks     a frame is valid when every sample it covers is valid. With
            padding at the end, the valid frames of a padded clip are exactly
            the frames of the unpadded clip, so padding never reaches a valid
            frame's features.
"""
import math
from typing import Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.fft

FEATURE_KINDS = ('logmel', 'mfcc')


def _xp(x):
  """NumPy for NumPy inputs (the input pipeline), jax.numpy otherwise."""
  return np if isinstance(x, np.ndarray) else jnp


def num_frames(num_samples: int, n_fft: int, hop_length: int) -> int:
  """Frames in a clip of `num_samples` (see the framing convention above)."""
  if num_samples < n_fft:
    raise ValueError(f'a clip of {num_samples} samples is shorter than one '
                     f'frame (n_fft={n_fft}); use a smaller n_fft or pad it.')
  return 1 + (num_samples - n_fft) // hop_length


def _block_frames(x: jax.Array, n_fft: int, hop_length: int,
                  reduce_block=None) -> jax.Array:
  """Frames of each row as gathered blocks: [B, N] -> [B, frames, n_fft / g,
  g] with g = gcd(n_fft, hop_length), or [B, frames, n_fft / g] when
  `reduce_block` (e.g. `all`) reduces each block first.

  A frame is n_fft / g whole blocks of g samples, so the gather moves rows
  of g samples instead of single samples, which XLA:CPU does much faster;
  when the hop divides n_fft (g = hop_length) there is no gather at all.
  """
  count = num_frames(x.shape[-1], n_fft, hop_length)
  g = math.gcd(n_fft, hop_length)
  stride, width = hop_length // g, n_fft // g
  used = ((count - 1) * stride + width) * g
  blocks = x[:, :used].reshape(x.shape[0], -1, g)
  if reduce_block is not None:
    blocks = reduce_block(blocks, axis=-1)
  if stride == 1:  # hop_length divides n_fft: shifted slices, no gather.
    xp = _xp(blocks)
    return xp.stack([blocks[:, k:k + count] for k in range(width)], axis=2)
  return blocks[:, stride * np.arange(count)[:, None] + np.arange(width)]


def frames(x: jax.Array, n_fft: int, hop_length: int) -> jax.Array:
  """Overlapping frames of each row: [B, N] -> [B, frames, n_fft]."""
  out = _block_frames(x, n_fft, hop_length)
  return out.reshape(*out.shape[:2], n_fft)


def hz_to_mel(hz):
  """HTK mel scale of frequencies in Hz (floats or NumPy arrays)."""
  return 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)


def mel_to_hz(mel):
  return 700.0 * (10.0**(np.asarray(mel, np.float64) / 2595.0) - 1.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int,
                   fmin: float = 0.0, fmax: Optional[float] = None
                   ) -> np.ndarray:
  """Triangular HTK mel filters as a float32 [n_fft // 2 + 1, n_mels] matrix.

  NumPy, so that under `jit` it is a compile-time constant.
  """
  fmax = sample_rate / 2 if fmax is None else fmax
  if not 0 <= fmin < fmax <= sample_rate / 2:
    raise ValueError(f'mel range needs 0 <= fmin < fmax <= sample_rate / 2, '
                     f'got fmin={fmin}, fmax={fmax}, sample_rate={sample_rate}')
  bin_hz = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)[:, None]  # [bins, 1]
  edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
  lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
  rising = (bin_hz - lower) / (center - lower)
  falling = (upper - bin_hz) / (upper - center)
  return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def log_mel_spectrogram(waveform: jax.Array, sample_rate: int, n_fft: int,
                        hop_length: int, n_mels: int, fmin: float = 0.0,
                        fmax: Optional[float] = None,
                        log_offset: float = 1e-6) -> jax.Array:
  """Log-mel power spectrogram: waveform [B, N] -> [B, frames, n_mels]."""
  xp = _xp(waveform)
  x = frames(xp.asarray(waveform, xp.float32), n_fft, hop_length)
  # Periodic Hann, the window of spectral analysis (scipy's default).
  window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
  spectrum = xp.fft.rfft(x * window.astype(np.float32), axis=-1)
  power = xp.real(spectrum)**2 + xp.imag(spectrum)**2
  filters = mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax)
  if xp is np:
    mel = power @ filters
  else:
    mel = jnp.matmul(power, filters, precision=jax.lax.Precision.HIGHEST)
  return xp.log(mel + log_offset).astype(np.float32)


def mfcc(log_mel: jax.Array, n_mfcc: int) -> jax.Array:
  """MFCCs: log-mel [B, F, n_mels] -> [B, F, n_mfcc] (orthonormal DCT-II)."""
  if not 0 < n_mfcc <= log_mel.shape[-1]:
    raise ValueError(f'n_mfcc must be in [1, n_mels={log_mel.shape[-1]}], '
                     f'got {n_mfcc}')
  dct = scipy.fft.dct if isinstance(log_mel, np.ndarray) else jax.scipy.fft.dct
  return dct(log_mel, type=2, axis=-1, norm='ortho')[..., :n_mfcc]


def frame_mask(sample_mask: jax.Array, n_fft: int, hop_length: int
               ) -> jax.Array:
  """Valid frames: sample mask [B, N] -> [B, frames] bool, all samples valid."""
  xp = _xp(sample_mask)
  # A frame is valid when each of its blocks is: reducing the blocks first
  # gathers n_fft / g values per frame instead of n_fft.
  return _block_frames(xp.asarray(sample_mask, bool), n_fft, hop_length,
                       xp.all).all(axis=-1)


def features(waveform: jax.Array, mask: jax.Array, kind: str,
             sample_rate: int, n_fft: int, hop_length: int, n_mels: int,
             n_mfcc: int) -> Tuple[jax.Array, jax.Array]:
  """Features of a batch of clips and their valid frames.

  waveform [B, N] and its sample mask [B, N] -> (features [B, F, K], frame
  mask [B, F] bool), K = n_mels for kind 'logmel' and n_mfcc for 'mfcc'.
  Features of invalid frames are 0, so a model whose receptive field reaches
  past the last valid frame (convolutions) sees nothing of the padding.
  """
  if kind not in FEATURE_KINDS:
    raise ValueError(f'audio features must be one of {FEATURE_KINDS}, got '
                     f'{kind!r}')
  out = log_mel_spectrogram(waveform, sample_rate, n_fft, hop_length, n_mels)
  if kind == 'mfcc':
    out = mfcc(out, n_mfcc)
  valid = frame_mask(mask, n_fft, hop_length)
  return _xp(out).where(valid[..., None], out, 0.0), valid
