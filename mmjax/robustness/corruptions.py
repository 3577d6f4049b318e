"""Corruptions of one example's modality, for the robustness protocol.

Pure functions `noise(x, level, rng, ...) -> x'` with `level` in [0, 1]:
level 0 returns `x` itself, and the corruption grows with the level. Every
function draws the same random numbers at every level and lets the level
decide how much of them it uses (the noise is scaled by it, or an element is
hit where its uniform draw is below it), so for one example the corruptions
are nested across levels: what level 0.3 changes, level 0.6 changes too, and
the points of a curve differ by the level alone.

MultiBench (pliang279/MultiBench, `robustness/`) draws, per example, whether
to corrupt it at all with probability `noise_level` and then applies a noise
of strength `noise_level`; here every example is corrupted with a strength
set by the level, so a curve measures one noise type at a time.

Images: HWC arrays with values in [low, high] (per channel or scalar, see
`mmjax.robustness.pipeline.image_range`): `gaussian`, `salt_and_pepper`,
`blur`, `contrast`. The result keeps the dtype and stays in range (uint8
values are rounded).
Audio: float waveforms [N] in [-1, 1] with a sample mask [N] (padding is
left silent): `white_noise`, `time_mask`.
Text: one string, before tokenization: `typos`, `word_drop`.
Video: THWC arrays with values in [low, high] (as images) and a frame mask
[T] (padding frames are left as they are): `frame_drop`, `temporal_jitter`,
`frame_noise`.
"""
from typing import Callable, Dict, Optional

import numpy as np
import scipy.ndimage

Array = np.ndarray


def _check_level(level: float) -> None:
  if not 0. <= level <= 1.:
    raise ValueError(f'noise level must be in [0, 1], got {level}.')


def _to_dtype(x: Array, like: Array, low, high) -> Array:
  """Clips `x` to [low, high] and casts it to `like`'s dtype (rounding ints)."""
  x = np.clip(x, low, high)
  if np.issubdtype(like.dtype, np.integer):
    x = np.rint(x)
  return x.astype(like.dtype)


# Images ----------------------------------------------------------------------

def gaussian(image: Array, level: float, rng: np.random.Generator,
             low, high) -> Array:
  """Additive Gaussian noise of standard deviation `level` x half the value
  range (on [0, 1] images: up to 0.5), clipped to the range. [H, W, C]."""
  _check_level(level)
  if level == 0:
    return image
  z = rng.standard_normal(image.shape)
  std = level * (np.asarray(high, np.float32) - low) / 2
  return _to_dtype(image + std * z, image, low, high)


def salt_and_pepper(image: Array, level: float, rng: np.random.Generator,
                    low, high) -> Array:
  """A `level` fraction of the pixels (all channels together) set to the
  range's maximum (salt) or minimum (pepper), half each, as MultiBench's
  `salt_and_pepper` (which hits about `noise_level` of the pixels). [H, W, C].
  """
  _check_level(level)
  if level == 0:
    return image
  hit = rng.random(image.shape[:2]) < level
  salt = rng.random(image.shape[:2]) < 0.5
  value = np.where(salt[..., None], np.asarray(high, np.float32),
                   np.asarray(low, np.float32))
  return _to_dtype(np.where(hit[..., None], value, image), image, low, high)


def blur(image: Array, level: float, rng: np.random.Generator,
         low, high) -> Array:
  """Gaussian blur of standard deviation `level` x max(H, W) / 8 pixels (a
  32x32 image: up to 4 pixels), edges repeated; no randomness. A weighted
  mean of pixels, so it stays in range. [H, W, C]."""
  _check_level(level)
  if level == 0:
    return image
  sigma = level * max(image.shape[:2]) / 8
  blurred = scipy.ndimage.gaussian_filter(
      image.astype(np.float32), sigma=(sigma, sigma, 0), mode='nearest')
  return _to_dtype(blurred, image, low, high)


def contrast(image: Array, level: float, rng: np.random.Generator,
             low, high) -> Array:
  """Contrast reduced by the factor 1 - `level` around each channel's mean
  (level 1: a flat image), as PIL's `ImageEnhance.Contrast` that MultiBench's
  `low_contrast` applies with factor 0.5. [H, W, C]."""
  _check_level(level)
  if level == 0:
    return image
  x = image.astype(np.float32)
  mean = x.mean(axis=(0, 1))
  return _to_dtype(mean + (1 - level) * (x - mean), image, low, high)


# Audio -----------------------------------------------------------------------

