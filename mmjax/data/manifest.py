r"""Bring your own data: a JSONL or CSV manifest -> a TFDS dataset.

    prepare_manifest('data/manifest.jsonl', 'pets', '~/tensorflow_datasets')

writes `DATA_DIR/NAME/1.0.0/`, a normal TFDS dataset directory that any
process reads with `tfds.builder(NAME, data_dir=DATA_DIR)` (or
`tfds.builder_from_directory`) and `builder.as_data_source(split)`, without
importing this module.

Manifest
  One row per example; the format follows the extension: `.jsonl` / `.json`
  (JSON Lines: one JSON object per line, blank lines ignored) or `.csv` (a
  header row, then one row per example). Columns:

  - `split` (required): any split name, e.g. train / validation / test.
  - `image`: path of an image file Pillow decodes (PNG, JPEG, ...).
  - `audio`: path of an audio file soundfile decodes (WAV, FLAC, ...).
  - `video`: path of a `.npy` file of a uint8 array [frames, H, W] or
    [frames, H, W, C] (C 1 or 3), or of a directory of frames: image files
    Pillow decodes, in the order of their sorted names (all of one size).
    (No video container format: no decoder ships with mmjax's packages.)
  - `text`: the example's text.
  - `label` (one class name) or `labels` (several: a JSON list in JSONL,
    ';'-separated in CSV), or neither.

  Paths are relative to the manifest's directory (absolute paths and `~` work
  too). Every path must resolve, symlinks followed, under the media root: the
  manifest's directory, or `media_root` (`--media_root`) when given, which
  moves the root but not the start of relative paths. Other paths are bad
  rows, unless `allow_outside_root` (`--allow_outside_root`) is set.
  The dataset's features are the modality columns the manifest has; a row
  leaves a modality out with an empty CSV cell, or a missing / null JSON key.
  A text that is present but empty or whitespace-only is an error (in JSONL
  `""` is not a way to say "no text"). An empty `labels` cell or list means no
  positive class.

Stored features (per modality column of the manifest)
  - `image`: the original encoded file bytes, Tensor((), object); the input
    pipeline's `decode_image` op decodes them. Validated here by a full decode.
  - `audio`: int16 [samples], mono (channels averaged), resampled to
    `sample_rate` with a polyphase filter of the exact rational ratio, in
    mmjax's int16 scale (`mmjax.audio_io`; a 16-bit PCM file already
    mono at `sample_rate` stores bit-exact).
  - `video`: the bytes of a `.npy` file, Tensor((), object): the `.npy` file
    itself, or a directory's frames decoded and stacked (uint8 [frames, H, W,
    C], grey frames C = 1); the pipeline's `decode_video` op decodes them.
    Validated here by a full decode.
  - `text`: Text.
  - `label`: ClassLabel; `labels`: Sequence(ClassLabel). The names are the
    given `label_names`, else the sorted labels of the 'train' split (of all
    rows when there is no 'train' split).

Missing modalities
  A row without a modality stores its empty value (image and video b'', audio
  of length 0, text '') and `<modality>_present = False`; every modality feature has a
  boolean `<modality>_present` companion.

Limits
  Each file is checked against bounds before it is decoded, so a hostile or
  broken file costs neither much time nor much memory: at most
  `max_file_bytes` per file (os.stat, before reading), `max_image_pixels` per
  image (from the header, before decoding) and `max_audio_seconds` per clip
  (from the header, before decoding). A video is held to the same bounds: its
  `.npy` file, or each frame file of its directory, to `max_file_bytes`; each
  frame to `max_image_pixels` (the `.npy` header's shape, or each frame's
  header, before decoding); and its stored array to `max_file_bytes`. Defaults: DEFAULT_MAX_FILE_BYTES,
  DEFAULT_MAX_IMAGE_PIXELS and DEFAULT_MAX_AUDIO_SECONDS; flags of the same
  names in experiments/prepare_dataset.py.

Bad input
  Every problem raises a `ManifestError` that names the manifest line and the
  offending file and says how to fix it; nothing is written then. With
  `skip_bad_rows=True`, bad rows are skipped instead and reported (the returned
  `Report`, the log, and `skipped_rows.jsonl` in the dataset directory). Row
  problems, by `kind`:
  - bad_json, bad_row (malformed cells), no_split, bad_split, no_modality,
    empty_text, no_label, bad_label, unknown_label: the row's cells.
  - path_outside_root: a path that resolves outside the media root; reported
    without looking at the target, so the row does not tell whether it exists.
  - missing_file: no file at a path inside the root.
  - file_too_large: a file of more than `max_file_bytes`.
  - trailing_bytes: a PNG or JPEG file with bytes after the image's end
    (IEND chunk / EOI marker); checked before `file_too_large`, so a small
    image followed by gigabytes is reported as what it is.
  - image_too_large: an image whose header declares more than
    `max_image_pixels` pixels.
  - decompression_bomb: Pillow's decompression-bomb check fired while
    decoding: a part of the file (e.g. the picture inside an icon) holds more
    than `max_image_pixels` pixels although the header declares fewer.
  - audio_too_long: a clip of more than `max_audio_seconds`, as its header
    declares (a WAV header's data size counts even when the file is shorter).
  - bad_image, bad_audio: a file that does not decode in full.
  - bad_video: a `.npy` file that is not a uint8 [frames, H, W(, C)] array,
    a directory without frames or with a frame that does not decode, or
    frames of different sizes.
  Only a row's own problems become bad rows: MemoryError, KeyboardInterrupt
  and bugs propagate. Problems with the manifest as a whole (missing file,
  unknown columns, no rows, ...) always raise.

The dataset's description and metadata (`builder.info.metadata`) record the
source manifest, the sample rate and the number of skipped rows. Examples keep
manifest order within a split (the pipeline shuffles).
"""
import collections
import concurrent.futures
import contextlib
import csv
import dataclasses
import io
import json
import math
import mmap
import os
import re
import shutil
import struct
import tempfile
import warnings
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

from absl import logging
import numpy as np
from PIL import Image
import scipy.io.wavfile
import soundfile
import tensorflow_datasets as tfds

from mmjax import audio_io
from mmjax import fileio
from mmjax.data.builders import generated

