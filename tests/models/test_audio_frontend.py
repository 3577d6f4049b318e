"""The audio DSP (mmjax.dsp) and the models' front end against an independent
NumPy/SciPy computation."""
import math

import jax
import numpy as np
import pytest
import scipy.fft
import scipy.signal

from mmjax import dsp
from mmjax.models import audio_frontend as af

SR = 8000
# (n_fft, hop_length, n_mels, fmin, fmax): the encoders' defaults and an odd
# one (non power of two, hop not dividing n_fft, a restricted mel range).
SETTINGS = [(256, 128, 40, 0.0, None), (200, 75, 24, 100.0, 3500.0)]


def reference_filterbank(sample_rate, n_fft, n_mels, fmin, fmax):
  """HTK triangles, one bin and one filter at a time, in float64."""
  def mel(hz):
    return 2595.0 * math.log10(1.0 + hz / 700.0)

  def hz(m):
    return 700.0 * (10.0**(m / 2595.0) - 1.0)

  step = (mel(fmax) - mel(fmin)) / (n_mels + 1)
  edges = [hz(mel(fmin) + i * step) for i in range(n_mels + 2)]
  filters = np.zeros((n_fft // 2 + 1, n_mels))
  for m in range(n_mels):
    left, centre, right = edges[m:m + 3]
    for k in range(n_fft // 2 + 1):
      f = k * sample_rate / n_fft
      if left < f <= centre:
        filters[k, m] = (f - left) / (centre - left)
      elif centre < f < right:
        filters[k, m] = (right - f) / (right - centre)
  return filters


def reference_log_mel(waveform, n_fft, hop, n_mels, fmin, fmax,
                      offset=1e-6):
  fmax = SR / 2 if fmax is None else fmax
  window = scipy.signal.get_window('hann', n_fft)  # Periodic by default.
  out = []
  for clip in np.asarray(waveform, np.float64):
    starts = range(0, len(clip) - n_fft + 1, hop)
    frames = np.stack([clip[s:s + n_fft] for s in starts])
    power = np.abs(np.fft.rfft(frames * window, axis=-1))**2
    out.append(np.log(power @ reference_filterbank(SR, n_fft, n_mels, fmin,
                                                   fmax) + offset))
  return np.stack(out)


def sweep_and_noise():
  """[2, 4000]: a 50 Hz -> 3.9 kHz chirp and white noise (0.5 s at 8 kHz)."""
  t = np.arange(4000) / SR
  chirp = 0.8 * scipy.signal.chirp(t, f0=50, t1=t[-1], f1=3900)
  noise = np.random.default_rng(0).uniform(-1, 1, 4000)
  return np.stack([chirp, noise]).astype(np.float32)


@pytest.mark.parametrize('n_fft,hop,n_mels,fmin,fmax', SETTINGS)
def test_log_mel_and_mfcc_match_reference(n_fft, hop, n_mels, fmin, fmax):
  waveform = sweep_and_noise()
  log_mel = jax.jit(dsp.log_mel_spectrogram, static_argnums=range(1, 7))(
      waveform, SR, n_fft, hop, n_mels, fmin, fmax)
  expected = reference_log_mel(waveform, n_fft, hop, n_mels, fmin, fmax)
  assert log_mel.shape == (2, dsp.num_frames(4000, n_fft, hop), n_mels)
  np.testing.assert_allclose(log_mel, expected, rtol=1e-4, atol=1e-4)

  mfcc = dsp.mfcc(log_mel, 13)
  expected_mfcc = scipy.fft.dct(expected, type=2, norm='ortho', axis=-1)
  np.testing.assert_allclose(mfcc, expected_mfcc[..., :13], rtol=1e-4,
                             atol=1e-3)


@pytest.mark.parametrize('frequency', [300.0, 1000.0, 2500.0])
def test_pure_tone_peaks_in_its_mel_bin(frequency):
  t = np.arange(4000) / SR
  tone = np.sin(2 * np.pi * frequency * t)[None].astype(np.float32)
  log_mel = dsp.log_mel_spectrogram(tone, SR, 256, 128, 40)
  # The filter whose centre lies nearest the tone (in mel) responds most.
  step = dsp.hz_to_mel(SR / 2) / 41
  expected = round(float(dsp.hz_to_mel(frequency)) / step) - 1
  assert np.argmax(np.asarray(log_mel[0]).mean(axis=0)) == expected


# Hops that divide n_fft (shifted slices) and that do not (gathered blocks).
HOPS = [(256, 128), (256, 64), (400, 160), (200, 75)]


@pytest.mark.parametrize('n_fft,hop', HOPS)
@pytest.mark.parametrize('xp', [np, jax.numpy])
def test_frames_are_the_samples_each_frame_covers(n_fft, hop, xp):
  x = np.random.default_rng(0).normal(size=(3, 1001)).astype(np.float32)
  got = dsp.frames(xp.asarray(x), n_fft, hop)
  starts = range(0, 1001 - n_fft + 1, hop)
  np.testing.assert_array_equal(
      got, np.stack([[row[s:s + n_fft] for s in starts] for row in x]))


@pytest.mark.parametrize('n_fft,hop', HOPS)
def test_frame_mask_matches_framing(n_fft, hop):
  n = 1000
  lengths = np.array([1000, 700, n_fft + hop, n_fft + hop - 1, 100, 0])
  mask = np.arange(n)[None, :] < lengths[:, None]
  frames = np.asarray(dsp.frame_mask(mask, n_fft, hop))
  assert frames.shape == (len(lengths), dsp.num_frames(n, n_fft, hop))
  # Valid frames of a padded clip are the frames of the unpadded clip.
  expected = [dsp.num_frames(l, n_fft, hop) if l >= n_fft else 0
              for l in lengths]
  np.testing.assert_array_equal(frames.sum(axis=1), expected)
  np.testing.assert_array_equal(frames, np.arange(frames.shape[1])[None]
                                < np.array(expected)[:, None])
  # A hole invalidates exactly the frames that cover it.
  holed = np.ones((1, n), bool)
  holed[0, 300] = False
  np.testing.assert_array_equal(
      dsp.frame_mask(holed, n_fft, hop)[0],
      [not s <= 300 < s + n_fft for s in range(0, n - n_fft + 1, hop)])


@pytest.mark.parametrize('kind,width', [('logmel', 40), ('mfcc', 13)])
def test_frontend_ignores_padding(kind, width):
  frontend = af.AudioFrontend(kind=kind)
  waveform = sweep_and_noise()
  mask = np.arange(4000)[None, :] < np.array([[4000], [2000]])
  features, valid = jax.jit(frontend.apply)({}, waveform, mask)
  noisy = np.where(mask, waveform, 100.0)
  features_noisy, _ = frontend.apply({}, noisy, mask)
  assert features.shape == (2, 30, width)
  np.testing.assert_array_equal(valid.sum(axis=1), [30, 14])
  np.testing.assert_allclose(features, features_noisy, atol=1e-5)
  np.testing.assert_array_equal(features[1, 14:], 0.0)
  # The valid frames are those of the unpadded clip.
  unpadded, _ = frontend.apply({}, waveform[1:, :2000])
  np.testing.assert_allclose(features[1, :14], unpadded[0], atol=1e-5)


def test_short_clip_and_bad_arguments_raise():
  with pytest.raises(ValueError, match='shorter than one frame'):
    dsp.log_mel_spectrogram(np.zeros((1, 100)), SR, 256, 128, 40)
  with pytest.raises(ValueError, match='fmax'):
    dsp.mel_filterbank(SR, 256, 40, fmax=5000.0)
  with pytest.raises(ValueError, match='n_mfcc'):
    dsp.mfcc(np.zeros((1, 3, 40)), 41)


def test_numpy_and_jax_features_agree():
  """The input pipeline (NumPy) and the model (JAX) compute the same features."""
  waveform = sweep_and_noise()
  on_host = dsp.log_mel_spectrogram(waveform, SR, 256, 128, 40)
  on_device = dsp.log_mel_spectrogram(jax.numpy.asarray(waveform), SR, 256,
                                     128, 40)
  assert isinstance(on_host, np.ndarray) and on_host.dtype == np.float32
  assert isinstance(on_device, jax.Array)
  np.testing.assert_allclose(on_host, on_device, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(dsp.mfcc(on_host, 13), dsp.mfcc(on_device, 13),
                             rtol=1e-4, atol=1e-3)
  mask = np.arange(4000)[None] < np.array([[4000], [1000]])
  np.testing.assert_array_equal(dsp.frame_mask(mask, 256, 128),
                                dsp.frame_mask(jax.numpy.asarray(mask), 256, 128))


def test_precomputed_features_pass_through():
  features = np.random.default_rng(0).normal(size=(2, 30, 40)).astype(np.float32)
  mask = np.arange(30)[None] < np.array([[30], [14]])
  out, valid = af.AudioFrontend(kind='precomputed').apply({}, features, mask)
  np.testing.assert_array_equal(valid, mask)
  np.testing.assert_array_equal(out[0], features[0])
  np.testing.assert_array_equal(out[1, :14], features[1, :14])
  np.testing.assert_array_equal(out[1, 14:], 0.0)
  with pytest.raises(ValueError, match='audio_features op'):
    af.AudioFrontend(kind='precomputed').apply({}, features[:, :, 0])
