"""Robustness protocol: corruptions, their place in the eval pipeline, the
MultiBench metrics and one run of the protocol on a trained checkpoint."""
import json
import os
import shutil

import numpy as np
import pytest

from mmjax.data.preprocess import Preprocess
from mmjax.evaluators import robustness as protocol
from mmjax.robustness import corruptions, metrics, pipeline, report

LEVELS = (0.0, 0.1, 0.3, 0.6, 0.9)
SENTENCE = ('a red circle left of a blue square above the green triangle '
            'and a small yellow star below the large purple hexagon near '
            'three orange crosses')


def _image(dtype, rng):
  """A smooth 16x16x3 image (blur changes it gradually) in its dtype's
  range: uint8 [0, 255] or float32 [-1, 1]."""
  y, x = np.mgrid[:16, :16] / 15
  smooth = np.stack([x, y, (x + y) / 2], -1) + 0.1 * rng.random((16, 16, 3))
  smooth /= smooth.max()
  if dtype == np.uint8:
    return (smooth * 255).astype(np.uint8), (0., 255.)
  return (smooth * 2 - 1).astype(np.float32), (-1., 1.)


def _audio(rng):
  """0.5 s of a 440 Hz tone with noise at 8 kHz, padded to 6,000 samples."""
  t = np.arange(4000) / 8000
  audio = np.zeros(6000, np.float32)
  audio[:4000] = (0.5 * np.sin(2 * np.pi * 440 * t) +
                  0.05 * rng.standard_normal(4000))
  return audio, np.arange(6000) < 4000


def _video(dtype, rng):
  """12 real frames of 8x8x1 brightening over time (so a frame shown in
  another's place is further off the further it comes from), then 4 frames
  of padding; uint8 [0, 255] or float32 [-1, 1]."""
  frames = np.linspace(0.1, 0.9, 12)[:, None, None, None] + 0.05 * rng.random(
      (12, 8, 8, 1))
  video = np.zeros((16, 8, 8, 1))
  video[:12] = frames
  if dtype == np.uint8:
    return (video * 255).astype(np.uint8), (0., 255.)
  return (video * 2 - 1).astype(np.float32), (-1., 1.)


CASES = [('image', n, dtype) for n in corruptions.IMAGE
         for dtype in (np.uint8, np.float32)]
CASES += [('audio', n, np.float32) for n in corruptions.AUDIO]
CASES += [('text', n, str) for n in corruptions.TEXT]
CASES += [('video', n, dtype) for n in corruptions.VIDEO
          for dtype in (np.uint8, np.float32)]


def _apply(modality, noise, dtype, level, seed=0):
  """(clean, corrupted, distance between them) for one case."""
  fn = corruptions.NOISES[modality][noise]
  data_rng = np.random.default_rng(123)
  rng = np.random.default_rng(seed)
  if modality == 'image':
    x, (low, high) = _image(dtype, data_rng)
    y = fn(x, level, rng, low, high)
    return x, y, np.abs(y.astype(np.float64) - x).mean()
  if modality == 'audio':
    x, mask = _audio(data_rng)
    y = fn(x, level, rng, mask)
    return x, y, np.abs(y.astype(np.float64) - x).mean()
  if modality == 'video':
    x, (low, high) = _video(dtype, data_rng)
    y = fn(x, level, rng, low, high, np.arange(16) < 12)
    return x, y, np.abs(y.astype(np.float64) - x).mean()
  y = fn(SENTENCE, level, rng)
  if noise == 'word_drop':
    return SENTENCE, y, len(SENTENCE.split()) - len(y.split())
  return SENTENCE, y, sum(a != b for a, b in zip(SENTENCE.split(), y.split()))