MODALITIES = ('image', 'audio', 'text', 'video')
COLUMNS = ('split',) + MODALITIES + ('label', 'labels')
DATASET_VERSION = '1.0.0'
SKIPPED_ROWS_FILE = 'skipped_rows.jsonl'
# TFDS split names are `[\w-]+` ('all' is reserved); dataset names are
# identifiers, kept snake_case as in the TFDS catalog.
_SPLIT_RE = re.compile(r'^[\w-]+$')
_NAME_RE = re.compile(r'^[a-z][a-z0-9_]*$')
# Decoding for validation runs in threads: Pillow and libsndfile release the
# GIL while they decode.
_NUM_WORKERS = min(8, os.cpu_count() or 1)
# At most this many other bad rows are listed in an error or a log line.
_LIST_AT_MOST = 10
# Default limits (module docstring, Limits): far above what a model input
# needs, far below what exhausts a worker's memory.
DEFAULT_MAX_FILE_BYTES = 64 * 2**20
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
DEFAULT_MAX_AUDIO_SECONDS = 60.0
# Audio is validated in blocks of this many frames, so that checking a clip
# takes memory of one block, not of the clip.
_AUDIO_BLOCK_FRAMES = 65536
# The exceptions Pillow raises for a broken file (Pillow's own fuzz tests
# accept these), and the ones libsndfile / scipy raise for a broken audio file
# (soundfile.LibsndfileError is a RuntimeError). Anything else is not the
# row's fault and propagates.
_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error,
                 NotImplementedError, OverflowError)
_AUDIO_ERRORS = (OSError, ValueError, RuntimeError, EOFError, struct.error)
_PIL_BOMBS = (Image.DecompressionBombWarning, Image.DecompressionBombError)
_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'

Label = Union[None, str, Tuple[str, ...]]


class ManifestError(ValueError):
  """A manifest (or one of its rows or files) that cannot be converted.

  Attributes:
    line: the 1-based manifest line of the problem, None for the manifest as a
      whole.
    path: the offending data file (image / audio) or, for problems of the
      manifest as a whole, the manifest; None when no file is at fault.
    kind: a short name of the problem, e.g. 'missing_file' (see the module
      docstring).
  """

  def __init__(self, message: str, *, line: Optional[int] = None,
               path: Optional[str] = None, kind: str = 'manifest'):
    super().__init__(message)
    self.line, self.path, self.kind = line, path, kind


@dataclasses.dataclass(frozen=True)
class SkippedRow:
  """A manifest row left out by `skip_bad_rows`."""
  line: int
  path: Optional[str]  # The offending file, if a file is at fault.
  kind: str
  reason: str  # The ManifestError message.


@dataclasses.dataclass
class Report:
  """What `prepare_manifest` wrote.

  Attributes:
    dataset_dir: DATA_DIR/NAME/1.0.0.
    num_examples: split -> number of examples, in manifest order of the splits.
    features: the stored feature names.
    label_names: the class names, None without a label column.
    skipped: the bad rows left out, in line order.
  """
  dataset_dir: str
  num_examples: Dict[str, int]
  features: List[str]
  label_names: Optional[List[str]]
  skipped: List[SkippedRow]


@dataclasses.dataclass(frozen=True)
class _Limits:
  """The bounds each row's files are checked against (module docstring).

  Attributes:
    max_file_bytes: the largest file size, in bytes.
    max_image_pixels: the most pixels (width x height) of an image.
    max_audio_seconds: the longest audio clip, in seconds.
    root: the real path every file must resolve under; None allows any path.
  """
  max_file_bytes: int
  max_image_pixels: int
  max_audio_seconds: float
  root: Optional[str]


@dataclasses.dataclass(frozen=True)
class _Row:
  """One valid-looking manifest row; file paths are absolute."""
  line: int
  split: str
  image: Optional[str]
  audio: Optional[str]
  text: Optional[str]
  label: Label  # str for 'label', tuple for 'labels', None without either.
  video: Optional[str] = None  # A .npy file or a directory of frames.


class _Problems:
  """The bad rows found so far: raised at once, or collected for skipping."""

  def __init__(self, skip_bad_rows: bool):
    self.skip_bad_rows = skip_bad_rows
    self.errors: List[ManifestError] = []

  def add(self, error: ManifestError) -> None:
    self.errors.append(error)

  def check(self) -> None:
    """Raises the first bad row's error, unless bad rows are skipped."""
    if self.skip_bad_rows or not self.errors:
      return
    self.errors.sort(key=lambda e: e.line)
    first, others = self.errors[0], self.errors[1:]
    message = str(first)
    if others:
      message += (f'\n{len(others)} more bad row(s): '
                  f'{_describe_lines(others)}.')
    message += ('\nFix the rows, or skip bad rows (skip_bad_rows=True, '
                '--skip_bad_rows).')
    raise ManifestError(message, line=first.line, path=first.path,
                        kind=first.kind)

  @property
  def skipped(self) -> List[SkippedRow]:
    return sorted((SkippedRow(e.line, e.path, e.kind, str(e))
                   for e in self.errors), key=lambda s: s.line)


def _describe_lines(errors) -> str:
  """'line 3 (missing_file), ...' of ManifestErrors or SkippedRows."""
  listed = ', '.join(f'line {e.line} ({e.kind})'
                     for e in errors[:_LIST_AT_MOST])
  if len(errors) > _LIST_AT_MOST:
    listed += f', ... ({len(errors) - _LIST_AT_MOST} more)'
  return listed


def parse_label_names(value: str) -> List[str]:
  """'a,b,c' or '@file' (one name per line) -> the list of class names."""
  if value.startswith('@'):
    path = os.path.expanduser(value[1:])
    try:
      with open(path, encoding='utf-8') as f:
        names = [line.strip() for line in f]
    except OSError as e:
      raise ManifestError(f'cannot read the label names file {path}: {e}. '
                          'Give a file with one class name per line.',
                          path=path) from e
    names = [n for n in names if n]
  else:
    names = [n.strip() for n in value.split(',')]
  if not names or not all(names):
    raise ManifestError(f'label names {value!r}: give non-empty names, as '
                        "'a,b,c' or '@file' with one name per line.")
  return names


# -- Reading the manifest ----------------------------------------------------


def _read_jsonl(path: str) -> Iterator[Tuple[int, Union[dict,
                                                        ManifestError]]]:
  """Yields (line number, cells or the row's JSON error) per non-blank line."""
  with open(path, 'rb') as f:
    for number, raw in enumerate(f, 1):
      try:
        text = raw.decode('utf-8').strip()
        if not text:
          continue
        cells = json.loads(text)
      except UnicodeDecodeError as e:
        yield number, _row_error(path, number, 'bad_json',
                                 f'the line is not UTF-8 ({e.reason}); save '
                                 'the manifest as UTF-8.')
        continue
      except json.JSONDecodeError as e:
        yield number, _row_error(path, number, 'bad_json',
                                 f'malformed JSON ({e.msg} at column '
                                 f'{e.colno}); each line must be one JSON '
                                 'object, e.g. {"split": "train", "text": '
                                 '"..."}.')
        continue
      if not isinstance(cells, dict):
        yield number, _row_error(path, number, 'bad_json',
                                 'expected a JSON object, got '
                                 f'{type(cells).__name__}; each line must be '
                                 'one JSON object.')
        continue
      yield number, cells