def _valid(audio: Array, mask: Optional[Array]) -> Array:
  return np.ones(audio.shape, bool) if mask is None else mask.astype(bool)


def white_noise(audio: Array, level: float, rng: np.random.Generator,
                mask: Optional[Array] = None) -> Array:
  """White Gaussian noise mixed in at the signal-to-noise ratio
  SNR = (1 - level) / level, i.e. 10 log10((1 - level) / level) dB (level
  0.1: 9.5 dB, 0.5: 0 dB, 0.9: -9.5 dB, 1: noise only): the output is
  sqrt(1 - level) x signal + sqrt(level) x rms(signal) x N(0, 1), so `level`
  is the noise's share of the power and the loudness stays that of the
  signal (the waveform stays near [-1, 1]; it is clipped there). Only the
  valid samples of `mask` (bool [N]) change; a silent clip stays silent.
  MultiBench's `additive_white_gaussian_noise` names the SNR but adds noise of
  standard deviation `noise_level` instead. audio: float [N].
  """
  _check_level(level)
  valid = _valid(audio, mask)
  if level == 0 or not valid.any():
    return audio
  z = rng.standard_normal(audio.shape)
  x = audio.astype(np.float32)
  rms = np.sqrt(np.mean(np.square(x[valid])))
  noisy = np.sqrt(1 - level) * x + np.sqrt(level) * rms * z
  return _to_dtype(np.where(valid, noisy, x), audio, -1., 1.)


def time_mask(audio: Array, level: float, rng: np.random.Generator,
              mask: Optional[Array] = None, num_spans: int = 20) -> Array:
  """Silences a `level` fraction of the clip: its valid samples (`mask`,
  bool [N]) are cut into `num_spans` equal spans and each is zeroed where its
  uniform draw is below `level` (MultiBench's `audio_structured_dropout`
  zeroes runs of 10 steps with probability `noise_level`). The sample mask is
  left as it is: the audio is silent there, not absent. audio: float [N].
  """
  _check_level(level)
  if level == 0:
    return audio
  spans = np.array_split(np.flatnonzero(_valid(audio, mask)), num_spans)
  dropped = rng.random(num_spans) < level
  out = audio.copy()
  for span, drop in zip(spans, dropped):
    if drop:
      out[span] = 0
  return out


# Text ------------------------------------------------------------------------

_KEYBOARD = ('qwertyuiop', 'asdfghjkl', 'zxcvbnm')


def _keyboard_neighbours() -> Dict[str, str]:
  """Letter -> the letters next to it on a QWERTY keyboard (same row, and the
  keys at the same offset in the rows above and below)."""
  out = {}
  for r, row in enumerate(_KEYBOARD):
    for i, c in enumerate(row):
      near = [row[j] for j in (i - 1, i + 1) if 0 <= j < len(row)]
      near += [_KEYBOARD[s][j] for s in (r - 1, r + 1) if 0 <= s < 3
               for j in (i, i + (1 if s < r else -1))
               if 0 <= j < len(_KEYBOARD[s])]
      out[c] = ''.join(sorted(set(near)))
  return out


_NEIGHBOURS = _keyboard_neighbours()
_LETTERS = 'abcdefghijklmnopqrstuvwxyz'


def _typo(word: str, kind: float, where: float, which: float) -> str:
  """One typo in `word` (at least 2 characters), chosen by three uniform
  draws: a swap of two different adjacent characters, a deletion, or a
  substitution by a keyboard neighbour (a third each); a word with no two
  different adjacent characters gets a substitution instead of a swap."""
  i = int(where * len(word))
  if kind < 1 / 3:
    pairs = [j for j in range(len(word) - 1) if word[j] != word[j + 1]]
    if pairs:
      j = pairs[int(where * len(pairs))]
      return word[:j] + word[j + 1] + word[j] + word[j + 2:]
  elif kind < 2 / 3:
    return word[:i] + word[i + 1:]
  c = word[i]
  near = _NEIGHBOURS.get(c.lower()) or _LETTERS.replace(c.lower(), '')
  new = near[int(which * len(near))]
  return word[:i] + (new.upper() if c.isupper() else new) + word[i + 1:]


def _words(text, corrupt_words: Callable[[list], list]):
  """Applies `corrupt_words` to the words of `text` (str or UTF-8 bytes);
  an unchanged word list returns `text` itself, a changed one is joined
  with single spaces."""
  is_bytes = isinstance(text, (bytes, np.bytes_))
  words = (text.decode('utf-8') if is_bytes else str(text)).split()
  new = corrupt_words(words)
  if new == words:
    return text
  joined = ' '.join(new)
  return joined.encode('utf-8') if is_bytes else joined


