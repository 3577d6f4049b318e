"""A fast word-speech synthesizer for the embedded speech datasets.

Every word is "spoken" as its own fixed spectral pattern: 2 to 4 segments
(more for longer words), each with three formant-like spectral peaks over a
voiced source (a harmonic comb at the speaker's pitch) or a noisy, fricative
source. The pattern is drawn from a numpy Generator seeded by a stable hash of
the word (not Python's salted `hash`), so a word sounds the same in every
process. Each utterance draws a speaker (pitch, formant scale, speaking rate,
loudness) and random gaps between words, then adds white background noise.

Synthesis happens in the spectral domain, for speed: a magnitude spectrogram
(frames x bins) is interpolated between per-segment spectra (which also gives
smooth transitions, like coarticulation), given random phases, turned into
frames by one `irfft` over all frames of all utterances, windowed and
overlap-added. Words are distinguishable from a 40-bin log-mel spectrogram
across speakers, and different speakers sound different (pitch, formants).
"""
import dataclasses
import functools
import hashlib
from typing import List, NamedTuple, Optional, Sequence, Union

import numpy as np
import scipy.fft

from mmjax import audio_io

SAMPLE_RATE = 8000
N_FFT = 256  # 32 ms frames at 8 kHz ...
HOP = 64  # ... with a 4x overlap.
# Each frame is synthesized at twice its length and its centre kept: bins of
# 15.6 Hz sample a harmonic comb finely enough that the frame is periodic at
# a low voice's pitch too (with 31 Hz bins a 100 Hz voice loses its pitch).
SPECTRUM_SIZE = 2 * N_FFT
# Parameter ranges of a speaker (uniform draws; see `draw_speaker`).
F0_RANGE = (90., 250.)  # Hz.
FORMANT_SCALE_RANGE = (0.88, 1.12)
RATE_RANGE = (0.85, 1.2)  # Speaking rate: durations are divided by it.
LOUDNESS_RANGE = (0.05, 0.15)  # RMS of the speech (full scale 1).
# Timing of an utterance, in seconds: silence before the first word and after
# the last, and the gap between two words (uniform draws).
EDGE_SILENCE = (0.02, 0.08)
WORD_GAP = (0.02, 0.08)
SEGMENT_DURATION = (0.045, 0.08)  # Seconds, at speaking rate 1.
WORD_STRETCH = (0.9, 1.1)  # Per-word duration jitter of one utterance.
_VOICED_PROBABILITY = 0.75
# Sentences rendered together: larger groups fall out of the CPU caches and
# are slower per sentence, not faster.
_GROUP = 8
# Phasors exp(i * uniform phase) that frames read at a random offset: drawing
# fresh phases for every bin costs more than the rest of the synthesis, and
# offsets into a long table are as random as the spectrogram needs.
_PHASE_TABLE_SIZE = 1 << 20
_PHASORS = np.exp(2j * np.pi * np.random.default_rng(0).random(
    _PHASE_TABLE_SIZE + SPECTRUM_SIZE)).astype(np.complex64)
# Periodic Hann: overlap-added at HOP = N_FFT / 4 it sums to a constant.
_WINDOW = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(
    np.float32)


@dataclasses.dataclass(frozen=True)
class Speaker:
  """Voice of one utterance.

  Attributes:
    f0: pitch in Hz (spacing of the voiced harmonics).
    formant_scale: factor on every formant frequency (vocal tract length).
    rate: speaking rate; segment durations are divided by it.
    loudness: RMS of the speech before noise is added (full scale 1).
  """
  f0: float
  formant_scale: float
  rate: float
  loudness: float


def draw_speaker(rng: np.random.Generator) -> Speaker:
  """A random speaker with parameters uniform in the *_RANGE constants."""
  return Speaker(f0=rng.uniform(*F0_RANGE),
                 formant_scale=rng.uniform(*FORMANT_SCALE_RANGE),
                 rate=rng.uniform(*RATE_RANGE),
                 loudness=rng.uniform(*LOUDNESS_RANGE))


