"""Tests of the word-speech synthesizer."""
import os
import subprocess
import sys

import numpy as np
import pytest

from mmjax import dsp
from mmjax.data.builders import digits
from mmjax.data.builders import scenes
from mmjax.data.builders import speech

SPEAKER = speech.Speaker(f0=120., formant_scale=1., rate=1., loudness=0.1)


def _rng(*seed):
  return np.random.default_rng(seed)


def _log_mel(waveform, span=None):
  """Log-mel [frames, 40] of a waveform (or of its samples in `span`)."""
  x = waveform.astype(np.float32) / 32767
  if span is not None:
    x = x[span[0]:span[1]]
  return dsp.log_mel_spectrogram(
      x[None], speech.SAMPLE_RATE, 256, 128, 40, log_offset=1e-4)[0]


def _word_feature(utterance):
  """The word's log-mel resampled to 12 frames, flattened, mean removed."""
  (start, end), = utterance.word_spans
  log_mel = _log_mel(utterance.waveform, (max(start - 128, 0), end + 128))
  grid = np.linspace(0, len(log_mel) - 1, 12)
  resampled = np.stack([np.interp(grid, np.arange(len(log_mel)), band)
                        for band in log_mel.T], 1)
  return (resampled - resampled.mean()).ravel()


def test_same_words_and_rng_give_the_same_samples():
  words = ['a', 'red', 'circle']
  first = speech.synthesize(words, _rng(3), noise=0.02)
  np.testing.assert_array_equal(first, speech.synthesize(words, _rng(3),
                                                         noise=0.02))
  assert not np.array_equal(first, speech.synthesize(words, _rng(4),
                                                     noise=0.02))


def test_a_sentence_does_not_depend_on_its_batch():
  sentences = [['one'], ['two', 'three']] * 10  # 20: several groups.
  batch = speech.synthesize_batch(sentences, [_rng(i) for i in range(20)])
  for i in (1, 17):
    alone = speech.synthesize(sentences[i], _rng(i), noise=0.01)
    np.testing.assert_array_equal(batch[i].waveform, alone)


def test_word_patterns_are_the_same_in_every_process():
  # Python's str hash is salted per process (PYTHONHASHSEED); the pattern of
  # a word must not be.
  # speech.py alone, without the (slow to import) mmjax package around it.
  script = ('import importlib.util as u; '
            f's = u.spec_from_file_location("speech", {speech.__file__!r}); '
            'm = u.module_from_spec(s); s.loader.exec_module(m); '
            'print(m.word_pattern("circle").formants.tolist())')
  outputs = {
      subprocess.run([sys.executable, '-c', script], check=True,
                     capture_output=True, text=True,
                     env=dict(os.environ, PYTHONHASHSEED=seed)).stdout
      for seed in ('1', '2')}
  assert outputs == {f'{speech.word_pattern("circle").formants.tolist()}\n'}


def test_words_are_recognisable_across_speakers():
  """1-nearest-neighbour over log-mels: other speakers' words as templates."""
  words = sorted(set(scenes.VOCABULARY + digits.DIGIT_WORDS))
  num_speakers = 4
  features = np.array([[
      _word_feature(u) for u in speech.synthesize_batch(
          [[w]] * num_speakers, [_rng(7, k) for k in range(num_speakers)],
          noise=0.02)] for w in words])  # [words, speakers, dim]
  correct = 0
  for k in range(num_speakers):
    templates = np.delete(features, k, axis=1)  # [words, speakers - 1, dim]
    distances = ((features[:, k, None, None] - templates[None])**2).sum(-1)
    correct += (distances.min(-1).argmin(-1) == np.arange(len(words))).sum()
  assert correct / (len(words) * num_speakers) >= 0.95


def test_different_words_differ_more_than_renderings_of_one_word():
  def feature(word, seed):
    return _word_feature(speech.synthesize_batch(
        [[word]], [_rng(seed)], noise=0.005, speakers=[SPEAKER])[0])
  same = np.linalg.norm(feature('red', 1) - feature('red', 2))
  different = np.linalg.norm(feature('red', 1) - feature('blue', 1))
  assert different > 2 * same


def _pitch(waveform, span):
  """The f0 (Hz) of a voiced stretch, from its autocorrelation peak."""
  x = waveform[span[0]:span[1]].astype(np.float64)
  x -= x.mean()
  corr = np.correlate(x, x, 'full')[len(x) - 1:]
  lo, hi = speech.SAMPLE_RATE // 300, speech.SAMPLE_RATE // 80
  return speech.SAMPLE_RATE / (lo + np.argmax(corr[lo:hi]))


