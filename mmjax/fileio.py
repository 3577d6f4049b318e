"""Crash-safe state and result files, and JSONL that survives a torn append.

A process can die in the middle of a write (preemption, OOM kill, a full disk).
A file written in place is then left half-written, and the next reader (a
resumed run, the sweep runner, a report) crashes on it or, worse, reads a
truncated result. So every JSON/CSV/Markdown file the library writes as state or
results goes through `atomic_write`: the new contents go to a temporary file in
the same directory and replace the old file in one `os.replace`, so a crash at
any point leaves either the previous version or the new one, never a mix.

Append-only JSONL files (metrics, predictions streamed during a run) cannot be
replaced on every record, so a crash can leave a torn last line instead.
`repair_jsonl` cuts it off before a resumed run appends again, and `read_jsonl`
skips it with a warning; a malformed line anywhere else is corruption and
raises.
"""
import json
import os
import tempfile
from typing import Any

from absl import logging

# mkstemp creates files readable by the owner only; give atomically written
# files the mode a plain open() would (0o666 less the umask), so files shared
# on a cluster stay readable. The umask can only be read by setting it, so it
# is read once, at import.
_UMASK = os.umask(0)
os.umask(_UMASK)


def _fsync_dir(directory: str) -> None:
  """Makes a rename in `directory` durable (the entry is in the directory)."""
  fd = os.open(directory, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def atomic_write(path: str, data: str | bytes) -> None:
  """Replaces the file at `path` with `data` (str is written as UTF-8).

  The data is written to a temporary file in the same directory (so the
  rename stays on one filesystem), flushed and fsynced, renamed onto `path`
  with `os.replace`, and the directory is fsynced so the rename survives a
  power loss. If anything fails, the temporary file is removed and the
  previous file at `path`, if any, is untouched.
  """
  if isinstance(data, str):
    data = data.encode('utf-8')
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(
      dir=directory, prefix='.' + os.path.basename(path) + '.', suffix='.tmp')
  try:
    with os.fdopen(fd, 'wb') as f:
      os.fchmod(f.fileno(), 0o666 & ~_UMASK)
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    # BaseException: a KeyboardInterrupt mid-write must not leave the
    # temporary file behind either.
    try:
      os.remove(tmp)
    except FileNotFoundError:
      pass
    raise
  _fsync_dir(directory)


def atomic_write_json(path: str, obj: Any, indent: int | None = 2) -> None:
  """Writes `obj` as JSON to `path` atomically (see `atomic_write`).

  `obj` is serialized before any file is opened, so an object that does not
  serialize raises and leaves no trace on disk.
  """
  atomic_write(path, json.dumps(obj, indent=indent) + '\n')


def read_json_or_none(path: str) -> Any:
  """The JSON in `path`, or None when the file is missing or does not parse.

  For files that say whether something is done (a run's summary, a cached
  measurement): one written before writes were atomic, or by another tool,
  can be torn by a crash, and must count as "not done" (with a warning)
  rather than stop whatever reads it.
  """
  try:
    with open(path, 'rb') as f:
      return json.load(f)
  except FileNotFoundError:
    return None
  except ValueError as e:  # json.JSONDecodeError and UnicodeDecodeError.
    logging.warning('%s is unreadable (%s); treating it as absent.', path, e)
    return None


def _is_complete_line(line: bytes) -> bool:
  """Whether one JSONL line (with its terminator, if any) was fully written:
  it ends with a newline and is blank or parses as JSON."""
  if not line.endswith(b'\n'):
    return False
  if not line.strip():
    return True
  try:
    json.loads(line)
  except ValueError:  # json.JSONDecodeError and UnicodeDecodeError.
    return False
  return True


def _last_line_start(f, size: int) -> int:
  """The offset of the first byte of the last line of the open binary file `f`
  of `size` bytes (a trailing newline belongs to the last line). Reads
  backwards in blocks, so a long metrics file is not read whole."""
  end = size - 1  # Skip the last line's own terminator when looking back.
  block = 1 << 16
  while end > 0:
    start = max(0, end - block)
    f.seek(start)
    newline = f.read(end - start).rfind(b'\n')
    if newline >= 0:
      return start + newline + 1
    end = start
  return 0


def repair_jsonl(path: str) -> int:
  """Cuts a torn last line off the JSONL file at `path` before appending to it.

  A last line is torn when it has no trailing newline or does not parse as
  JSON (the writer died mid-append). The file is truncated to the end of the
  last complete line and a warning names the file and the dropped bytes.

  Returns:
    The number of bytes dropped: 0 if the file is intact or missing.
  """
  try:
    f = open(path, 'rb')
  except FileNotFoundError:
    return 0
  with f:
    size = os.fstat(f.fileno()).st_size
    if not size:
      return 0
    start = _last_line_start(f, size)
    f.seek(start)
    last = f.read()
  if _is_complete_line(last):
    return 0
  os.truncate(path, start)
  logging.warning('%s ended with a torn line (the writer died mid-append); '
                  'dropped its %d bytes: %r', path, len(last), last[:200])
  return len(last)


def read_jsonl(path: str) -> list[dict[str, Any]]:
  """Parses the JSONL file at `path`, one record per non-blank line.

  A torn last line (see `repair_jsonl`) is skipped with a warning: it is what
  a crash mid-append leaves. A malformed line before the last is corruption
  and raises.

  Raises:
    ValueError: naming the file and line number of a malformed line that is
      not the last.
  """
  with open(path, 'rb') as f:
    lines = f.readlines()
  records = []
  for number, line in enumerate(lines, start=1):
    if number == len(lines) and not _is_complete_line(line):
      logging.warning('%s: skipping its torn last line %d (the writer died '
                      'mid-append): %r', path, number, line[:200])
      break
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except ValueError as e:
      raise ValueError(
          f'{path}:{number}: malformed JSON line ({e}); only the last line '
          'of a JSONL file can be torn by a crash, so this file is corrupt. '
          'Fix or remove that line.') from e
  return records
