"""Audio encoders over log-mel / MFCC features: 2-D CNN, temporal (1-D) CNN,
bidirectional LSTM, spectrogram-patch transformer.

Each maps a waveform [B, N] in [-1, 1] and its sample mask [B, N] to tokens
[B, T, D] running over time and a mask [B, T]. The features come from
`AudioFrontend`, configured by the front-end fields every audio encoder has
(flat, so `--config.model.encoders.audio.n_mels=64` works): `features`
('logmel' | 'mfcc'), `sample_rate`, `n_fft`, `hop_length`, `n_mels`, `n_mfcc`.
With `features='precomputed'` the input is instead features [B, F, K] and a
frame mask [B, F] computed by the input pipeline's `audio_features` op.
"""
from typing import Any, ClassVar, Dict, Optional, Sequence, Tuple

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.models import layers
from mmjax.models.audio_frontend import FRONTEND_KINDS, AudioFrontend
from mmjax.models.image import ConvStack, PatchTransformer
from mmjax.models.text import RNN_CELLS, BiRNN
from mmjax.registry import ENCODERS

FRONTEND_CHOICES = {'features': FRONTEND_KINDS}


class AudioEncoder(nn.Module):
  """Base of the audio encoders: the front-end fields and `frontend()`."""
  features: str = 'logmel'  # 'logmel' | 'mfcc' | 'precomputed'
  sample_rate: int = 8000
  n_fft: int = 256
  hop_length: int = 128
  n_mels: int = 40
  n_mfcc: int = 13

  def frontend(self, waveform: jax.Array, mask: Optional[jax.Array]
               ) -> Tuple[jax.Array, jax.Array]:
    """Waveform [B, N] -> features [B, F, K] and frame mask [B, F]."""
    return AudioFrontend(self.features, self.sample_rate, self.n_fft,
                         self.hop_length, self.n_mels, self.n_mfcc,
                         name='frontend')(waveform, mask)


@ENCODERS['audio'].register('cnn')
class AudioCNN(AudioEncoder):
  """2-D CNN over the spectrogram as a 1-channel image, mean-pooled over the
  feature axis: tokens [B, F // 2^n, channels[-1]] over time."""
  channels: Sequence[int] = (32, 64, 128)
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32
  block_options: layers.BlockOptions = layers.BlockOptions()

  SIZES: ClassVar[Dict[str, Dict[str, Any]]] = {
      'tiny': dict(channels=(16, 32)),
      'small': dict(channels=(32, 64, 128)),
  }
  CHOICES: ClassVar[Dict[str, Tuple[Any, ...]]] = FRONTEND_CHOICES

  @nn.compact
  def __call__(self, waveform: jax.Array, mask: Optional[jax.Array] = None,
               *, train: bool) -> Tuple[jax.Array, jax.Array]:
    del train  # No dropout or BatchNorm.
    x, mask = self.frontend(waveform, mask)
    tokens = self.convolve(x.astype(self.dtype))
    factor = 2**len(self.channels)
    return tokens, layers.downsample_mask(mask, factor, tokens.shape[1])

  def convolve(self, x: jax.Array) -> jax.Array:
    """Features [B, F, K] -> tokens [B, F // 2^n, channels[-1]]."""
    x = ConvStack(self.channels, self.dtype, self.param_dtype,
                  kernel_grad=self.block_options.conv_kernel_grad,
                  name='convs')(
        einops.rearrange(x, 'batch time feature -> batch time feature 1'))
    return x.mean(axis=2)  # Over the feature axis.


@ENCODERS['audio'].register('tcnn')
class AudioTemporalCNN(AudioCNN):
  """1-D CNN over time whose input channels are the feature bins (as in
  TC-ResNet, Choi et al., 2019): conv (3 frames) + ReLU + max-pool 2 per
  entry of `channels`; tokens [B, F // 2^n, channels[-1]] over time.

  Each conv is one matmul of (3 frames x all bins) against the kernel, which
  XLA runs near the matmul peak; the 2-D 'cnn' convolves a 1-channel
  spectrogram with few channels, which XLA:CPU runs at a small fraction of
  it (docs/benchmarks.md, audio path). It sees the whole spectrum at every
  layer, where the 2-D CNN's field grows from 3x3 bins.
  """
  channels: Sequence[int] = (64, 128, 128)

  SIZES: ClassVar[Dict[str, Dict[str, Any]]] = {
      'tiny': dict(channels=(64, 64)),
      'small': dict(channels=(64, 128, 128)),
  }

  def convolve(self, x: jax.Array) -> jax.Array:
    return ConvStack(self.channels, self.dtype, self.param_dtype,
                     kernel_size=(3,),
                     kernel_grad=self.block_options.conv_kernel_grad,
                     name='convs')(x)


@ENCODERS['audio'].register('lstm')
class AudioRNN(AudioEncoder):
  """Bidirectional RNN over frames: tokens [B, F, 2 * hidden_dim]."""
  cell: str = 'lstm'  # 'lstm' | 'gru'
  hidden_dim: int = 128
  num_layers: int = 2
  dropout: float = 0.0
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  SIZES: ClassVar[Dict[str, Dict[str, Any]]] = {
      'tiny': dict(hidden_dim=32, num_layers=1),
      'small': dict(hidden_dim=128, num_layers=2),
  }
  CHOICES: ClassVar[Dict[str, Tuple[Any, ...]]] = dict(
      FRONTEND_CHOICES, cell=tuple(RNN_CELLS))

  @nn.compact
  def __call__(self, waveform: jax.Array, mask: Optional[jax.Array] = None,
               *, train: bool) -> Tuple[jax.Array, jax.Array]:
    x, mask = self.frontend(waveform, mask)
    x = BiRNN(self.cell, self.hidden_dim, self.num_layers, self.dropout,
              self.dtype, self.param_dtype, name='rnn')(
                  x.astype(self.dtype), mask, train=train)
    return x, mask


@ENCODERS['audio'].register('transformer')
class AudioTransformer(AudioEncoder):
  """Spectrogram-patch transformer (as in AST, Gong et al., 2021).

  Non-overlapping (time, feature) patches of `patch_size` are embedded by a
  strided conv, get learned positions and go through a pre-LN transformer.
  Tokens [B, F' * K', dim] are the patches in time-major order; a patch is
  valid when any frame it covers is.
  """
  patch_size: Tuple[int, int] = (4, 8)  # (frames, features)
  dim: int = 128
  depth: int = 4
  num_heads: int = 4
  mlp_dim: int = 256
  dropout: float = 0.0
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32
  block_options: layers.BlockOptions = layers.BlockOptions()

  SIZES: ClassVar[Dict[str, Dict[str, Any]]] = {
      'tiny': dict(patch_size=(4, 8), dim=32, depth=1, num_heads=2,
                   mlp_dim=64),
      'small': dict(patch_size=(4, 4), dim=128, depth=4, num_heads=4,
                    mlp_dim=256),
  }
  CHOICES: ClassVar[Dict[str, Tuple[Any, ...]]] = FRONTEND_CHOICES

  @nn.compact
  def __call__(self, waveform: jax.Array, mask: Optional[jax.Array] = None,
               *, train: bool) -> Tuple[jax.Array, jax.Array]:
    x, mask = self.frontend(waveform, mask)  # [B, F, K], [B, F]
    return PatchTransformer(
        tuple(self.patch_size), self.dim, self.depth, self.num_heads,
        self.mlp_dim, self.dropout, self.dtype, self.param_dtype,
        self.block_options, name='patches')(
            einops.rearrange(x, 'batch time feature -> batch time feature 1'),
            mask, train=train)