def test_speakers_differ_in_pitch_and_spectrum():
  low = speech.Speaker(f0=100., formant_scale=0.9, rate=1., loudness=0.1)
  high = speech.Speaker(f0=220., formant_scale=1.1, rate=1., loudness=0.1)
  # Several renderings per speaker of 'a', a word with a voiced segment.
  low_u, high_u = (speech.synthesize_batch(
      [['a']] * 5, [_rng(s) for s in range(5)], noise=0., speakers=[v] * 5)
                   for v in (low, high))
  for voice, utterances in ((low, low_u), (high, high_u)):
    pitch = np.median([_pitch(u.waveform, u.word_spans[0])
                       for u in utterances])
    # Within the per-word intonation (+-8%) and the lag resolution; the
    # median skips an occasional octave error of the autocorrelation.
    np.testing.assert_allclose(pitch, voice.f0, rtol=0.12)
  # The same speaker's renderings are closer to each other than to the
  # other speaker's.
  mean_spectrum = lambda u: _log_mel(u.waveform, u.word_spans[0]).mean(0)
  low_s = [mean_spectrum(u) for u in low_u]
  high_s = [mean_spectrum(u) for u in high_u]
  within = np.mean([np.linalg.norm(low_s[0] - s) for s in low_s[1:]])
  between = np.mean([np.linalg.norm(low_s[0] - s) for s in high_s])
  assert between > 2 * within


def test_longer_sentences_give_longer_audio_within_the_bound():
  words = ['a', 'green', 'square', 'and', 'a', 'blue', 'circle', 'above', 'a',
           'red', 'triangle', 'of']
  for seed in range(10):
    lengths = [len(speech.synthesize(words[:n], _rng(seed), noise=0.))
               for n in (1, 4, 8, 12)]
    assert lengths == sorted(lengths) and len(set(lengths)) == 4, lengths
    bounds = [speech.max_num_samples(words[:n]) for n in (1, 4, 8, 12)]
    assert all(n <= b for n, b in zip(lengths, bounds)), (lengths, bounds)


def test_word_spans_are_ordered_and_the_speech_is_there():
  words = ['is', 'there', 'a', 'blue', 'square']
  utterance, = speech.synthesize_batch([words], [_rng(0)], noise=0.,
                                       speakers=[SPEAKER])
  spans = utterance.word_spans
  assert spans.shape == (5, 2)
  assert (spans[:, 1] > spans[:, 0]).all() and (spans[1:, 0] >
                                                spans[:-1, 1]).all()
  wave = utterance.waveform.astype(np.float64) / 32767
  speech_rms = np.sqrt(np.mean(np.concatenate(
      [wave[s:e] for s, e in spans])**2))
  np.testing.assert_allclose(speech_rms, SPEAKER.loudness, rtol=0.01)
  # Outside the spans (widened by the half frame that a frame's window
  # reaches beyond its centre) the clip is silent.
  inside = np.zeros(len(wave), bool)
  for s, e in spans:
    inside[max(s - speech.N_FFT // 2, 0):e + speech.N_FFT // 2] = True
  assert (~inside).sum() > 1000  # The edges and three of the gaps.
  assert np.abs(wave[~inside]).max() < 1e-4
  assert np.sum(wave[inside]**2) > 0


@pytest.mark.parametrize('noise', [0.01, 0.1])
def test_noise_is_white_noise_of_the_given_std(noise):
  words = ['what', 'shape']
  clean = speech.synthesize(words, _rng(5), noise=0.)
  noisy = speech.synthesize(words, _rng(5), noise=noise)
  added = (noisy.astype(np.float64) - clean) / 32767
  np.testing.assert_allclose(added.std(), noise, rtol=0.1)
  spectrum = np.abs(np.fft.rfft(added))**2
  low, high = spectrum[:len(spectrum) // 2], spectrum[len(spectrum) // 2:]
  np.testing.assert_allclose(low.mean(), high.mean(), rtol=0.2)  # White.


def test_bad_input_is_reported():
  with pytest.raises(ValueError, match='one Generator per sentence'):
    speech.synthesize_batch([['a'], ['b']], [_rng(0)])
  with pytest.raises(ValueError, match='empty sentence'):
    speech.synthesize([], _rng(0))