def _read_csv(path: str) -> Iterator[Tuple[int, Union[dict,
                                                      ManifestError]]]:
  """Yields (line number, cells) per row after the header; '' cells -> None."""
  with open(path, 'rb') as f:
    data = f.read()
  try:
    text = data.decode('utf-8-sig')
  except UnicodeDecodeError as e:
    line = data.count(b'\n', 0, e.start) + 1
    raise ManifestError(f'{path}:{line}: not UTF-8 ({e.reason}); save the '
                        'manifest as UTF-8.', line=line, path=path) from e
  reader = csv.reader(io.StringIO(text, newline=''))
  try:
    header = next(reader, None)
    if header is None:
      return
    header = [h.strip() for h in header]
    duplicates = sorted({h for h in header if header.count(h) > 1})
    if duplicates:
      raise ManifestError(f'{path}:1: duplicate columns {duplicates} in the '
                          'header; keep one of each.', line=1, path=path)
    last_line = reader.line_num
    for cells in reader:
      # A quoted cell may span lines; a row starts after the previous one.
      number, last_line = last_line + 1, reader.line_num
      if not any(c.strip() for c in cells):
        continue  # A blank line.
      if len(cells) > len(header):
        yield number, _row_error(path, number, 'bad_row',
                                 f'{len(cells)} cells but the header has '
                                 f'{len(header)} columns; quote cells that '
                                 'contain commas.')
        continue
      yield number, {h: c if c != '' else None for h, c in zip(header, cells)}
  except csv.Error as e:
    raise ManifestError(f'{path}:{reader.line_num}: malformed CSV ({e}); fix '
                        'the quoting.', line=reader.line_num, path=path) from e


def _row_error(manifest: str, line: int, kind: str, message: str,
               path: Optional[str] = None) -> ManifestError:
  return ManifestError(f'{manifest}:{line}: {message}', line=line, path=path,
                       kind=kind)


def _read_manifest(path: str) -> Tuple[List[str], list]:
  """-> (the manifest's columns, [(line, cells or ManifestError)])."""
  readers = {'.jsonl': _read_jsonl, '.json': _read_jsonl, '.csv': _read_csv}
  extension = os.path.splitext(path)[1].lower()
  if extension not in readers:
    raise ManifestError(f'{path}: unknown manifest format {extension!r}; name '
                        'the file *.jsonl (JSON Lines) or *.csv.', path=path)
  if not os.path.isfile(path):
    raise ManifestError(f'{path}: manifest not found; check the path.',
                        path=path)
  rows = list(readers[extension](path))
  if not rows:
    raise ManifestError(f'{path}: the manifest has no rows; add one row per '
                        'example (see mmjax/data/manifest.py).', path=path)
  if not any(isinstance(cells, dict) for _, cells in rows):
    raise rows[0][1]  # No row parses: its error says more than any other.
  first_line = {}
  for line, cells in rows:
    if isinstance(cells, dict):
      for column in cells:
        first_line.setdefault(column, line)
  if extension == '.csv':
    first_line = {c: 1 for c in first_line}  # The header names them.
  unknown = [c for c in first_line if c not in COLUMNS]
  if unknown:
    where = ', '.join(f'{c!r} (line {first_line[c]})' for c in unknown)
    raise ManifestError(f'{path}: unknown columns {where}; valid columns are '
                        f'{", ".join(COLUMNS)}. Rename or remove them.',
                        line=first_line[unknown[0]], path=path)
  columns = [c for c in COLUMNS if c in first_line]
  if 'split' not in columns:
    raise ManifestError(f"{path}: no 'split' column; give every row a split, "
                        'e.g. train or test.', path=path)
  if not any(m in columns for m in MODALITIES):
    raise ManifestError(f'{path}: none of the columns {", ".join(MODALITIES)};'
                        ' give every row at least one modality.', path=path)
  if 'label' in columns and 'labels' in columns:
    raise ManifestError(f"{path}: both 'label' and 'labels' columns; use "
                        "'label' for one class per example or 'labels' for "
                        'several.', path=path)
  return columns, rows


# -- Checking rows -----------------------------------------------------------


def _parse_row(manifest: str, line: int, cells: dict, is_csv: bool,
               label_column: Optional[str], root: Optional[str]) -> _Row:
  """Checks a row's cells (no decoding) -> _Row; raises ManifestError.

  `root`: the real path the row's files must resolve under; None: anywhere.
  """

  def error(kind, message, path=None):
    return _row_error(manifest, line, kind, message, path)

  def string(column):
    value = cells.get(column)
    if value is not None and not isinstance(value, str):
      raise error('bad_row', f'{column!r} must be a string, got '
                  f'{json.dumps(value)}.')
    return value

  split = (string('split') or '').strip()
  if not split:
    raise error('no_split', "the row has no 'split'; set it, e.g. to train or "
                'test.')
  if not _SPLIT_RE.match(split) or split.lower() == 'all':
    raise error('bad_split', f'split {split!r} is not a valid split name; use '
                "letters, digits, '_' and '-' (not 'all').")
  files = {}
  for modality in ('image', 'audio', 'video'):
    value = (string(modality) or '').strip()
    if value:
      path = os.path.join(os.path.dirname(manifest),
                          os.path.expanduser(value))
      # realpath follows every symlink, so a link that escapes the root is
      # caught too. Nothing about the target is looked at before this check
      # (realpath's result does not depend on whether it exists), so a row
      # outside the root does not tell whether the file is there.
      if root is not None and os.path.commonpath(
          [root, os.path.realpath(path)]) != root:
        raise error('path_outside_root', f'{modality} path {value!r} '
                    'resolves (symlinks followed) outside the media root '
                    f'{root}; move the file under it, give the directory '
                    'that holds the media (media_root, --media_root), or '
                    'allow any path (allow_outside_root=True, '
                    '--allow_outside_root).',
                    os.path.normpath(path))
      if not (os.path.isfile(path) or
              (modality == 'video' and os.path.isdir(path))):
        raise error('missing_file', f'{modality} file not found: {path} '
                    "(relative paths start at the manifest's directory). Fix "
                    'the path or remove the row.', path)
      files[modality] = path
  text = string('text')
  if text is not None and not text.strip():
    how = ('leave the cell empty' if is_csv else 'leave the key out or set '
           'it to null')
    raise error('empty_text', f"'text' is empty; give the text, or {how} "
                'when the row has no text.')
  if not files and text is None:
    raise error('no_modality', 'the row has no image, audio, text or video; '
                'give at least one or remove the row.')
  return _Row(line, split, files.get('image'), files.get('audio'), text,
              _parse_label(cells.get(label_column), label_column, is_csv,
                           error), files.get('video'))