class WordPattern(NamedTuple):
  """The fixed spectral pattern of one word, per segment [S, ...].

  Attributes:
    durations: [S] seconds at speaking rate 1.
    formants: [S, 3] peak frequencies in Hz (before the speaker's scale).
    bandwidths: [S, 3] peak widths (std of a Gaussian) in Hz.
    amplitudes: [S, 3] peak heights.
    voiced: [S] 1 for a harmonic source, 0 for noise.
  """
  durations: np.ndarray
  formants: np.ndarray
  bandwidths: np.ndarray
  amplitudes: np.ndarray
  voiced: np.ndarray


def _stable_seed(word: str) -> int:
  return int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], 'little')


@functools.lru_cache(maxsize=None)
def word_pattern(word: str) -> WordPattern:
  """The spectral pattern of `word`; the same in every process and run."""
  rng = np.random.default_rng(_stable_seed(word))
  # Longer words take longer to say: 2 segments up to 2 letters, 3 up to 4.
  num_segments = 2 + min(2, (len(word) - 1) // 2)
  voiced = rng.random(num_segments) < _VOICED_PROBABILITY
  # A word has a vowel somewhere (an all-noise word would be hard to hear).
  voiced[rng.integers(num_segments)] = True
  # Vowel-like peaks: F1, F2, F3 bands of human speech. Fricatives: peaks high
  # in the spectrum, wide and weaker.
  vowel_formants = rng.uniform((250., 850., 2200.), (850., 2300., 3200.),
                               size=(num_segments, 3))
  vowel_widths = rng.uniform((50., 70., 90.), (90., 130., 160.),
                             size=(num_segments, 3))
  vowel_amplitudes = rng.uniform((1., 0.3, 0.1), (1., 1., 0.5),
                                 size=(num_segments, 3))
  noise_formants = np.sort(rng.uniform(1500., 3500., size=(num_segments, 3)))
  noise_widths = rng.uniform(150., 500., size=(num_segments, 3))
  noise_amplitudes = rng.uniform(0.2, 0.6, size=(num_segments, 3))
  pick = lambda v, n: np.where(voiced[:, None], v, n)
  return WordPattern(
      durations=rng.uniform(*SEGMENT_DURATION, size=num_segments),
      formants=pick(vowel_formants, noise_formants),
      bandwidths=pick(vowel_widths, noise_widths),
      amplitudes=pick(vowel_amplitudes, noise_amplitudes),
      voiced=voiced.astype(np.float32))


def max_num_samples(words: Sequence[str],
                    sample_rate: int = SAMPLE_RATE) -> int:
  """The most samples `synthesize(words, ...)` can return, over all speakers."""
  speech = sum(word_pattern(w).durations.sum() for w in words)
  seconds = (speech * WORD_STRETCH[1] / RATE_RANGE[0] + 2 * EDGE_SILENCE[1] +
             max(len(words) - 1, 0) * WORD_GAP[1])
  # The frames are rounded up to whole hops, plus the last frame's tail.
  return int(np.ceil(seconds * sample_rate)) + N_FFT


class Utterance(NamedTuple):
  """A synthesized sentence.

  Attributes:
    waveform: int16 [N], the speech plus noise, clipped to [-1, 1] full scale.
    word_spans: int [num_words, 2], start and end sample of each word.
  """
  waveform: np.ndarray
  word_spans: np.ndarray


def synthesize(words: Sequence[str], rng: np.random.Generator, *,
               sample_rate: int = SAMPLE_RATE, noise: float = 0.01,
               speaker: Optional[Speaker] = None) -> np.ndarray:
  """Speaks `words` as one random speaker (or `speaker`) over white noise.

  Args:
    words: the sentence, one or more words (any strings).
    rng: the numpy Generator of this utterance (speaker, timing, phases and
      noise all come from it).
    sample_rate: Hz of the output.
    noise: std of the white background noise (full scale 1).
    speaker: the voice; default: drawn from `rng`.

  Returns:
    int16 [N] waveform, at most `max_num_samples(words)` samples (see
    `synthesize_batch` for the word timing too).
  """
  return synthesize_batch([words], [rng], sample_rate=sample_rate,
                          noise=noise,
                          speakers=None if speaker is None else [speaker]
                          )[0].waveform


def synthesize_batch(sentences: Sequence[Sequence[str]],
                     rngs: Sequence[np.random.Generator], *,
                     sample_rate: int = SAMPLE_RATE,
                     noise: Union[float, Sequence[float]] = 0.01,
                     speakers: Optional[Sequence[Speaker]] = None
                     ) -> List[Utterance]:
  """Speaks each sentence, rendering groups of sentences vectorised.

  Sentence i uses only `rngs[i]` (its speaker, timing, phases and noise), so
  its waveform does not depend on the other sentences of the batch.

  Args:
    sentences: each a non-empty sequence of words (any strings).
    rngs: one numpy Generator per sentence.
    sample_rate: Hz of the output.
    noise: std of the white background noise added to each waveform (full
      scale 1): one for all sentences, or one per sentence.
    speakers: one per sentence; default: drawn from each sentence's rng.

  Returns:
    One Utterance per sentence: int16 waveform [N_i] and word spans.
  """
  if len(rngs) != len(sentences):
    raise ValueError(f'synthesize_batch: {len(sentences)} sentences but '
                     f'{len(rngs)} rngs; pass one Generator per sentence.')
  noise = np.broadcast_to(np.asarray(noise, np.float32), (len(sentences),))
  if speakers is None:
    speakers = [draw_speaker(rng) for rng in rngs]
  if len(sentences) > _GROUP:
    return [u for i in range(0, len(sentences), _GROUP)
            for u in synthesize_batch(
                sentences[i:i + _GROUP], rngs[i:i + _GROUP],
                sample_rate=sample_rate, noise=noise[i:i + _GROUP],
                speakers=speakers[i:i + _GROUP])]
  bins = np.fft.rfftfreq(SPECTRUM_SIZE, 1 / sample_rate).astype(np.float32)
  hop_seconds = HOP / sample_rate
  # Knots: spectra at given times (in hops); frames interpolate between them.
  # All sentences share one frame timeline, each followed by silent frames so
  # that the overlap-add of one never reaches the next.
  knot_times, words_f0_scale, layouts = [], [], []
  first = 0  # First frame of the current sentence.
  for words, rng, speaker in zip(sentences, rngs, speakers):
    if not len(words):
      raise ValueError('synthesize_batch: got an empty sentence; every '
                       'sentence needs at least one word.')
    t = first + rng.uniform(*EDGE_SILENCE) / hop_seconds
    spans = []
    for i, word in enumerate(words):
      durations = word_pattern(word).durations
      stretch = rng.uniform(*WORD_STRETCH) / speaker.rate / hop_seconds
      bounds = t + np.concatenate([[0.], np.cumsum(durations)]) * stretch
      # A zero spectrum at each edge of the word fades it in and out; the
      # segments' spectra sit at their centres.
      knot_times.append(np.concatenate(
          [bounds[:1], (bounds[1:] + bounds[:-1]) / 2, bounds[-1:]]))
      # A little intonation: each word's pitch moves by up to +-8%.
      words_f0_scale.append((word, speaker.f0 * rng.uniform(0.92, 1.08),
                             speaker.formant_scale))
      spans.append((bounds[0], bounds[-1]))
      if i + 1 < len(words):
        t = bounds[-1] + rng.uniform(*WORD_GAP) / hop_seconds
    end = bounds[-1] + rng.uniform(*EDGE_SILENCE) / hop_seconds
    count = int(np.ceil(end - first))
    layouts.append((first, count, np.array(spans) - first))
    first += count + N_FFT // HOP - 1
  total = first
  times = np.concatenate(knot_times)
  spectra = _knot_spectra(words_f0_scale, bins)
  # Magnitude of each frame, linearly interpolated at its centre between the
  # knots around it; gaps between words and the frames between sentences lie
  # between a fade-out and a fade-in knot, both zero, and so are silent.
  centre = np.arange(total) + N_FFT / (2 * HOP)
  right = np.clip(np.searchsorted(times, centre, side='right'), 1,
                  len(times) - 1)
  left = right - 1
  weight = np.clip((centre - times[left]) /
                   np.maximum(times[right] - times[left], 1e-6),
                   0., 1.).astype(np.float32)[:, None]
  magnitude = (1 - weight) * spectra[left] + weight * spectra[right]
  # Random phases: each frame reads the phasor table at its own offset.
  offsets = np.zeros(total, np.int64)
  for rng, (start, count, _) in zip(rngs, layouts):
    offsets[start:start + count] = rng.integers(_PHASE_TABLE_SIZE, size=count)
  phases = _PHASORS[offsets[:, None] + np.arange(len(bins))]
  margin = (SPECTRUM_SIZE - N_FFT) // 2
  frames = scipy.fft.irfft(magnitude * phases, n=SPECTRUM_SIZE, axis=-1)
  frames = frames[:, margin:margin + N_FFT] * _WINDOW
  # Overlap-add: frame t covers samples [t * HOP, t * HOP + N_FFT).
  overlap = N_FFT // HOP
  blocks = frames.reshape(total, overlap, HOP)
  signal = np.zeros((total + overlap - 1, HOP), np.float32)
  for k in range(overlap):
    signal[k:k + total] += blocks[:, k]
  signal = signal.reshape(-1)
  out = []
  for rng, speaker, level, (start, count, spans) in zip(rngs, speakers, noise,
                                                         layouts):
    wave = signal[start * HOP:(start + count - 1) * HOP + N_FFT]
    # Loudness is the RMS over the words, so pauses do not make it quieter.
    sample_spans = np.round(spans * HOP).astype(np.int64)
    speech = np.concatenate([wave[s:e] for s, e in sample_spans])
    wave = wave * np.float32(
        speaker.loudness / max(np.sqrt(np.mean(speech**2)), 1e-8))
    wave += level * rng.standard_normal(len(wave), np.float32)
    out.append(Utterance(
        audio_io.to_int16(np.clip(wave, -1., 1.)),
        sample_spans))
  return out


def _knot_spectra(words_f0_scale, bins: np.ndarray) -> np.ndarray:
  """Magnitude spectra [knots, bins] of every word's knots, in order.

  Args:
    words_f0_scale: (word, pitch in Hz, formant scale) per spoken word.
    bins: [bins] frequency of each FFT bin in Hz.

  Returns:
    float32 [knots, bins]: per word, a zero spectrum at its start, one per
    segment, and a zero spectrum at its end (matching the knot times).
  """
  patterns = [word_pattern(w) for w, _, _ in words_f0_scale]
  sizes = np.array([len(p.durations) for p in patterns])
  per_segment = lambda values: np.repeat(
      np.asarray(values, np.float32), sizes)[:, None]
  f0 = per_segment([f for _, f, _ in words_f0_scale])
  scale = per_segment([s for _, _, s in words_f0_scale])
  stack = lambda field: np.concatenate(
      [getattr(p, field) for p in patterns]).astype(np.float32)
  formants, widths, heights = (
      stack(f) for f in ('formants', 'bandwidths', 'amplitudes'))
  voiced = stack('voiced')[:, None]
  # Formant envelope: Gaussian peaks at the speaker-scaled formants (kept
  # below Nyquist so that a high voice keeps its top formant).
  centres = np.minimum(formants * scale, bins[-1] - 100.)
  envelope = 0.01 + sum(
      heights[:, i, None] * np.exp(-0.5 * ((bins - centres[:, i, None]) /
                                           widths[:, i, None])**2)
      for i in range(3))
  # Voiced source: a comb with peaks at multiples of f0; noise source: flat.
  comb = (0.5 + 0.5 * np.cos(2 * np.pi * bins / f0))**4
  segments = envelope * (voiced * comb + (1 - voiced) * 0.6)
  # Segment m of word j is knot m + 2j + 1 (after j + 1 start knots and j
  # end knots).
  rows = np.arange(sizes.sum()) + np.repeat(2 * np.arange(len(sizes)) + 1,
                                            sizes)
  spectra = np.zeros((sizes.sum() + 2 * len(sizes), len(bins)), np.float32)
  spectra[rows] = segments
  return spectra