def typos(text, level: float, rng: np.random.Generator,
          min_length: int = 3):
  """Each word of at least `min_length` characters gets one typo (adjacent
  swap, keyboard-neighbour substitution or deletion, see `_typo`) where its
  uniform draw is below `level`. MultiBench's `add_text_noise` picks among
  swap, middle shuffle, keyboard typo, repeated letter and omission and only
  touches words of 5 or more characters; here colour and shape words of 3
  letters carry the label, hence the shorter minimum. text: str or bytes.
  """
  _check_level(level)

  def corrupt(words):
    draws = rng.random((len(words), 4))
    return [_typo(w, *d[1:]) if d[0] < level and len(w) >= min_length else w
            for w, d in zip(words, draws)]
  return _words(text, corrupt)


def word_drop(text, level: float, rng: np.random.Generator):
  """Each word is dropped where its uniform draw is below `level` (level 1:
  the empty string, which tokenizes to all padding). text: str or bytes."""
  _check_level(level)

  def corrupt(words):
    keep = rng.random(len(words)) >= level
    return [w for w, k in zip(words, keep) if k]
  return _words(text, corrupt)


# Video -----------------------------------------------------------------------

def _frames(video: Array, mask: Optional[Array]) -> Array:
  """Indices of the real frames of `mask` (bool [T]; None: all)."""
  return np.flatnonzero(_valid(video[:, 0, 0, 0], mask))


def frame_drop(video: Array, level: float, rng: np.random.Generator,
               low, high, mask: Optional[Array] = None) -> Array:
  """Each real frame is dropped where its uniform draw is below `level`, as
  a stalling stream drops it: the last frame kept before it is shown again
  (a dropped first frame: the next kept one; all dropped: black, `low`).
  The frame mask is left as it is: the frames are there, their content is
  stale. [T, H, W, C]."""
  _check_level(level)
  if level == 0:
    return video
  frames = _frames(video, mask)
  kept = frames[rng.random(len(frames)) >= level]
  out = video.copy()
  for f in frames:
    if not len(kept):
      out[f] = _to_dtype(np.full(video.shape[1:], low, np.float32), video,
                         low, high)
      continue
    earlier = kept[kept <= f]
    out[f] = video[earlier[-1] if len(earlier) else kept[0]]
  return out


def temporal_jitter(video: Array, level: float, rng: np.random.Generator,
                    low, high, mask: Optional[Array] = None) -> Array:
  """Each real frame shows the real frame up to `level` x T / 4 positions
  away (its uniform draw in [-1, 1] scaled by that, rounded, clipped to the
  real frames): level 1 jumbles frames within a quarter of the clip either
  way. Frame contents are kept. [T, H, W, C]."""
  _check_level(level)
  if level == 0:
    return video
  frames = _frames(video, mask)
  shift = np.rint(rng.uniform(-1, 1, len(frames)) * level * len(frames) / 4)
  source = np.clip(np.arange(len(frames)) + shift.astype(int), 0,
                   len(frames) - 1)
  out = video.copy()
  out[frames] = video[frames[source]]
  return out


def frame_noise(video: Array, level: float, rng: np.random.Generator,
                low, high, mask: Optional[Array] = None) -> Array:
  """Gaussian noise whose strength varies from frame to frame (flicker):
  frame t gets standard deviation `level` x u_t x the value range (u_t
  uniform in [0, 1], so half the range on average at level 1), clipped to
  the range. Only the real frames change. [T, H, W, C]."""
  _check_level(level)
  if level == 0:
    return video
  frames = _frames(video, mask)
  z = rng.standard_normal(video.shape)
  scale = rng.random(len(video))[:, None, None, None]
  std = level * scale * (np.asarray(high, np.float32) - low)
  out = video.copy()
  out[frames] = _to_dtype(video + std * z, video, low, high)[frames]
  return out


IMAGE = dict(gaussian=gaussian, salt_and_pepper=salt_and_pepper, blur=blur,
             contrast=contrast)
AUDIO = dict(white_noise=white_noise, time_mask=time_mask)
TEXT = dict(typos=typos, word_drop=word_drop)
VIDEO = dict(frame_drop=frame_drop, temporal_jitter=temporal_jitter,
             frame_noise=frame_noise)
# Modality -> noise name -> function.
NOISES: Dict[str, Dict[str, Callable]] = dict(image=IMAGE, audio=AUDIO,
                                              text=TEXT, video=VIDEO)
