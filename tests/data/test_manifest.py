"""Tests of the manifest -> TFDS converter, on real image and audio files."""
import csv
import io
import json
import math
import os
import pickle
import re
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import scipy.io.wavfile
import soundfile
import tensorflow_datasets as tfds
from PIL import Image

from mmjax import audio_io
from mmjax.data import manifest as manifest_lib
from mmjax.data.manifest import ManifestError
from mmjax.data.manifest import prepare_manifest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
TONE_HZ = 440.
NAME = 'my_data'

# Reads a prepared dataset the way the input pipeline does, in a process that
# never imports mmjax (so the builder class cannot be what reads it).
READER = """
import pickle, sys
import tensorflow_datasets as tfds
name, data_dir, out = sys.argv[1:]
builder = tfds.builder(name, data_dir=data_dir)
features = builder.info.features
data = {
    'splits': {split: [dict(builder.as_data_source(split)[i])
                       for i in range(info.num_examples)]
               for split, info in builder.info.splits.items()},
    'label_names': {k: getattr(f, 'names', None) or f.feature.names
                    for k, f in features.items() if k in ('label', 'labels')},
    'metadata': dict(builder.info.metadata),
    'mmjax_imported': any(m.startswith('mmjax') for m in sys.modules),
}
with open(out, 'wb') as f:
  pickle.dump(data, f)
"""

GOOD_ROWS = [
    dict(split='train', image='media/rgb.png', audio='media/mono16k.wav',
         text='a red fox', label='fox'),
    dict(split='train', image='media/grey.png', audio='media/stereo22k.flac',
         text='a grey cat', label='cat'),
    dict(split='train', image='media/photo.jpg', text='a fox photo',
         label='fox'),
    dict(split='train', audio='media/mono16k.wav', label='cat'),
    dict(split='test', image='media/rgba.png', text='a see-through cat',
         label='cat'),
    dict(split='test', audio='media/stereo22k.flac', label='fox'),
]


def _tone(num_frames: int, rate: int, amplitude: float) -> np.ndarray:
  return amplitude * np.sin(2 * np.pi * TONE_HZ * np.arange(num_frames) / rate)