def _parse_label(value, column: Optional[str], is_csv: bool, error) -> Label:
  """A row's `value` of the 'label' (-> str) or 'labels' (-> tuple) column."""
  if column is None:
    return None
  if column == 'label':
    if isinstance(value, int) and not isinstance(value, bool):
      value = str(value)
    if value is None or (isinstance(value, str) and not value.strip()):
      raise error('no_label', "the row has no 'label'; give its class name or "
                  'remove the row.')
    if not isinstance(value, str):
      raise error('bad_label', f"'label' must be one class name, got "
                  f"{json.dumps(value)}; use a 'labels' column for several.")
    names = (value.strip(),)
  else:
    # An empty CSV cell, like a missing key or null, means no positive class.
    if value is None:
      value = []
    elif is_csv:
      value = value.split(';')
    elif not (isinstance(value, list) and
              all(isinstance(v, str) for v in value)):
      raise error('bad_label', "'labels' must be a JSON list of class names, "
                  f'got {json.dumps(value)}.')
    names = tuple(v.strip() for v in value)
    if not all(names) or len(set(names)) < len(names):
      raise error('bad_label', f"'labels' {list(names)} has an empty or "
                  'repeated name; list each class once.')
  if any('\n' in n for n in names):
    raise error('bad_label', 'a class name contains a line break; remove it.')
  return names[0] if column == 'label' else names


def _check_labels(manifest: str, row: _Row, label_names: Sequence[str],
                  given: bool) -> None:
  """Raises ManifestError for a label of `row` outside `label_names`."""
  names = (row.label,) if isinstance(row.label, str) else row.label or ()
  unknown = [n for n in names if n not in label_names]
  if not unknown:
    return
  if given:
    why = (f'not in the given label names ({len(label_names)}: '
           f'{", ".join(label_names[:_LIST_AT_MOST])}'
           f'{", ..." if len(label_names) > _LIST_AT_MOST else ""}); fix the '
           'label or add it to the label names.')
  else:
    why = ("never seen in the 'train' split, so the model cannot learn it; fix "
           'the label, or give label names that include it.')
  raise _row_error(manifest, row.line, 'unknown_label',
                   f'unknown label {unknown[0]!r} (split {row.split!r}): {why}')


def _check_media(manifest: str, row: _Row, limits: _Limits) -> None:
  """Checks the row's files against `limits`, then decodes them in full.

  Expects `_decoder_settings(limits.max_image_pixels)` to be in effect.

  Raises:
    ManifestError: a bad file (module docstring, Bad input).
  """
  for path, find_problem, errors, bad_file in (
      (row.image, _image_problem, _IMAGE_ERRORS, _bad_image),
      (row.audio, _audio_problem, _AUDIO_ERRORS, _bad_audio),
      (row.video, _video_problem, _IMAGE_ERRORS, _bad_video)):
    if not path:
      continue
    try:
      problem = find_problem(path, limits)
    except errors as e:
      raise bad_file(manifest, row, e) from e
    if problem:
      raise _row_error(manifest, row.line, *problem, path)


@contextlib.contextmanager
def _decoder_settings(max_image_pixels: int) -> Iterator[None]:
  """Pillow's pixel limit at `max_image_pixels`; decoder warnings as errors.

  Both settings are process-wide (Pillow has no per-call limit; warning
  filters are global), so they are made once around all the decoding, in the
  calling thread, and undone after it. Made per file in the worker threads,
  concurrent `warnings.catch_warnings` blocks would scramble the filters.
  """
  previous = Image.MAX_IMAGE_PIXELS
  with warnings.catch_warnings():
    # Pillow only warns between its limit and twice the limit.
    warnings.simplefilter('error', Image.DecompressionBombWarning)
    # scipy reads a WAV that ends early with a warning: a cut-off waveform.
    warnings.filterwarnings('error', message='Reached EOF prematurely',
                            category=scipy.io.wavfile.WavFileWarning)
    Image.MAX_IMAGE_PIXELS = max_image_pixels
    try:
      yield
    finally:
      Image.MAX_IMAGE_PIXELS = previous


def _too_large(path: str, size: int, limits: _Limits) -> Tuple[str, str]:
  """The (kind, message) of a file of `size` bytes above the limit."""
  return 'file_too_large', (
      f'{path} is {size:,} bytes ({size / 2**20:.1f} MiB), more than the '
      f'limit of {limits.max_file_bytes:,}; make the file smaller, raise the '
      'limit (max_file_bytes, --max_file_bytes) or remove the row.')


# -- Images --------------------------------------------------------------------


def _image_problem(path: str, limits: _Limits) -> Optional[Tuple[str, str]]:
  """Checks an image, cheapest first, and decodes it in full.

  Returns:
    None for a good image, else (kind, message) of its problem.

  Raises:
    One of _IMAGE_ERRORS: the file cannot be read or decoded in full.
  """
  size = os.stat(path).st_size
  end = _image_end(path, min(size, limits.max_file_bytes))
  if end is not None and end < size:
    return 'trailing_bytes', (
        f'image {path} has {size - end:,} bytes after the end of its image '
        f'data (which ends at byte {end:,} of {size:,}); cut them off (e.g. '
        f'truncate -s {end} FILE), re-save the image or remove the row.')
  if size > limits.max_file_bytes:
    return _too_large(path, size, limits)
  too_many_pixels = ('raise the limit (max_image_pixels, --max_image_pixels) '
                     'or remove the row.')
  try:
    image = Image.open(path)
  except _PIL_BOMBS as e:
    # Pillow checks the size in the header against its limit, which
    # _decoder_settings sets to ours, when it opens the file.
    return 'image_too_large', (
        f'image {path} has {_pixels(e)} pixels, more than the limit of '
        f'{limits.max_image_pixels:,}; downscale it, {too_many_pixels}')
  with image:
    try:
      image.load()  # Decodes every pixel, so a truncated file fails.
    except _PIL_BOMBS as e:
      width, height = image.size
      return 'decompression_bomb', (
          f'image {path} declares {width}x{height} pixels but holds a picture '
          f'of {_pixels(e)} pixels, more than the limit of '
          f'{limits.max_image_pixels:,}; replace it with a PNG or JPEG of '
          f'the picture, {too_many_pixels}')
  return None