@pytest.mark.parametrize('modality,noise,dtype', CASES)
def test_corruption_identity_monotone_deterministic_in_range(
    modality, noise, dtype):
  clean, same, d0 = _apply(modality, noise, dtype, 0.0)
  assert same is clean and d0 == 0  # Level 0 returns the input itself.
  distances = [_apply(modality, noise, dtype, level)[2] for level in LEVELS]
  assert all(b >= a for a, b in zip(distances, distances[1:])), distances
  # (Level 0.1 may round away on uint8: blur of 0.2 pixels.)
  assert distances[-1] > distances[2] > 0, distances
  _, y, _ = _apply(modality, noise, dtype, 0.6)
  _, again, _ = _apply(modality, noise, dtype, 0.6)
  _, other_seed, _ = _apply(modality, noise, dtype, 0.6, seed=1)
  if modality == 'text':
    assert isinstance(y, str) and y == again and y != other_seed
    return
  np.testing.assert_array_equal(y, again)
  if noise not in ('blur', 'contrast'):  # These draw nothing.
    assert not np.array_equal(y, other_seed)
  assert y.dtype == clean.dtype and y.shape == clean.shape
  low, high = (0, 255) if dtype == np.uint8 else (-1, 1)
  assert y.min() >= low and y.max() <= high
  if modality == 'audio':  # Padding stays silent.
    assert not y[4000:].any()
  if modality == 'video':  # Padding frames stay as they are.
    np.testing.assert_array_equal(y[12:], clean[12:])


def test_image_per_channel_range():
  """normalize's per-channel range: every channel stays in its own."""
  low, high = np.array([-2., -1., 0.]), np.array([2., 1., 0.5])
  image = np.random.default_rng(0).uniform(low, high, (8, 8, 3)).astype(
      np.float32)
  for noise in corruptions.IMAGE:
    out = corruptions.NOISES['image'][noise](image, 0.9,
                                             np.random.default_rng(0),
                                             low, high)
    assert np.all(out >= low) and np.all(out <= high), noise


def test_white_noise_snr():
  """Level 0.5 mixes in noise of the signal's power: SNR 0 dB."""
  audio, mask = _audio(np.random.default_rng(0))
  rng = np.random.default_rng(1)
  out = corruptions.white_noise(audio, 0.5, rng, mask)
  z = np.random.default_rng(1).standard_normal(audio.shape)[mask]
  signal = np.sqrt(0.5) * audio[mask]
  noise = out[mask] - signal
  kept = np.abs(out[mask]) < 1  # The few clipped samples aside.
  assert kept.mean() > 0.99
  np.testing.assert_allclose(noise[kept], np.sqrt(0.5) * np.sqrt(
      np.mean(audio[mask] ** 2)) * z[kept], atol=1e-6)
  snr_db = 10 * np.log10(np.mean(signal ** 2) / np.mean(noise ** 2))
  assert abs(snr_db) < 0.2


def test_typos_on_known_strings():
  # The three kinds, by their draws: swap, deletion, keyboard substitution.
  assert corruptions._typo('red', 0.1, 0.0, 0.0) == 'erd'
  assert corruptions._typo('red', 0.5, 0.0, 0.0) == 'ed'
  assert corruptions._typo('red', 0.9, 0.0, 0.0) == 'ded'  # r: d e f t.
  assert corruptions._typo('Red', 0.9, 0.0, 0.99) == 'Ted'
  assert corruptions._typo('ee', 0.1, 0.0, 0.0) == 'de'  # No swap: e -> d.
  out = corruptions.typos('a red circle of blue', 1.0,
                          np.random.default_rng(0))
  words = out.split(' ')
  # Every word of 3+ letters has one typo; 'a' and 'of' are too short.
  assert words[0] == 'a' and words[3] == 'of'
  for clean, typo in zip(['red', 'circle', 'blue'],
                         [words[1], words[2], words[4]]):
    assert typo != clean
    assert (len(typo) == len(clean) - 1 or sorted(typo) == sorted(clean) or
            sum(a != b for a, b in zip(clean, typo)) == 1), (clean, typo)
  assert corruptions.typos(b'a red circle', 1.0,
                           np.random.default_rng(0)).startswith(b'a ')


def test_word_drop_on_known_strings():
  text = 'a red circle left of a blue square'
  assert corruptions.word_drop(text, 1.0, np.random.default_rng(0)) == ''
  dropped = corruptions.word_drop(text, 0.5, np.random.default_rng(0))
  keep = np.random.default_rng(0).random(8) >= 0.5
  assert dropped == ' '.join(w for w, k in zip(text.split(), keep) if k)
  assert corruptions.word_drop(text.encode(), 0.5, np.random.default_rng(
      0)) == dropped.encode()