@pytest.fixture
def media(tmp_path):
  """Real files under tmp_path/media; -> name -> pixels / int16 samples."""
  rng = np.random.default_rng(0)
  os.makedirs(tmp_path / 'media')
  arrays = {
      'rgb.png': rng.integers(0, 256, (24, 32, 3), dtype=np.uint8),
      'grey.png': rng.integers(0, 256, (9, 4), dtype=np.uint8),
      'rgba.png': rng.integers(0, 256, (6, 6, 4), dtype=np.uint8),
      'photo.jpg': rng.integers(0, 256, (16, 12, 3), dtype=np.uint8),
  }
  for name, pixels in arrays.items():
    Image.fromarray(pixels).save(tmp_path / 'media' / name)
  mono = np.round(_tone(4000, 16000, 0.5) * 32767).astype(np.int16)
  soundfile.write(tmp_path / 'media/mono16k.wav', mono, 16000)
  # Right channel at half the left's amplitude: the mono mix is 0.75 x tone.
  stereo = np.round(np.stack([_tone(4410, 22050, 0.4),
                              _tone(4410, 22050, 0.2)], 1) * 32767)
  soundfile.write(tmp_path / 'media/stereo22k.flac', stereo.astype(np.int16),
                  22050)
  arrays['mono16k.wav'] = mono
  for good, bad in [('rgb.png', 'truncated.png'),
                    ('mono16k.wav', 'truncated.wav'),
                    ('stereo22k.flac', 'truncated.flac')]:
    data = (tmp_path / 'media' / good).read_bytes()
    (tmp_path / 'media' / bad).write_bytes(data[:len(data) // 2])
  (tmp_path / 'media/garbage.jpg').write_bytes(rng.bytes(500))
  return arrays


def write_manifest(path, rows) -> str:
  """Writes dict rows (or raw JSONL lines given as str) as JSONL or CSV."""
  path = str(path)
  if path.endswith('.csv'):
    columns = [c for c in manifest_lib.COLUMNS if any(c in r for r in rows)]
    with open(path, 'w', newline='') as f:
      writer = csv.DictWriter(f, columns)
      writer.writeheader()
      for row in rows:
        writer.writerow({k: ';'.join(v) if isinstance(v, list) else v
                         for k, v in row.items()})
  else:
    with open(path, 'w') as f:
      for row in rows:
        f.write((row if isinstance(row, str) else json.dumps(row)) + '\n')
  return path


def read_in_fresh_process(data_dir, tmp_path) -> dict:
  out = str(tmp_path / 'read.pkl')
  subprocess.run([sys.executable, '-c', READER, NAME, str(data_dir), out],
                 check=True, cwd=tmp_path)
  with open(out, 'rb') as f:
    return pickle.load(f)


@pytest.mark.parametrize('extension', ['jsonl', 'csv'])
def test_good_manifest_reads_back_in_a_fresh_process(tmp_path, media,
                                                     extension):
  manifest = write_manifest(tmp_path / f'manifest.{extension}', GOOD_ROWS)
  data_dir = tmp_path / 'tfds'
  report = prepare_manifest(manifest, NAME, str(data_dir))
  assert report.num_examples == {'train': 4, 'test': 2}
  assert report.skipped == [] and report.label_names == ['cat', 'fox']
  assert report.dataset_dir == str(data_dir / NAME / '1.0.0')

  data = read_in_fresh_process(data_dir, tmp_path)
  assert not data['mmjax_imported']
  assert data['label_names'] == {'label': ['cat', 'fox']}
  assert data['metadata'] == {'manifest': manifest, 'sample_rate': 16000,
                              'num_skipped_rows': 0}
  stored = data['splits']['train'] + data['splits']['test']
  assert [len(data['splits'][s]) for s in ('train', 'test')] == [4, 2]
  for row, example in zip(GOOD_ROWS, stored):
    assert example['label'] == ['cat', 'fox'].index(row['label'])
    for modality in ('image', 'audio', 'text'):
      assert example[f'{modality}_present'] == (modality in row)
    assert example['text'] == row.get('text', '').encode()
    if 'image' not in row:
      assert example['image'] == b''
    else:
      # The original file bytes; PNGs decode to the very pixels written.
      assert example['image'] == (tmp_path / row['image']).read_bytes()
      if row['image'].endswith('.png'):
        decoded = np.asarray(Image.open(io.BytesIO(example['image'])))
        np.testing.assert_array_equal(
            decoded, media[os.path.basename(row['image'])])
    audio = example['audio']
    assert audio.dtype == np.int16
    if 'audio' not in row:
      assert audio.shape == (0,)
    elif row['audio'].endswith('mono16k.wav'):  # Already at 16 kHz, mono.
      np.testing.assert_array_equal(audio, media['mono16k.wav'])
    else:  # 4410 stereo frames at 22.05 kHz -> mono at 16 kHz.
      assert audio.shape == (math.ceil(4410 * 16000 / 22050),)
      expected = _tone(len(audio), 16000, 0.75 * 0.4)
      # The resampling filter's edge transients aside, the tone is kept.
      np.testing.assert_allclose(audio_io.to_float(audio[50:-50]),
                                 expected[50:-50], atol=5e-3)


# kind -> (the bad JSONL line, the offending file relative to tmp_path).
BAD_ROWS = {
    'missing_file': ({'split': 'test', 'image': 'media/nope.png',
                      'label': 'cat'}, 'media/nope.png'),
    'truncated_image': ({'split': 'test', 'image': 'media/truncated.png',
                         'label': 'cat'}, 'media/truncated.png'),
    'undecodable_image': ({'split': 'test', 'image': 'media/garbage.jpg',
                           'label': 'cat'}, 'media/garbage.jpg'),
    'truncated_wav': ({'split': 'test', 'audio': 'media/truncated.wav',
                       'label': 'cat'}, 'media/truncated.wav'),
    'truncated_flac': ({'split': 'test', 'audio': 'media/truncated.flac',
                        'label': 'cat'}, 'media/truncated.flac'),
    'empty_text': ({'split': 'test', 'text': ' \t', 'label': 'cat'}, None),
    'unknown_label': ({'split': 'test', 'text': 'a zebra', 'label': 'zebra'},
                      None),
    'no_modality': ({'split': 'test', 'label': 'cat'}, None),
    'no_split': ({'text': 'where?', 'label': 'cat'}, None),
    'bad_json': ('{"split": "test", "text": "unfinished",', None),
}
ERROR_KIND = {'truncated_image': 'bad_image', 'undecodable_image': 'bad_image',
              'truncated_wav': 'bad_audio', 'truncated_flac': 'bad_audio'}


@pytest.mark.parametrize('bad', sorted(BAD_ROWS))
def test_each_bad_row_stops_preparation_naming_line_and_file(tmp_path, media,
                                                             bad):
  row, path = BAD_ROWS[bad]
  manifest = write_manifest(tmp_path / 'manifest.jsonl', GOOD_ROWS + [row])
  data_dir = tmp_path / 'tfds'
  with pytest.raises(ManifestError) as error:
    prepare_manifest(manifest, NAME, str(data_dir))
  line = len(GOOD_ROWS) + 1
  assert error.value.line == line
  assert error.value.kind == ERROR_KIND.get(bad, bad)
  assert f'{manifest}:{line}: ' in str(error.value)
  if path:
    assert error.value.path == str(tmp_path / path)
    assert str(tmp_path / path) in str(error.value)
  else:
    assert error.value.path is None
  # Nothing is left behind: no dataset, no temporary directory.
  assert not data_dir.exists() or os.listdir(data_dir) == []


def test_wav_that_libsndfile_rejects_decodes_with_scipy(tmp_path):
  # 64-bit integer PCM: valid WAV that libsndfile does not implement.
  tone = _tone(800, 16000, 0.5)
  scipy.io.wavfile.write(tmp_path / 'i64.wav', 16000,
                         np.round(tone * 2.**63).astype(np.int64))
  with pytest.raises(soundfile.LibsndfileError):
    soundfile.read(tmp_path / 'i64.wav')
  manifest = write_manifest(tmp_path / 'manifest.jsonl',
                            [dict(split='train', audio='i64.wav')])
  report = prepare_manifest(manifest, NAME, str(tmp_path / 'tfds'))
  builder = tfds.builder_from_directory(report.dataset_dir)
  audio = builder.as_data_source('train')[0]['audio']
  np.testing.assert_allclose(audio_io.to_float(audio), tone,
                             atol=0.5 / audio_io.INT16_SCALE + 1e-7)


def test_csv_errors_name_the_file_line_of_the_row(tmp_path, media):
  # A quoted text spanning two lines shifts the following rows by one line.
  rows = [dict(split='train', text='two\nlines', label='cat'),
          dict(split='train', image='media/nope.png', label='cat')]
  manifest = write_manifest(tmp_path / 'manifest.csv', rows)
  with pytest.raises(ManifestError) as error:
    prepare_manifest(manifest, NAME, str(tmp_path / 'tfds'))
  assert error.value.line == 4  # Header, then 2 lines, then the bad row.
  assert f'{manifest}:4: image file not found' in str(error.value)


def test_skip_bad_rows_skips_and_reports_every_bad_row(tmp_path, media):
  bad = sorted(BAD_ROWS)
  manifest = write_manifest(tmp_path / 'manifest.jsonl',
                            GOOD_ROWS + [BAD_ROWS[b][0] for b in bad])
  data_dir = tmp_path / 'tfds'
  report = prepare_manifest(manifest, NAME, str(data_dir), skip_bad_rows=True)

  assert report.num_examples == {'train': 4, 'test': 2}
  expected = [(len(GOOD_ROWS) + 1 + i, ERROR_KIND.get(b, b),
               str(tmp_path / BAD_ROWS[b][1]) if BAD_ROWS[b][1] else None)
              for i, b in enumerate(bad)]
  assert [(s.line, s.kind, s.path) for s in report.skipped] == expected
  for skipped in report.skipped:
    assert skipped.reason.startswith(f'{manifest}:{skipped.line}: ')
  with open(os.path.join(report.dataset_dir, 'skipped_rows.jsonl')) as f:
    written = [json.loads(line) for line in f]
  assert written == [dict(line=s.line, file=s.path, kind=s.kind,
                          reason=s.reason) for s in report.skipped]
  builder = tfds.builder_from_directory(report.dataset_dir)
  assert builder.info.metadata['num_skipped_rows'] == len(bad)
  assert f'{len(bad)} bad rows skipped' in builder.info.description
  assert builder.info.splits['test'].num_examples == 2


def test_failed_overwrite_keeps_the_old_dataset(tmp_path, media):
  good = write_manifest(tmp_path / 'good.jsonl', GOOD_ROWS)
  bad = write_manifest(tmp_path / 'bad.jsonl',
                       GOOD_ROWS[:2] + [BAD_ROWS['truncated_wav'][0]])
  data_dir = str(tmp_path / 'tfds')
  report = prepare_manifest(good, NAME, data_dir)
  with pytest.raises(ManifestError, match='exists already'):
    prepare_manifest(good, NAME, data_dir)
  with pytest.raises(ManifestError, match='truncated.wav'):
    prepare_manifest(bad, NAME, data_dir, overwrite=True)
  builder = tfds.builder_from_directory(report.dataset_dir)
  assert builder.info.splits['train'].num_examples == 4
  assert os.listdir(data_dir) == [NAME]  # No temporary directory left.

  fewer = write_manifest(tmp_path / 'fewer.jsonl', GOOD_ROWS[:3])
  assert prepare_manifest(fewer, NAME, data_dir,
                          overwrite=True).num_examples == {'train': 3}
  builder = tfds.builder_from_directory(report.dataset_dir)
  assert list(builder.info.splits) == ['train']


@pytest.mark.parametrize('extension', ['jsonl', 'csv'])
def test_labels_column_gives_a_sequence_of_class_labels(tmp_path, extension):
  rows = [dict(split='train', text='both', labels=['fox', 'cat']),
          dict(split='train', text='none', labels=[]),
          dict(split='test', text='a zebra', labels=['zebra'])]
  manifest = write_manifest(tmp_path / f'manifest.{extension}', rows)
  (tmp_path / 'labels.txt').write_text('zebra\n\nfox\ncat\n')
  label_names = manifest_lib.parse_label_names(f'@{tmp_path}/labels.txt')
  report = prepare_manifest(manifest, NAME, str(tmp_path / 'tfds'),
                            label_names=label_names)

  builder = tfds.builder_from_directory(report.dataset_dir)
  feature = builder.info.features['labels']
  assert isinstance(feature, tfds.features.Sequence)
  assert feature.feature.names == ['zebra', 'fox', 'cat']
  train = builder.as_data_source('train')
  assert [list(train[i]['labels']) for i in range(2)] == [[1, 2], []]
  assert list(builder.as_data_source('test')[0]['labels']) == [0]


def test_label_not_in_given_label_names_is_an_error(tmp_path):
  manifest = write_manifest(tmp_path / 'manifest.jsonl', [
      dict(split='train', text='a', label='cat'),
      dict(split='train', text='b', label='dog')])
  with pytest.raises(ManifestError, match="unknown label 'dog'") as error:
    prepare_manifest(manifest, NAME, str(tmp_path / 'tfds'),
                     label_names=['cat'])
  assert error.value.line == 2


@pytest.mark.parametrize('rows, message', [
    ([], 'no rows'),
    ([dict(split='train', text='a', lable='cat')], "unknown columns 'lable'"),
    ([dict(text='a')], "no 'split' column"),
    ([dict(split='train', label='cat')], 'none of the columns'),
    ([dict(split='train', text='a', label='x', labels=['x'])],
     "both 'label' and 'labels'"),
    ([dict(split='train', text=' ', label='x'), dict(split='test', text='b')],
     r'all 2 rows are bad \(line 1 \(empty_text\), line 2 \(no_label\)\)'),
])
def test_bad_manifests_are_errors(tmp_path, rows, message):
  manifest = write_manifest(tmp_path / 'manifest.jsonl', rows)
  with pytest.raises(ManifestError, match=message) as error:
    prepare_manifest(manifest, NAME, str(tmp_path / 'tfds'),
                     skip_bad_rows=True)
  assert str(error.value).startswith(manifest)


def test_parse_label_names():
  assert manifest_lib.parse_label_names('a, b,c') == ['a', 'b', 'c']
  with pytest.raises(ManifestError, match='non-empty'):
    manifest_lib.parse_label_names('a,,b')
  with pytest.raises(ManifestError, match='cannot read'):
    manifest_lib.parse_label_names('@/no/such/labels.txt')


def test_script_end_to_end(tmp_path, media):
  good = write_manifest(tmp_path / 'good.csv', GOOD_ROWS)
  bad = write_manifest(tmp_path / 'bad.jsonl',
                       GOOD_ROWS + [BAD_ROWS['missing_file'][0]])

  def run(manifest):
    return subprocess.run(
        [sys.executable, os.path.join(REPO, 'experiments/prepare_dataset.py'),
         f'--manifest={manifest}', f'--name={NAME}',
         f'--data_dir={manifest}.tfds'],
        capture_output=True, text=True, cwd=REPO)

  result = run(good)
  assert result.returncode == 0, result.stderr
  assert 'train: 4, test: 2' in result.stdout
  result = run(bad)
  assert result.returncode == 1
  assert f'{bad}:7: image file not found: {tmp_path}/media/nope.png' in (
      result.stderr)
  assert 'Traceback' not in result.stderr


# -- Bounded ingestion ---------------------------------------------------------

MIB = 2**20


def _write_wav_header(path, declared_seconds: float, rate: int = 8000) -> None:
  """A mono 8-bit WAV whose header declares `declared_seconds` of audio but
  whose file holds one second."""
  data_size = int(declared_seconds * rate)  # 1 byte per frame.
  fmt = struct.pack('<HHIIHH', 1, 1, rate, rate, 1, 8)  # PCM, mono, 8 bit.
  with open(path, 'wb') as f:
    f.write(b'RIFF' + struct.pack('<I', 36 + data_size) + b'WAVE')
    f.write(b'fmt ' + struct.pack('<I', len(fmt)) + fmt)
    f.write(b'data' + struct.pack('<I', data_size) + bytes([128]) * rate)


# Runs a command and prints its peak RSS (KiB). Linux carries the forking
# process's high-water mark over fork and exec into the child's ru_maxrss, so
# a child of pytest (hundreds of MiB) would report pytest's; a child of this
# small process reports its own.
PEAK_RSS = """
import os, subprocess, sys
process = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(process.pid, 0)
print(f'peak_rss_kib={usage.ru_maxrss}')
sys.exit(os.waitstatus_to_exitcode(status))
"""


@pytest.fixture
def hostile(tmp_path):
  """A manifest at root/lists/ with good rows and one row per hostile file.

  Media paths start at the manifest's directory (root/lists); the media live
  in root/media, so the good rows need media_root=root. Files outside root:
  outside.png (exists) and nowhere.png (does not).

  Returns:
    (manifest path, media root, [expected kind or None for a good row] in
    manifest line order).
  """
  root, media = tmp_path / 'root', tmp_path / 'root/media'
  os.makedirs(media)
  os.makedirs(root / 'lists')
  pixels = np.random.default_rng(0).integers(0, 256, (8, 8, 3), np.uint8)
  Image.fromarray(pixels).save(media / 'good.png')
  Image.fromarray(pixels).save(tmp_path / 'outside.png')
  soundfile.write(media / 'good.wav', np.zeros(800, np.int16), 8000)
  # 1 GiB of trailing bytes after an 8x8 PNG, as a sparse file.
  Image.fromarray(pixels).save(media / 'trailing.png')
  with open(media / 'trailing.png', 'r+b') as f:
    f.truncate(os.path.getsize(media / 'trailing.png') + 1024 * MIB)
  huge = Image.new('1', (12000, 12000))  # 1 bit per pixel: 17 KB as PNG.
  huge.save(media / 'huge.png')
  # An icon whose table declares a 128x128 picture that is 12000x12000.
  png = (media / 'huge.png').read_bytes()
  entry = b'ic07' + struct.pack('>I', 8 + len(png)) + png
  (media / 'bomb.icns').write_bytes(
      b'icns' + struct.pack('>I', 8 + len(entry)) + entry)
  _write_wav_header(media / 'ten_hours.wav', 10 * 3600)
  with open(media / 'big.flac', 'wb') as f:  # Sparse, above 64 MiB.
    f.truncate(65 * MIB)
  os.symlink(tmp_path / 'outside.png', media / 'escape.png')

  rows_and_kinds = [
      (dict(split='train', image='../media/good.png',
            audio='../media/good.wav', text='good'), None),
      (dict(split='train', image='../media/trailing.png'), 'trailing_bytes'),
      (dict(split='train', image='../media/huge.png'), 'image_too_large'),
      (dict(split='train', audio='../media/ten_hours.wav'), 'audio_too_long'),
      (dict(split='train', image='../../outside.png'), 'path_outside_root'),
      (dict(split='train', image=str(tmp_path / 'outside.png')),
       'path_outside_root'),
      (dict(split='train', image='../media/escape.png'), 'path_outside_root'),
      (dict(split='train', image='../../nowhere.png'), 'path_outside_root'),
      (dict(split='train', audio='../media/big.flac'), 'file_too_large'),
      (dict(split='train', image='../media/bomb.icns'), 'decompression_bomb'),
      (dict(split='test', image='../media/good.png', text='good'), None),
  ]
  manifest = write_manifest(root / 'lists/manifest.jsonl',
                            [r for r, _ in rows_and_kinds])
  return manifest, str(root), [k for _, k in rows_and_kinds]


def test_hostile_rows_are_bad_rows_of_their_own_kinds_fast(hostile):
  manifest, root, kinds = hostile
  limits = manifest_lib._make_limits(
      manifest, manifest_lib.DEFAULT_MAX_FILE_BYTES,
      manifest_lib.DEFAULT_MAX_IMAGE_PIXELS,
      manifest_lib.DEFAULT_MAX_AUDIO_SECONDS, root, False)
  columns, rows = manifest_lib._read_manifest(manifest)
  seconds, found = {}, {}
  for line, cells in rows:  # One row at a time, to time each.
    problems = manifest_lib._Problems(skip_bad_rows=True)
    start = time.perf_counter()
    good, _ = manifest_lib._check_rows(manifest, columns, [(line, cells)],
                                       None, problems, limits)
    seconds[line] = time.perf_counter() - start
    found[line] = problems.skipped[0].kind if problems.skipped else None
    assert bool(good) == (found[line] is None)
  assert found == dict(enumerate(kinds, 1))
  timings = ', '.join(f'line {line} ({found[line]}): {s:.3f} s'
                      for line, s in seconds.items())
  assert max(seconds.values()) < 1.0, timings
  print(timings)


def test_hostile_manifest_through_the_script_in_bounded_memory(hostile):
  manifest, root, kinds = hostile
  data_dir = os.path.join(root, 'tfds')
  result = subprocess.run(
      [sys.executable, '-c', PEAK_RSS, sys.executable,
       os.path.join(REPO, 'experiments/prepare_dataset.py'),
       f'--manifest={manifest}', f'--name={NAME}', f'--data_dir={data_dir}',
       f'--media_root={root}', '--skip_bad_rows'],
      capture_output=True, text=True, cwd=REPO)
  assert result.returncode == 0, result.stderr
  peak_mib = int(re.findall(r'peak_rss_kib=(\d+)', result.stdout)[-1]) / 1024
  assert peak_mib < 500, f'peak RSS {peak_mib:.0f} MiB'
  print(f'peak RSS {peak_mib:.0f} MiB')

  dataset_dir = os.path.join(data_dir, NAME, '1.0.0')
  with open(os.path.join(dataset_dir, 'skipped_rows.jsonl')) as f:
    skipped = [json.loads(line) for line in f]
  assert {s['line']: s['kind'] for s in skipped} == {
      line: kind for line, kind in enumerate(kinds, 1) if kind}
  builder = tfds.builder_from_directory(dataset_dir)
  assert {s: i.num_examples for s, i in builder.info.splits.items()} == {
      'train': 1, 'test': 1}
  # Rows outside the root read the same whether or not the file exists.
  reasons = {s['line']: s['reason'].split(': ', 1)[1] for s in skipped}
  assert reasons[5] == reasons[8].replace('nowhere', 'outside')


def test_media_root_moves_the_root_and_allow_outside_root_lifts_it(hostile):
  manifest, root, _ = hostile
  rows = [dict(split='train', image='../media/good.png'),  # Under root.
          dict(split='train', image='../../outside.png'),  # Outside root.
          dict(split='train', text='no file')]
  manifest = write_manifest(os.path.join(root, 'lists/roots.jsonl'), rows)
  data_dir = os.path.join(root, 'tfds')

  def skipped(**kwargs):
    report = prepare_manifest(manifest, NAME, data_dir, skip_bad_rows=True,
                              overwrite=True, **kwargs)
    return {s.line: s.kind for s in report.skipped}

  # Default root: the manifest's directory, root/lists.
  assert skipped() == {1: 'path_outside_root', 2: 'path_outside_root'}
  assert skipped(media_root=root) == {2: 'path_outside_root'}
  assert skipped(allow_outside_root=True) == {}
  with pytest.raises(ManifestError, match='not a directory'):
    prepare_manifest(manifest, NAME, data_dir, media_root=f'{root}/nope')


@pytest.mark.parametrize('modality, decoder', [
    ('image', (Image.Image, 'load')),  # PngImageFile.load calls it.
    ('audio', (soundfile.SoundFile, 'read')),
])
def test_memory_error_while_decoding_propagates(tmp_path, media, monkeypatch,
                                                modality, decoder):
  # Not a bad row: the machine, not the file, is at fault.
  path = {'image': 'media/rgb.png', 'audio': 'media/mono16k.wav'}[modality]
  manifest = write_manifest(tmp_path / 'manifest.jsonl',
                            [{'split': 'train', modality: path}])

  def out_of_memory(*args, **kwargs):
    raise MemoryError

  monkeypatch.setattr(*decoder, out_of_memory)
  with pytest.raises(MemoryError):
    prepare_manifest(manifest, NAME, str(tmp_path / 'tfds'),
                     skip_bad_rows=True)


@pytest.mark.parametrize('options', [
    dict(format='PNG'),
    dict(format='JPEG'),
    dict(format='JPEG', progressive=True),
    dict(format='JPEG', restart_marker_blocks=1),  # RSTn in the scan data.
    dict(format='JPEG', exif=b'Exif\x00\x00' + b'\xff\xd9' * 8),  # Fake EOIs.
])
def test_image_end_is_found_and_trailing_bytes_are_a_bad_row(tmp_path,
                                                             options):
  pixels = np.random.default_rng(0).integers(0, 256, (40, 48, 3), np.uint8)
  path = tmp_path / 'image'
  Image.fromarray(pixels).save(path, **options)
  size = os.path.getsize(path)
  assert manifest_lib._image_end(str(path), size) == size
  with open(path, 'ab') as f:
    f.write(b'\xff\xd9 and then more bytes')
  assert manifest_lib._image_end(str(path), size + 21) == size
  manifest = write_manifest(tmp_path / 'manifest.jsonl', [
      dict(split='train', image='image'), dict(split='train', text='ok')])
  report = prepare_manifest(manifest, NAME, str(tmp_path / 'tfds'),
                            skip_bad_rows=True)
  assert [(s.kind, s.path) for s in report.skipped] == [
      ('trailing_bytes', str(path))]
  assert f'truncate -s {size} ' in report.skipped[0].reason