def _pixels(bomb: Exception) -> str:
  """The pixel count Pillow's decompression-bomb message names, as text."""
  # Pillow gives no attribute; its message has said "Image size (N pixels)"
  # for years. The limit it names may be twice ours, so it is left out.
  match = re.search(r'\((\d+) pixels\)', str(bomb))
  return f'{int(match[1]):,}' if match else 'too many'


def _image_end(path: str, limit: int) -> Optional[int]:
  """Where a PNG's or JPEG's image data ends, found in its first bytes.

  Args:
    path: an image file.
    limit: look at no more than this many bytes (at most the file's size).

  Returns:
    The offset just past a PNG's IEND chunk or a JPEG's EOI marker; None for
    other formats, for a multi-picture JPEG (its other pictures follow the
    first one's EOI), or when the end is not within `limit` bytes (the size
    check or the decoder then reports the file).
  """
  with open(path, 'rb') as f:
    signature = f.read(len(_PNG_SIGNATURE))
    if signature == _PNG_SIGNATURE:
      return _png_end(f, limit)
    if signature.startswith(b'\xff\xd8'):  # SOI.
      # Mapped, not read: only the pages the walk touches are loaded.
      with mmap.mmap(f.fileno(), limit, access=mmap.ACCESS_READ) as data:
        return _jpeg_end(data)
  return None


def _png_end(f, limit: int) -> Optional[int]:
  """The offset just past the IEND chunk of the PNG file `f`, or None."""
  position = len(_PNG_SIGNATURE)
  while position + 12 <= limit:  # A chunk: length, type, data, CRC.
    f.seek(position)
    length, chunk = struct.unpack('>I4s', f.read(8))
    position += 12 + length
    if chunk == b'IEND':
      return position
  return None


def _jpeg_end(data: mmap.mmap) -> Optional[int]:
  """The offset just past the EOI marker of the JPEG bytes `data`, or None.

  Walks the marker segments from SOI; after a start of scan (SOS) it skips
  the entropy-coded data, where 0xFF is followed by 0x00 (a stuffed byte) or
  a restart marker. A layout the walk does not know gives None.
  """
  position, size = 2, len(data)
  while position + 2 <= size:
    if data[position] != 0xFF:
      return None
    marker = data[position + 1]
    if marker == 0xFF:  # A fill byte before a marker.
      position += 1
      continue
    position += 2
    if marker == 0xD9:  # EOI.
      return position
    if 0xD0 <= marker <= 0xD8 or marker == 0x01:  # RSTn, SOI, TEM: no length.
      continue
    if marker == 0xE2 and data[position + 2:position + 6] == b'MPF\x00':
      return None  # Multi-picture format: more pictures follow the EOI.
    position += int.from_bytes(data[position:position + 2], 'big')
    if marker == 0xDA:  # SOS: entropy-coded data up to the next marker.
      while True:
        position = data.find(b'\xff', position)
        if position < 0 or position + 1 >= size:
          return None
        following = data[position + 1]
        if following != 0x00 and not 0xD0 <= following <= 0xD7:
          break
        position += 2
  return None


# -- Audio ---------------------------------------------------------------------


def _audio_problem(path: str, limits: _Limits) -> Optional[Tuple[str, str]]:
  """Checks an audio file, cheapest first, and decodes it in blocks.

  The samples are not kept: the dataset's writer decodes the file once more,
  so the whole clip is held as float32 only once, in `_load_audio`.

  Returns:
    None for a good clip, else (kind, message) of its problem.

  Raises:
    One of _AUDIO_ERRORS: the file cannot be read or decoded in full.
  """
  size = os.stat(path).st_size
  if size > limits.max_file_bytes:
    return _too_large(path, size, limits)

  def too_long(seconds, how):
    return 'audio_too_long', (
        f'audio {path} {how} {seconds:,.1f} s, more than the limit of '
        f'{limits.max_audio_seconds:g} s; cut it into shorter clips, raise '
        'the limit (max_audio_seconds, --max_audio_seconds) or remove the '
        'row.')

  declared, truncation = _wav_header(path)
  if declared is not None and declared > limits.max_audio_seconds:
    return too_long(declared, 'declares in its WAV header that it lasts')
  if truncation:
    raise ValueError(truncation)
  try:
    with soundfile.SoundFile(path) as f:
      if f.frames / f.samplerate > limits.max_audio_seconds:
        return too_long(f.frames / f.samplerate, 'lasts')
      block = np.empty((_AUDIO_BLOCK_FRAMES, f.channels), np.float32)
      decoded = 0
      while True:
        read = len(f.read(out=block))
        decoded += read
        if read < len(block):
          break
      if decoded < f.frames:
        raise ValueError(f'truncated: {decoded} of {f.frames} frames decode')
      if not decoded:
        raise ValueError('it holds no samples')
      return None
  except soundfile.LibsndfileError:
    if not audio_io.is_riff(path):
      raise
  # A WAV variant only scipy reads, at once: the size limit bounds it.
  audio, rate = audio_io.read_wav_with_scipy(path)
  if len(audio) / rate > limits.max_audio_seconds:
    return too_long(len(audio) / rate, 'lasts')
  if not audio.size:
    raise ValueError('it holds no samples')
  return None


def _wav_header(path: str) -> Tuple[Optional[float], Optional[str]]:
  """What a RIFF WAV file's header declares, against what the file holds.

  libsndfile trusts the file's length over the header, so it reads a
  truncated WAV without complaint, and it never reports a duration the header
  declares but the file lacks. Both are read from the 'data' chunk here.

  Returns:
    (The duration in seconds the 'data' chunk's size declares, None when
    unknown: not a plain RIFF WAV, or a writer that streamed;
    why the file is shorter than that size, or None.)
  """
  size = os.path.getsize(path)
  with open(path, 'rb') as f:
    header = f.read(12)
    if len(header) < 12 or header[8:12] != b'WAVE' or header[:4] not in (
        b'RIFF', b'RIFX'):
      return None, None  # Not a plain RIFF WAV (e.g. RF64): decoders check.
    endian = '<' if header[:4] == b'RIFF' else '>'
    bytes_per_second = 0
    position = 12
    while position + 8 <= size:
      f.seek(position)
      chunk, chunk_size = struct.unpack(endian + '4sI', f.read(8))
      if chunk == b'fmt ':
        # Format tag, channels, frame rate, then the average byte rate
        # (exact for PCM, the mean for compressed formats).
        bytes_per_second = struct.unpack(endian + 'HHII', f.read(12))[3]
      elif chunk == b'data':
        # Writers that stream (unknown length) put 0 or 0xFFFFFFFF here.
        if chunk_size in (0, 0xFFFFFFFF):
          return None, None
        seconds = chunk_size / bytes_per_second if bytes_per_second else None
        available = size - position - 8
        if available < chunk_size:
          return seconds, (f'truncated: its data chunk declares {chunk_size} '
                           f'bytes but the file holds {available}')
        return seconds, None
      position += 8 + chunk_size + (chunk_size & 1)  # Chunks are word-aligned.
  return None, None