def test_video_corruptions_act_on_whole_frames():
  video, (low, high) = _video(np.float32, np.random.default_rng(0))
  mask = np.arange(16) < 12
  frames = [bytes(f) for f in video[:12]]
  for noise in ('frame_drop', 'temporal_jitter'):  # Frames move, unchanged.
    out = corruptions.NOISES['video'][noise](video, 0.9,
                                             np.random.default_rng(0), low,
                                             high, mask)
    assert all(bytes(f) in frames for f in out[:12])
    assert [bytes(f) for f in out[:12]] != frames
  # Dropped frames repeat the last frame kept before them.
  out = corruptions.frame_drop(video, 0.5, np.random.default_rng(0), low,
                               high, mask)
  kept = np.flatnonzero(np.random.default_rng(0).random(12) >= 0.5)
  for f in range(12):
    earlier = kept[kept <= f]
    source = earlier[-1] if len(earlier) else kept[0]
    np.testing.assert_array_equal(out[f], video[source])
  # Per-frame noise: each frame's own strength.
  out = corruptions.frame_noise(video, 0.5, np.random.default_rng(0), low,
                                high, mask)
  spread = np.abs(out - video)[:12].mean(axis=(1, 2, 3))
  assert spread.max() > 3 * spread.min()
  pp = Preprocess.parse("value_range(-1, 1, key='video')", {}, 'pp')
  corrupted = pipeline.corrupted(pp, 'video', 'frame_noise', 0.5)
  assert corrupted.ops[1].value_range == (-1, 1)
  example = dict(video=(video * 127 + 128).astype(np.uint8),
                 video_mask=mask)
  noisy = corrupted(example)['video']
  np.testing.assert_array_equal(noisy[12:], pp(example)['video'][12:])
  assert not np.array_equal(noisy[:12], pp(example)['video'][:12])


def test_corrupted_pipeline_places_and_seeds_each_noise():
  pp = Preprocess.parse(
      'value_range(-1, 1)|decode_audio|pad_audio(600)|audio_features|'
      'tokenize(8, tokenizer="byte")', {'sample_rate': 8000}, 'pp')
  names = lambda p: [type(op).__name__ for op in p.ops]  # noqa: E731
  text = pipeline.corrupted(pp, 'text', 'word_drop', 1.0)
  assert names(text)[-2:] == ['Corrupt', 'Tokenize']
  audio = pipeline.corrupted(pp, 'audio', 'time_mask', 0.5)
  assert names(audio)[3:5] == ['Corrupt', 'AudioFeatures']
  image = pipeline.corrupted(pp, 'image', 'salt_and_pepper', 0.5)
  assert names(image)[:2] == ['ValueRange', 'Corrupt']
  assert image.ops[1].value_range == (-1, 1)
  assert len(pp.ops) == 5  # The run's own pipeline is unchanged.

  rng = np.random.default_rng(0)
  example = dict(image=rng.integers(0, 256, (8, 8, 3), dtype=np.uint8),
                 audio=rng.integers(-999, 999, 500, dtype=np.int16),
                 text=b'a red circle')
  assert not text(example)['text_mask'].any()  # Every word dropped.

  def hits(pp, example):
    """Which pixels salt-and-pepper set to the range's ends."""
    return np.isin(pp(example)['image'], [-1., 1.]).all(-1)
  assert 0.3 < hits(image, example).mean() < 0.7  # About half the pixels.
  # Deterministic per example content: the same example, the same pixels;
  # another example (or another seed), other pixels.
  np.testing.assert_array_equal(hits(image, example),
                                hits(image, dict(example)))
  flipped = dict(example, image=example['image'][::-1].copy())
  assert not np.array_equal(hits(image, example), hits(image, flipped))
  reseeded = pipeline.corrupted(pp, 'image', 'salt_and_pepper', 0.5, seed=1)
  assert not np.array_equal(hits(image, example), hits(reseeded, example))
  with pytest.raises(ValueError, match='unknown noise image/typos'):
    pipeline.corrupted(pp, 'image', 'typos', 0.5)


def test_relative_robustness_hand_computed():
  # Trapezoids: (1 + .5) / 2 * .5 + (.5 + .5) / 2 * .5 = .625 over range 1.
  assert metrics.relative_robustness([0, .5, 1], [1, .5, .5]) == pytest.approx(
      .625)
  # MultiBench's 10 levels, width 0.1: its area is this x 0.9.
  levels = np.arange(10) / 10
  values = np.linspace(0.9, 0.45, 10)
  multibench = sum((values[i] + values[i + 1]) * 0.1 / 2 for i in range(9))
  assert metrics.relative_robustness(levels, values) * 0.9 == pytest.approx(
      multibench)
  with pytest.raises(ValueError, match='increase'):
    metrics.relative_robustness([0, .5, .5], [1, 1, 1])


