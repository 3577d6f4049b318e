"""The audio front end of the models: waveform -> log-mel or MFCC features,
a parameter-free Flax module over the pure functions of `mmjax.dsp` (the
conventions of framing, mel scale and masks are documented there).
"""
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax import dsp

# What an audio encoder can take: a waveform turned into one of
# dsp.FEATURE_KINDS inside the model, or features the input pipeline already
# computed.
FRONTEND_KINDS = dsp.FEATURE_KINDS + ('precomputed',)


class AudioFrontend(nn.Module):
  """Waveform [B, N], sample mask -> features [B, F, K], frame mask [B, F].

  K is `n_mels` for kind 'logmel' and `n_mfcc` for 'mfcc'. Kind 'precomputed'
  takes features [B, F, K] and their frame mask [B, F] from the input pipeline
  (its `audio_features` op) instead of a waveform. Features of invalid frames
  are set to 0, so encoders whose receptive field reaches past the last valid
  frame (convolutions) still see nothing of the padding. It has no parameters.
  """
  kind: str = 'logmel'  # 'logmel' | 'mfcc' | 'precomputed'
  sample_rate: int = 8000
  n_fft: int = 256
  hop_length: int = 128
  n_mels: int = 40
  n_mfcc: int = 13

  def __call__(self, waveform: jax.Array, mask: Optional[jax.Array] = None):
    if self.kind not in FRONTEND_KINDS:
      raise ValueError(f'audio features must be one of {FRONTEND_KINDS}, got '
                       f'{self.kind!r}')
    waveform = jnp.asarray(waveform)  # The model computes with JAX, always.
    if self.kind == 'precomputed':
      if waveform.ndim != 3:
        raise ValueError(
            "audio features 'precomputed' expects features [batch, frames, "
            f'features] from the input pipeline, got shape {waveform.shape}; '
            "add an audio_features op to the pipeline or use 'logmel'.")
      if mask is None:
        mask = jnp.ones(waveform.shape[:2], bool)
      return jnp.where(mask[..., None], waveform, 0.0), mask
    if mask is None:
      mask = jnp.ones(waveform.shape, bool)
    return dsp.features(waveform, mask, self.kind, self.sample_rate,
                        self.n_fft, self.hop_length, self.n_mels, self.n_mfcc)
