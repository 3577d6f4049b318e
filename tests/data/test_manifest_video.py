"""The manifest's `video` column: `.npy` files and directories of frames,
their bounds and errors, and the stored bytes through `decode_video`."""
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from mmjax.data.manifest import ManifestError
from mmjax.data.manifest import prepare_manifest
from mmjax.data.preprocess import Preprocess

RNG = np.random.default_rng(0)
CLIP = RNG.integers(0, 256, (5, 6, 8), dtype=np.uint8)  # [frames, H, W].
FRAMES = RNG.integers(0, 256, (3, 4, 4, 3), dtype=np.uint8)


@pytest.fixture
def videos(tmp_path):
  media = tmp_path / 'media'
  os.makedirs(media / 'frames')
  np.save(media / 'clip.npy', CLIP)
  for i, frame in enumerate(FRAMES):  # Names sort as frame order.
    Image.fromarray(frame).save(media / 'frames' / f'{i:03d}.png')
  np.save(media / 'floats.npy', CLIP.astype(np.float32))
  (media / 'truncated.npy').write_bytes((media / 'clip.npy').read_bytes()[:-7])
  os.makedirs(media / 'empty')
  os.makedirs(media / 'mixed')
  Image.fromarray(FRAMES[0]).save(media / 'mixed' / '0.png')
  Image.fromarray(CLIP[0]).save(media / 'mixed' / '1.png')
  return tmp_path


def _write(path, rows):
  with open(path, 'w') as f:
    f.write(''.join(json.dumps(r) + '\n' for r in rows))
  return str(path)


def test_videos_are_stored_and_decode_back(videos):
  manifest = _write(videos / 'm.jsonl', [
      dict(split='train', video='media/clip.npy', label='a'),
      dict(split='train', video='media/frames', text='b', label='b'),
      dict(split='train', text='no video', label='a'),
  ])
  report = prepare_manifest(manifest, 'vids', str(videos / 'tfds'))
  assert {'video', 'video_present'} <= set(report.features)
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  rows = tfds.builder('vids', data_dir=str(videos / 'tfds')).as_data_source(
      'train')
  pp = Preprocess.parse('decode_video(channels=3)|pad_video(6)',
                        {}, 'input.pp_eval', deterministic=True)
  clip, frames, missing = (pp({'video': rows[i]['video'],
                               'video_present': rows[i]['video_present']})
                           for i in range(3))
  np.testing.assert_array_equal(clip['video'][:5, ..., 0], CLIP)
  np.testing.assert_array_equal(clip['video_mask'], [1] * 5 + [0])
  np.testing.assert_array_equal(frames['video'][:3], FRAMES)
  assert clip['video_present'] and frames['video_present']
  assert not missing['video_present'] and not missing['video_mask'].any()
  stored = np.load(io.BytesIO(rows[0]['video']))
  np.testing.assert_array_equal(stored, CLIP)


@pytest.mark.parametrize('video,kind,words', [
    ('media/floats.npy', 'bad_video', ['float32', 'uint8']),
    ('media/truncated.npy', 'bad_video', ['truncated.npy']),
    ('media/empty', 'bad_video', ['no frame files']),
    ('media/mixed', 'bad_video', ['differ in size']),
    ('media/nothing.npy', 'missing_file', ['not found']),
    ('../outside.npy', 'path_outside_root', ['media root']),
])
def test_bad_videos_name_the_row_and_file(videos, video, kind, words):
  manifest = _write(videos / 'm.jsonl', [
      dict(split='train', video='media/clip.npy', label='a'),
      dict(split='train', video=video, label='a')])
  with pytest.raises(ManifestError) as error:
    prepare_manifest(manifest, 'bad', str(videos / 'tfds'))
  assert error.value.kind == kind and error.value.line == 2
  assert 'm.jsonl:2:' in str(error.value)
  for word in words:
    assert word in str(error.value)


@pytest.mark.parametrize('limit,kind', [
    (dict(max_image_pixels=40), 'image_too_large'),  # 6 x 8 = 48 pixels.
    (dict(max_file_bytes=200), 'file_too_large'),  # The .npy is 368 bytes.
])
def test_videos_are_held_to_the_manifest_limits(videos, limit, kind):
  manifest = _write(videos / 'm.jsonl', [
      dict(split='train', video='media/clip.npy', label='a')])
  with pytest.raises(ManifestError) as error:
    prepare_manifest(manifest, 'big', str(videos / 'tfds'), **limit)
  assert error.value.kind == kind
  assert error.value.path.endswith('clip.npy')
  # A directory's stacked frames count against max_file_bytes too (3 frames
  # of 4 x 4 x 3 = 144 bytes; each PNG is smaller than that).
  manifest = _write(videos / 'm.jsonl', [
      dict(split='train', video='media/frames', label='a')])
  sizes = [os.path.getsize(videos / 'media/frames' / f)
           for f in os.listdir(videos / 'media/frames')]
  with pytest.raises(ManifestError) as error:
    prepare_manifest(manifest, 'big', str(videos / 'tfds'),
                     max_file_bytes=max(max(sizes), 143))
  assert error.value.kind == 'file_too_large' and '144' in str(error.value)