def test_effective_robustness_hand_computed():
  # Baseline shifted to 0.9 at level 0: [.9, .7, .6]; f - that: [0, .1, 0].
  assert metrics.effective_robustness(
      [0, .5, .9], [.9, .8, .6], [0, .5, .9], [.8, .6, .5]) == pytest.approx(
          .1)
  # The same drop as the baseline, from any clean value: 0.
  assert metrics.effective_robustness(
      [0, 1], [.5, .3], [0, 1], [.9, .7]) == pytest.approx(0)
  with pytest.raises(ValueError, match='same levels'):
    metrics.effective_robustness([0, 1], [1, 1], [0, .5], [1, 1])


def test_protocol_end_to_end(make_config, tmp_path):
  from mmjax import experiment as experiment_lib
  workdir = str(tmp_path / 'run')
  # Image and text: 3 subsets to evaluate (3 modalities would compile the
  # eval step for 7, and the audio tower's train step, doubling the time);
  # the audio corruptions go through the pipeline in the test above.
  config = make_config('modalities=image+text', num_train_steps=2)
  config.checkpoint.async_save = False
  experiment_lib.train_and_evaluate(config, workdir, progress=False)
  experiment, state, step = experiment_lib.restore(
      experiment_lib.load_config(workdir), workdir)
  noises = dict(image=['gaussian'], text=['word_drop'])
  results = protocol.run(experiment, state, step, levels=(0., 1.),
                         noises=noises)
  # One compiled eval step per subset of modalities (the batch keys differ);
  # the noisy evaluations reuse the one of every modality.
  assert experiment.runner._eval._cache_size() == 3  # pylint: disable=protected-access
  # A baseline run whose robustness.json holds these curves (same metric,
  # seed and levels): they are read from it, not evaluated (it has no
  # checkpoints), and each falls by 0.4.
  late = tmp_path / 'late'
  late.mkdir()
  shutil.copy(os.path.join(workdir, 'config.json'), late)
  with open(late / 'robustness.json', 'w') as f:
    json.dump({**results, 'noise': {m: {n: [[0., .9], [1., .5]] for n in ns}
                                    for m, ns in noises.items()}}, f)
  baseline = protocol.baseline_results(
      str(late), results, experiment_lib.load_config(str(late)),
      experiment_lib.restore)
  results = protocol.add_effective_robustness(results, baseline)
  paths = report.write(results, workdir, baseline)

  with open(os.path.join(workdir, 'robustness.json')) as f:
    saved = json.load(f)
  assert saved['metric'] == 'accuracy' and saved['step'] == 2
  assert list(saved['missing']) == ['image+text', 'image', 'text']
  assert all(0 <= v <= 1 for v in saved['missing'].values())
  clean = saved['missing']['image+text']
  assert clean == experiment.evaluate(state)['accuracy']
  for modality, (noise,) in noises.items():
    curve = saved['noise'][modality][noise]
    assert [level for level, _ in curve] == [0., 1.] and curve[0][1] == clean
    assert saved['relative_robustness'][modality][noise] == pytest.approx(
        (curve[0][1] + curve[1][1]) / 2)
    assert saved['effective_robustness'][modality][noise] == pytest.approx(
        curve[1][1] - curve[0][1] + 0.4)
  # The batches behind the curves: the noisy modality corrupted, the other
  # as in the clean batches.
  clean_batch = next(iter(experiment.eval_batches()))
  noisy = next(iter(protocol.noisy_batches(experiment, 'image', 'gaussian',
                                           1.)))
  dropped = next(iter(protocol.noisy_batches(experiment, 'text', 'word_drop',
                                             1.)))
  real = clean_batch['_mask'] > 0
  assert np.abs(noisy['image'] - clean_batch['image'])[real].mean() > 0.2
  np.testing.assert_array_equal(noisy['text'], clean_batch['text'])
  assert clean_batch['text_mask'][real].any(axis=1).all()
  assert not dropped['text_mask'].any()
  np.testing.assert_array_equal(dropped['image'], clean_batch['image'])
  assert saved['baseline']['step'] == 2
  assert [os.path.basename(p) for p in paths] == [
      'robustness.json', 'robustness.md', 'robustness_image.png',
      'robustness_text.png']
  with open(paths[1]) as f:
    table = f.read()
  assert '| text | word_drop |' in table and 'effective robustness' in table
  assert all(os.path.getsize(p) > 1000 for p in paths[2:])
