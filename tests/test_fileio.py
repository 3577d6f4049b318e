"""Crash-safe writes: a failed write keeps the previous file, a torn JSONL
line is cut off before appending and skipped when reading."""
import json
import logging
import os
import subprocess
import sys

import pytest

from mmjax import fileio
from mmjax.train import writers

REPO = os.path.join(os.path.dirname(__file__), '..')
PREVIOUS = b'{"previous": true}\n'
GOOD = b'{"step": 1}\n{"step": 2}\n'

# Writes 1 MiB with atomic_write under a 64 KiB file size limit: the write
# itself fails partway through (EFBIG; SIGXFSZ, which would kill the process,
# is ignored), as on a full disk or quota. Exits 3 when it failed as expected.
_FAILING_WRITE = '''
import errno, resource, signal, sys
from mmjax import fileio
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE,
                   (1 << 16, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
  fileio.atomic_write(sys.argv[1], b'x' * (1 << 20))
except OSError as e:
  sys.exit(3 if e.errno == errno.EFBIG else 1)
'''


@pytest.fixture
def previous(tmp_path):
  """A results file that a failed write must leave as it is."""
  path = tmp_path / 'state.json'
  path.write_bytes(PREVIOUS)
  return path


def test_atomic_write_replaces_the_file_with_a_plain_files_mode(tmp_path):
  path = tmp_path / 'a.json'
  fileio.atomic_write_json(str(path), {'a': [1, 2]})
  fileio.atomic_write_json(str(path), {'b': 3}, indent=None)
  assert path.read_text() == '{"b": 3}\n'
  assert os.listdir(tmp_path) == ['a.json']  # No temporary file left.
  umask = os.umask(0)
  os.umask(umask)
  assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_write_failing_midway_leaves_the_previous_file_intact(previous):
  result = subprocess.run(
      [sys.executable, '-c', _FAILING_WRITE, str(previous)], cwd=REPO,
      capture_output=True, text=True, timeout=60)
  assert result.returncode == 3, result.stderr
  assert previous.read_bytes() == PREVIOUS
  assert os.listdir(previous.parent) == [previous.name]


def test_failed_replace_removes_the_temporary_file(previous, monkeypatch):
  def fail(*args):
    raise OSError('replace failed')
  monkeypatch.setattr(os, 'replace', fail)
  with pytest.raises(OSError, match='replace failed'):
    fileio.atomic_write(str(previous), b'new contents')
  assert previous.read_bytes() == PREVIOUS
  assert os.listdir(previous.parent) == [previous.name]


def test_unserializable_object_leaves_no_trace(previous):
  with pytest.raises(TypeError):
    fileio.atomic_write_json(str(previous), {'a': object()})
  assert previous.read_bytes() == PREVIOUS
  assert os.listdir(previous.parent) == [previous.name]


@pytest.mark.parametrize('torn', [
    b'{"step": 3, "lo',  # Cut mid-record.
    b'{"step": 3}',  # Cut before its newline: the next append would join it.
    b'\0\0\0\0\n',  # Zeros a filesystem can leave after a crash.
    b'{"text": "' + b'y' * 100_000,  # Longer than one block read backwards.
])
def test_repair_jsonl_cuts_a_torn_last_line(tmp_path, caplog, torn):
  path = tmp_path / 'metrics.jsonl'
  path.write_bytes(GOOD + torn)
  with caplog.at_level(logging.WARNING, logger='absl'):
    assert fileio.repair_jsonl(str(path)) == len(torn)
  assert path.read_bytes() == GOOD
  assert str(path) in caplog.text and f'{len(torn)} bytes' in caplog.text
  assert fileio.repair_jsonl(str(path)) == 0  # Now intact: left as it is.
  assert path.read_bytes() == GOOD


def test_repair_jsonl_of_a_missing_empty_or_one_torn_line_file(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  assert fileio.repair_jsonl(str(path)) == 0
  path.write_bytes(b'')
  assert fileio.repair_jsonl(str(path)) == 0
  path.write_bytes(b'{"st')
  assert fileio.repair_jsonl(str(path)) == 4
  assert path.read_bytes() == b''


def test_read_jsonl_skips_a_torn_last_line_with_a_warning(tmp_path, caplog):
  path = tmp_path / 'metrics.jsonl'
  path.write_bytes(GOOD + b'\n{"step": 3, "lo')
  with caplog.at_level(logging.WARNING, logger='absl'):
    assert fileio.read_jsonl(str(path)) == [{'step': 1}, {'step': 2}]
  assert str(path) in caplog.text and 'torn' in caplog.text


def test_read_jsonl_raises_on_a_malformed_line_before_the_last(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  path.write_bytes(b'{"step": 1}\n{"step": 2\n{"step": 3}\n')
  with pytest.raises(ValueError, match=f'{path}:2: malformed'):
    fileio.read_jsonl(str(path))


def test_read_json_or_none_treats_a_torn_file_as_absent(tmp_path, caplog):
  path = tmp_path / 'summary.json'
  assert fileio.read_json_or_none(str(path)) is None
  path.write_text('{"final_step": 4, "ev')
  with caplog.at_level(logging.WARNING, logger='absl'):
    assert fileio.read_json_or_none(str(path)) is None
  assert str(path) in caplog.text
  path.write_text('{"final_step": 4}')
  assert fileio.read_json_or_none(str(path)) == {'final_step': 4}


def test_metric_writer_reopened_after_a_torn_line_keeps_a_valid_file(
    tmp_path):
  writer = writers.MetricWriter(str(tmp_path))
  writer.write(1, 'train', {'loss': 1.0})
  writer.write(2, 'train', {'loss': 0.5})
  writer.close()
  path = tmp_path / writers.METRICS_FILE
  with open(path, 'ab') as f:
    f.write(b'{"step": 3, "split": "tra')  # Killed mid-append.

  writer = writers.MetricWriter(str(tmp_path))
  writer.write(3, 'train', {'loss': 0.25})
  writer.close()
  lines = path.read_text().splitlines()
  assert [json.loads(line)['step'] for line in lines] == [1, 2, 3]