# -- Videos --------------------------------------------------------------------


def _frame_files(directory: str) -> List[str]:
  """The frame files of a video directory, in the order of their names."""
  return [os.path.join(directory, name) for name in sorted(os.listdir(directory))
          if not name.startswith('.') and
          os.path.isfile(os.path.join(directory, name))]


def _npy_shape(path: str) -> Tuple[Tuple[int, ...], np.dtype]:
  """(shape, dtype) from a `.npy` file's header, without reading the data."""
  with open(path, 'rb') as f:
    version = np.lib.format.read_magic(f)
    read = (np.lib.format.read_array_header_1_0 if version == (1, 0) else
            np.lib.format.read_array_header_2_0)
    shape, _, dtype = read(f)
  return shape, dtype


def _video_problem(path: str, limits: _Limits) -> Optional[Tuple[str, str]]:
  """Checks a video (a `.npy` file or a directory of frames), cheapest
  first, and decodes it in full; (kind, message) of a problem or None.

  Raises the decoders' errors (_IMAGE_ERRORS) for a file that does not decode.
  """
  frames = _frame_files(path) if os.path.isdir(path) else [path]
  if not frames:
    return 'bad_video', (f'video directory {path} holds no frame files; add '
                         'the frames (one image file each) or remove the row.')
  for frame in frames:
    size = os.stat(frame).st_size
    if size > limits.max_file_bytes:
      return _too_large(frame, size, limits)
  if not os.path.isdir(path):
    shape, dtype = _npy_shape(path)
    if (dtype != np.uint8 or len(shape) not in (3, 4) or
        (len(shape) == 4 and shape[3] not in (1, 3)) or not all(shape)):
      return 'bad_video', (
          f'{path} holds a {dtype} array of shape {list(shape)}; a video is '
          'uint8 [frames, height, width] or [frames, height, width, 1 or 3] '
          'with at least one frame; convert it or remove the row.')
    if shape[1] * shape[2] > limits.max_image_pixels:
      return 'image_too_large', (
          f'{path}: frames of {shape[2]}x{shape[1]} pixels, more than the '
          f'limit of {limits.max_image_pixels:,}; downscale them, raise the '
          'limit (max_image_pixels, --max_image_pixels) or remove the row.')
    np.load(path, allow_pickle=False)  # Decodes in full (a truncated file).
    return None
  sizes, modes = set(), set()
  for frame in frames:
    problem = _image_problem(frame, limits)
    if problem:
      return problem
    with Image.open(frame) as image:
      sizes.add(image.size)
      modes.add(image.mode)
  if len(sizes) > 1:
    listed = ', '.join(f'{w}x{h}' for w, h in sorted(sizes))
    return 'bad_video', (f'the frames in {path} differ in size ({listed}); '
                         'resize them to one size or remove the row.')
  (width, height), = sizes
  stored = len(frames) * width * height * (1 if modes == {'L'} else 3)
  if stored > limits.max_file_bytes:
    return 'file_too_large', (
        f'the {len(frames)} frames in {path} make an array of {stored:,} '
        f'bytes, more than the limit of {limits.max_file_bytes:,}; use fewer '
        'or smaller frames, raise the limit (max_file_bytes, '
        '--max_file_bytes) or remove the row.')
  return None


def _bad_image(manifest: str, row: _Row, error: Exception) -> ManifestError:
  return _row_error(manifest, row.line, 'bad_image',
                    f'cannot decode image {row.image} '
                    f'({type(error).__name__}: {error}); replace it with a '
                    'valid PNG or JPEG file or remove the row.', row.image)


def _bad_video(manifest: str, row: _Row, error: Exception) -> ManifestError:
  return _row_error(manifest, row.line, 'bad_video',
                    f'cannot decode video {row.video} ({type(error).__name__}:'
                    f' {error}); replace it with a uint8 .npy file or a '
                    'directory of image frames, or remove the row.', row.video)


def _video_bytes(path: str) -> bytes:
  """The stored value of a checked video: `.npy` file bytes (a directory's
  frames decoded, stacked as uint8 [frames, H, W, C] and saved as one)."""
  if not os.path.isdir(path):
    with open(path, 'rb') as f:
      return f.read()
  files = _frame_files(path)
  modes = set()
  for name in files:
    with Image.open(name) as image:
      modes.add(image.mode)
  mode = 'L' if modes == {'L'} else 'RGB'  # Any other frame: all RGB.
  frames = []
  for name in files:
    with Image.open(name) as image:
      frames.append(np.asarray(image.convert(mode)))
  video = np.stack(frames)
  buffer = io.BytesIO()
  np.save(buffer, video if video.ndim == 4 else video[..., None],
          allow_pickle=False)
  return buffer.getvalue()


def _bad_audio(manifest: str, row: _Row, error: Exception) -> ManifestError:
  return _row_error(manifest, row.line, 'bad_audio',
                    f'cannot decode audio {row.audio} ({error}); replace it '
                    'with a valid WAV or FLAC file or remove the row.',
                    row.audio)


def _load_audio(manifest: str, row: _Row, sample_rate: int) -> np.ndarray:
  """The row's audio as int16 [samples] at `sample_rate`, mono."""
  try:
    return audio_io.load_int16(row.audio, sample_rate)
  except _AUDIO_ERRORS as e:
    raise _bad_audio(manifest, row, e) from e


# -- The dataset ---------------------------------------------------------------


def _features(
    columns: Sequence[str],
    label_names: Optional[Sequence[str]]) -> tfds.features.FeaturesDict:
  """The stored features of a manifest with `columns` (module docstring)."""
  features = {}
  if 'image' in columns:
    # Encoded bytes: the pipeline decodes them (an Image feature would need
    # TensorFlow to encode).
    features['image'] = tfds.features.Tensor(shape=(), dtype=np.object_)
  if 'audio' in columns:
    features['audio'] = generated.bytes_tensor((None,), np.int16)
  if 'text' in columns:
    features['text'] = tfds.features.Text()
  if 'video' in columns:  # .npy bytes, decoded by the pipeline.
    features['video'] = tfds.features.Tensor(shape=(), dtype=np.object_)
  for modality in MODALITIES:
    if modality in columns:
      features[f'{modality}_present'] = tfds.features.Scalar(dtype=np.bool_)
  if 'label' in columns:
    features['label'] = tfds.features.ClassLabel(names=label_names)
  if 'labels' in columns:
    features['labels'] = tfds.features.Sequence(
        tfds.features.ClassLabel(names=label_names))
  return tfds.features.FeaturesDict(features)


