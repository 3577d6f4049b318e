"""The 'moving_digits' builder and the video ops."""
import glob
import io
import os

import numpy as np
import pytest

from mmjax.data.builders import digits
from mmjax.data.builders import moving_digits as md
from mmjax.data.preprocess import Preprocess


@pytest.fixture(scope='module')
def examples():
  return md.generate('train', range(64), audio=True)


def _centroids(frame):
  """(row, col) centre of mass of a frame [H, W, 1], or None if blank."""
  weights = frame[..., 0].astype(float)
  if not weights.any():
    return None
  rows, cols = np.indices(weights.shape)
  return (rows * weights).sum() / weights.sum(), (cols * weights).sum() / weights.sum()


def test_features_labels_and_caption_agree(examples):
  _, labels = digits.source_images()
  videos = examples['video']
  assert videos.shape == (64, 8, 32, 32, 1) and videos.dtype == np.uint8
  for i in range(64):
    first, verb, first_dir, then, second, _, second_dir = (
        examples['caption'][i].split())
    assert (verb, then) == ('moves', 'then')
    assert md.DIGIT_WORDS.index(first) == examples['first_digit'][i]
    assert first != second
    assert md.DIRECTION_NAMES[examples['direction'][i]] == first_dir
    assert (first_dir in md.HORIZONTAL) != (second_dir in md.HORIZONTAL)
    # Frames 0-1 show the first digit alone: its motion is its direction.
    (r0, c0), (r1, c1) = _centroids(videos[i, 0]), _centroids(videos[i, 1])
    moved = {(0, 1): 'right', (0, -1): 'left', (1, 0): 'down',
             (-1, 0): 'up'}[(int(np.sign(round(r1 - r0))),
                             int(np.sign(round(c1 - c0))))]
    assert moved == first_dir
    horizontal_word = first if first_dir in md.HORIZONTAL else second
    assert md.DIGIT_WORDS.index(horizontal_word) == examples['digit'][i]
    assert len(examples['audio'][i]) > 1000
  assert set(examples['direction']) == set(range(4))


def test_a_digits_positions_do_not_depend_on_its_direction():
  """The segment is drawn before the direction: both directions visit the
  same positions, so order-blind statistics cannot tell them apart."""
  for seed in range(20):
    forward = md.trajectory(np.random.default_rng(seed), 6, 3, True)
    backward = md.trajectory(np.random.default_rng(seed), 6, 3, False)
    np.testing.assert_array_equal(forward, backward[::-1])
    assert forward.min() >= 0 and forward.max() <= md.CANVAS - md.DIGIT_SIZE


def test_mean_frame_carries_no_direction():
  """Reversing each digit's motion in time gives the same mean frame: the
  mean frames of the four direction classes have the same distribution, so
  their class means agree up to sampling noise, while the first frames'
  do not."""
  data = md.generate('test', range(800))
  video = data['video'].astype(np.float32)[..., 0]
  gaps = {}
  for name, frames in (('mean', video.mean(axis=1)), ('first', video[:, 0])):
    means = [frames[data['direction'] == d].mean(axis=0) for d in range(4)]
    gaps[name] = max(np.abs(a - b).mean() for a in means for b in means)
  assert gaps['first'] > 3 * gaps['mean'], gaps


def test_same_seed_gives_the_same_bytes(tmp_path):
  files = {}
  for run in ('a', 'b'):
    builder = md.MovingDigits(config='tiny', data_dir=str(tmp_path / run))
    builder.download_and_prepare()
    records = sorted(glob.glob(os.path.join(builder.data_dir, '*array_record*')))
    assert records
    files[run] = [open(p, 'rb').read() for p in records]
  assert files['a'] == files['b']
  source = md.MovingDigits(config='tiny', data_dir=str(tmp_path / 'a')
                           ).as_data_source(split='test')
  row = source[3]
  expected = md.generate('test', [3], audio=True)
  np.testing.assert_array_equal(row['video'], expected['video'][0])
  assert row['caption'].decode() == expected['caption'][0]


# -- Ops ---------------------------------------------------------------------

def _pp(ops, deterministic=True):
  return Preprocess.parse(ops, {}, 'input.pp_eval', deterministic)


def test_decode_resize_pad_and_value_range():
  video = np.arange(5 * 4 * 4, dtype=np.uint8).reshape(5, 4, 4)
  out = _pp("decode_video|resize_video(8)|pad_video(8)|"
            "value_range(-1, 1, key='video')")({'video': video})
  assert out['video'].shape == (8, 8, 8, 1) and out['video'].dtype == np.float32
  np.testing.assert_array_equal(out['video_mask'], [1] * 5 + [0] * 3)
  assert out['video_present'] and out['video'].max() <= 1
  np.testing.assert_array_equal(out['video'][5:], -1)  # Padding: zeros.
  # Longer videos are cropped (centrally with center=True); .npy bytes decode.
  buffer = io.BytesIO()
  np.save(buffer, np.arange(10, dtype=np.uint8)[:, None, None].repeat(2, 1)
          .repeat(2, 2))
  out = _pp('decode_video(channels=3)|pad_video(4, center=True)')(
      {'video': buffer.getvalue()})
  assert out['video'].shape == (4, 2, 2, 3)
  np.testing.assert_array_equal(out['video'][:, 0, 0, 0], [3, 4, 5, 6])
  # A missing video (empty bytes) is absent, whatever its frames hold.
  out = _pp('decode_video|resize_video(8)|pad_video(4)')({'video': b''})
  assert not out['video_present'] and not out['video_mask'].any()
  assert out['video'].shape == (4, 8, 8, 1)


def test_mean_and_shuffled_frames_ignore_the_order():
  video = np.random.default_rng(0).integers(0, 255, (6, 4, 4, 1), np.uint8)
  pp = _pp('decode_video|pad_video(8)|shuffle_frames')
  shuffled = pp({'video': video})
  assert not np.array_equal(shuffled['video'][:6], video)
  assert sorted(map(bytes, shuffled['video'][:6])) == sorted(map(bytes, video))
  np.testing.assert_array_equal(shuffled['video'][6:], 0)  # Padding stays.
  np.testing.assert_array_equal(pp({'video': video})['video'],
                                shuffled['video'])  # Deterministic.
  mean = _pp('decode_video|pad_video(8)|mean_frames')
  for x in (video, video[::-1]):
    out = mean({'video': x})
    assert out['video'].shape == (1, 4, 4, 1) and out['video_mask'].all()
    np.testing.assert_allclose(out['video'][0], video.mean(axis=0), rtol=1e-6)
  with pytest.raises(Exception, match='random'):
    _pp('decode_video|random_temporal_crop(4)')


def test_random_temporal_crop_takes_consecutive_frames():
  video = np.arange(10, dtype=np.uint8)[:, None, None, None] * np.ones(
      (1, 2, 2, 1), np.uint8)
  pp = Preprocess.parse('decode_video|random_temporal_crop(4)', {},
                        'input.pp_train')
  starts = set()
  for seed in range(20):
    out = pp({'video': video}, np.random.default_rng(seed))
    first = int(out['video'][0, 0, 0, 0])
    np.testing.assert_array_equal(out['video'][:, 0, 0, 0],
                                  np.arange(first, first + 4))
    assert out['video_mask'].all() and out['video_present']
    starts.add(first)
  assert len(starts) > 3 and max(starts) <= 6
  short = pp({'video': video[:2]}, np.random.default_rng(0))  # Padded.
  np.testing.assert_array_equal(short['video_mask'], [1, 1, 0, 0])
