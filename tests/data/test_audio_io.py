"""The one int16 scale and the audio decoding of mmjax.audio_io."""
import math

import numpy as np
import pytest
import scipy.signal
import soundfile

from mmjax import audio_io


def test_every_int16_sample_round_trips():
  samples = np.arange(-32768, 32768).astype(np.int16)
  waveform = audio_io.to_float(samples)
  assert waveform.dtype == np.float32
  np.testing.assert_array_equal(audio_io.to_int16(waveform), samples)
  # Symmetric: full scale is +-1; -32768 lies just below -1.
  assert audio_io.to_float(np.int16(32767)) == 1.0
  assert audio_io.to_float(np.int16(-32767)) == -1.0
  assert audio_io.to_int16(np.array([1.5, -1.5])).tolist() == [32767, -32768]


def test_a_16_bit_file_is_read_bit_exact(tmp_path):
  samples = np.random.default_rng(0).integers(-32768, 32768, (300, 2),
                                              dtype=np.int16)
  soundfile.write(tmp_path / 'x.wav', samples, 8000)
  waveform, rate = audio_io.read(str(tmp_path / 'x.wav'))
  assert rate == 8000 and waveform.shape == (300, 2)
  np.testing.assert_array_equal(audio_io.to_int16(waveform), samples)
  mono = audio_io.load_int16(str(tmp_path / 'x.wav'), 8000)
  np.testing.assert_array_equal(
      mono, audio_io.to_int16(audio_io.to_float(samples).mean(axis=1)))


def test_resample_keeps_a_tone():
  tone = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000).astype(np.float32)
  out = audio_io.resample(tone, 16000, 8000)
  assert out.dtype == np.float32 and out.shape == (8000,)
  expected = np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)
  np.testing.assert_allclose(out[50:-50], expected[50:-50], atol=2e-3)
  assert audio_io.resample(tone, 8000, 8000) is tone


@pytest.mark.parametrize('rate,target', [(8000, 16000), (16000, 8000),
                                         (22050, 16000), (44100, 16000)])
@pytest.mark.parametrize('dtype', [np.float32, np.float64, np.int16])
def test_resample_is_scipys_default_filter_bitwise(rate, target, dtype):
  # The filter is designed once per ratio (`_lowpass`); the result must be
  # scipy's own resample_poly's, with the filter it designs on every call.
  rng = np.random.default_rng(rate)
  waveform = (rng.standard_normal((2, rate // 4)) * 1000).astype(dtype)
  for axis, x in ((0, waveform[0]), (1, waveform)):
    g = math.gcd(rate, target)
    expected = scipy.signal.resample_poly(x, target // g, rate // g,
                                          axis=axis).astype(np.float32)
    for _ in range(2):  # The second call uses the kept filter.
      np.testing.assert_array_equal(
          audio_io.resample(x, rate, target, axis=axis), expected)