def _example(manifest: str, row: _Row, columns: Sequence[str],
             sample_rate: int) -> dict:
  """A row's example, with empty values for its missing modalities."""
  example = {}
  if 'image' in columns:
    if row.image:
      with open(row.image, 'rb') as f:
        example['image'] = f.read()
    else:
      example['image'] = b''
  if 'audio' in columns:
    example['audio'] = (_load_audio(manifest, row, sample_rate) if row.audio
                        else np.zeros(0, np.int16))
  if 'text' in columns:
    example['text'] = row.text if row.text is not None else ''
  if 'video' in columns:
    example['video'] = _video_bytes(row.video) if row.video else b''
  for modality in MODALITIES:
    if modality in columns:
      example[f'{modality}_present'] = getattr(row, modality) is not None
  if 'label' in columns:
    example['label'] = row.label
  if 'labels' in columns:
    example['labels'] = list(row.label)
  return example


class _ManifestBuilder(tfds.core.GeneratorBasedBuilder,
                       skip_registration=True):
  """Writes the checked rows of one manifest (one instance per call).

  Not registered: readers use the generic directory reader, so a dataset is
  read the same way in a process that never imported this module.
  """

  VERSION = tfds.core.Version(DATASET_VERSION)
  RELEASE_NOTES = {DATASET_VERSION: 'Prepared from a manifest.'}

  def __init__(self, *, name: str, data_dir: str, manifest: str,
               rows: Dict[str, List[_Row]], columns: Sequence[str],
               features: tfds.features.FeaturesDict, sample_rate: int,
               description: str, num_skipped_rows: int):
    self.name = name  # TFDS reads the dataset name from this attribute.
    self._manifest, self._rows, self._columns = manifest, rows, columns
    self._features, self._sample_rate = features, sample_rate
    self._description, self._num_skipped = description, num_skipped_rows
    super().__init__(data_dir=data_dir, file_format='array_record')

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self._description,
        features=self._features,
        metadata=tfds.core.MetadataDict(
            manifest=self._manifest, sample_rate=self._sample_rate,
            num_skipped_rows=self._num_skipped),
        # Manifest order within a split, so example i is traceable.
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {split: self._generate_examples(rows)
            for split, rows in self._rows.items()}

  def _generate_examples(self, rows: List[_Row]):
    for row in rows:
      yield row.line, _example(self._manifest, row, self._columns,
                               self._sample_rate)


def _description(manifest: str, num_examples: Dict[str, int],
                 sample_rate: int, skipped: List[SkippedRow]) -> str:
  splits = ', '.join(f'{n} {s}' for s, n in num_examples.items())
  kinds = collections.Counter(s.kind for s in skipped)
  skipped_text = (f'{len(skipped)} bad rows skipped '
                  f'({", ".join(f"{k}: {n}" for k, n in sorted(kinds.items()))}'
                  f'; listed in {SKIPPED_ROWS_FILE})' if skipped
                  else 'no rows skipped')
  return (f'Prepared by mmjax.data.manifest from {manifest}: {splits} '
          f'examples; audio at {sample_rate} Hz; {skipped_text}. A missing '
          "modality is stored empty with '<modality>_present' = False.")


def _check_arguments(name: str, sample_rate: int) -> None:
  if not _NAME_RE.match(name):
    raise ManifestError(f'dataset name {name!r}: use snake_case (lowercase '
                        'letters, digits and _, starting with a letter).')
  if name in tfds.list_builders(with_community_datasets=False):
    raise ManifestError(f'dataset name {name!r} is taken by a registered TFDS '
                        f'dataset, which tfds.builder({name!r}) would load '
                        'instead; choose another name.')
  if not isinstance(sample_rate, int) or sample_rate <= 0:
    raise ManifestError(f'sample rate {sample_rate!r}: give a positive number '
                        'of Hz, e.g. 16000.')


def _make_limits(manifest: str, max_file_bytes: int, max_image_pixels: int,
                 max_audio_seconds: float, media_root: Optional[str],
                 allow_outside_root: bool) -> _Limits:
  """Checks prepare_manifest's limit arguments -> _Limits."""
  for flag, value in (('max_file_bytes', max_file_bytes),
                      ('max_image_pixels', max_image_pixels)):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
      raise ManifestError(f'{flag} {value!r}: give a positive whole number '
                          f'(--{flag}).')
  if (isinstance(max_audio_seconds, bool) or
      not isinstance(max_audio_seconds, (int, float)) or
      not 0 < max_audio_seconds < math.inf):
    raise ManifestError(f'max_audio_seconds {max_audio_seconds!r}: give a '
                        'positive number of seconds (--max_audio_seconds).')
  if allow_outside_root:
    root = None
  elif media_root:
    root = os.path.realpath(os.path.expanduser(media_root))
    if not os.path.isdir(root):
      raise ManifestError(f'media root {media_root}: not a directory; give '
                          'the directory that holds the media files '
                          '(--media_root).', path=media_root)
  else:
    root = os.path.realpath(os.path.dirname(manifest))
  return _Limits(max_file_bytes, max_image_pixels, float(max_audio_seconds),
                 root)


def _check_rows(manifest: str, columns: Sequence[str], rows: list,
                label_names: Optional[Sequence[str]], problems: _Problems,
                limits: _Limits) -> Tuple[List[_Row], Optional[List[str]]]:
  """All checks, cheapest first -> (good rows, label names)."""
  is_csv = manifest.lower().endswith('.csv')
  label_column = next((c for c in ('label', 'labels') if c in columns), None)
  if label_names is not None and not label_column:
    raise ManifestError(f"{manifest}: label names are given but there is no "
                        "'label' or 'labels' column; add one or drop the "
                        'label names.', path=manifest)
  good = []
  for line, cells in rows:
    try:
      if isinstance(cells, ManifestError):
        raise cells
      row = _parse_row(manifest, line, cells, is_csv, label_column,
                       limits.root)
      if label_names is not None and row.label is not None:
        _check_labels(manifest, row, label_names, given=True)
      good.append(row)
    except ManifestError as e:
      problems.add(e)
  problems.check()  # Early: before decoding any file.

  def decodes(row):
    try:
      _check_media(manifest, row, limits)
      return True
    except ManifestError as e:
      problems.add(e)
      return False

  with _decoder_settings(limits.max_image_pixels), \
      concurrent.futures.ThreadPoolExecutor(_NUM_WORKERS) as pool:
    good = [row for row, ok in zip(good, pool.map(decodes, good)) if ok]
  problems.check()

  if label_names is None and label_column and good:
    # Names come from the rows that will be stored in 'train'.
    train = [r for r in good if r.split == 'train'] or good
    label_names = sorted({n for r in train for n in (
        (r.label,) if isinstance(r.label, str) else r.label)})
    if not label_names:
      raise ManifestError(f'{manifest}: no row has a label; give some labels '
                          'or the label names.', path=manifest)
    kept = []
    for row in good:
      try:
        _check_labels(manifest, row, label_names, given=False)
        kept.append(row)
      except ManifestError as e:
        problems.add(e)
    good = kept
    problems.check()
  return good, list(label_names) if label_names is not None else None


def _install(built: str, dataset_dir: str, trash: str) -> None:
  """Moves the finished version directory into place, replacing an old one."""
  os.makedirs(os.path.dirname(dataset_dir), exist_ok=True)
  if os.path.exists(dataset_dir):
    os.rename(dataset_dir, trash)
  os.rename(built, dataset_dir)


def prepare_manifest(manifest_path: str, name: str, data_dir: str, *,
                     sample_rate: int = 16000,
                     label_names: Optional[Sequence[str]] = None,
                     skip_bad_rows: bool = False,
                     overwrite: bool = False,
                     max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
                     max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
                     max_audio_seconds: float = DEFAULT_MAX_AUDIO_SECONDS,
                     media_root: Optional[str] = None,
                     allow_outside_root: bool = False) -> Report:
  """Converts a manifest into the TFDS dataset DATA_DIR/NAME/1.0.0.

  Every row is checked (files decoded) before anything is written; the
  dataset is generated in a temporary directory under `data_dir` and moved
  into place only when complete, so a failed run leaves DATA_DIR/NAME as it
  was.

  Args:
    manifest_path: a .jsonl / .json or .csv manifest (module docstring).
    name: the TFDS dataset name (snake_case).
    data_dir: the TFDS data directory.
    sample_rate: the stored audio's rate in Hz.
    label_names: the class names (their order gives the class ids); default:
      the sorted labels of the 'train' split.
    skip_bad_rows: skip and report bad rows instead of raising.
    overwrite: replace an existing DATA_DIR/NAME/1.0.0.
    max_file_bytes: the largest image or audio file, in bytes.
    max_image_pixels: the most pixels (width x height) of an image.
    max_audio_seconds: the longest audio clip, in seconds.
    media_root: the directory every image and audio path must resolve under
      (symlinks followed); default: the manifest's directory. Relative paths
      start at the manifest's directory either way.
    allow_outside_root: accept paths anywhere (media_root is then unused).

  Returns:
    A Report of what was written.

  Raises:
    ManifestError: bad input; the message names the line, the file and a fix.
  """
  manifest = os.path.abspath(os.path.expanduser(manifest_path))
  data_dir = os.path.abspath(os.path.expanduser(data_dir))
  _check_arguments(name, sample_rate)
  limits = _make_limits(manifest, max_file_bytes, max_image_pixels,
                        max_audio_seconds, media_root, allow_outside_root)
  if label_names is not None:
    label_names = list(label_names)
    repeated = sorted({n for n in label_names if label_names.count(n) > 1})
    if not label_names or repeated or not all(label_names):
      raise ManifestError(f'label names {label_names}: give each class once, '
                          f'non-empty (repeated: {repeated}).')
  dataset_dir = os.path.join(data_dir, name, DATASET_VERSION)
  if os.path.exists(dataset_dir) and not overwrite:
    raise ManifestError(f'{dataset_dir} exists already; pass overwrite=True '
                        '(--overwrite) to replace it, or choose another '
                        'name.', path=dataset_dir)

  columns, raw_rows = _read_manifest(manifest)
  problems = _Problems(skip_bad_rows)
  rows, label_names = _check_rows(manifest, columns, raw_rows, label_names,
                                  problems, limits)
  skipped = problems.skipped
  if not rows:
    raise ManifestError(f'{manifest}: all {len(skipped)} rows are bad '
                        f'({_describe_lines(skipped)}); nothing to write.',
                        path=manifest)
  by_split = collections.defaultdict(list)
  for row in rows:
    by_split[row.split].append(row)
  num_examples = {split: len(r) for split, r in by_split.items()}
  features = _features(columns, label_names)

  try:
    os.makedirs(data_dir, exist_ok=True)
  except OSError as e:
    raise ManifestError(f'cannot create the data directory {data_dir} ({e}); '
                        'give a writable directory.', path=data_dir) from e
  # Same filesystem as the destination, so the final move is a rename.
  scratch = tempfile.mkdtemp(prefix=f'.{name}-incomplete-', dir=data_dir)
  try:
    builder = _ManifestBuilder(
        name=name, data_dir=scratch, manifest=manifest, rows=dict(by_split),
        columns=columns, features=features, sample_rate=sample_rate,
        description=_description(manifest, num_examples, sample_rate,
                                 skipped),
        num_skipped_rows=len(skipped))
    with _decoder_settings(limits.max_image_pixels):
      builder.download_and_prepare()
    built = os.path.join(scratch, name, DATASET_VERSION)
    if skipped:
      fileio.atomic_write(os.path.join(built, SKIPPED_ROWS_FILE), ''.join(
          json.dumps({'line': s.line, 'file': s.path, 'kind': s.kind,
                      'reason': s.reason}) + '\n' for s in skipped))
    _install(built, dataset_dir, os.path.join(scratch, 'replaced'))
  finally:
    shutil.rmtree(scratch, ignore_errors=True)

  if skipped:
    kinds = collections.Counter(s.kind for s in skipped)
    logging.warning('Skipped %d bad row(s) of %s (%s): %s. All are listed in '
                    '%s.', len(skipped), manifest,
                    ', '.join(f'{k}: {n}' for k, n in sorted(kinds.items())),
                    _describe_lines(skipped),
                    os.path.join(dataset_dir, SKIPPED_ROWS_FILE))
  logging.info('Prepared %s (%s) from %s.', dataset_dir, ', '.join(
      f'{s}: {n}' for s, n in num_examples.items()), manifest)
  return Report(dataset_dir=dataset_dir, num_examples=num_examples,
                features=list(features.keys()), label_names=label_names,
                skipped=skipped)
