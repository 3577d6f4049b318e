"""Start-up checks of the work directory, so that trouble is reported in the
first seconds instead of at the first checkpoint, hours in (or never, with
the user's checkpoints lost):

- `WorkdirLock`: one trainer at a time per workdir. A second one would
  delete the first one's in-flight checkpoint saves and interleave its logs.
- `check_stored_config`: the checkpoints in a workdir belong to the config
  stored beside them; a run whose config changes the train state fails
  naming each differing field instead of trying (and failing) to restore.
- `check_workdir`: writable, with room for the checkpoints.
"""
import datetime
import json
import os
import shutil
import socket
from typing import Any, Dict, Optional

from absl import logging
from flax import traverse_util
import ml_collections

from mmjax.errors import WorkdirError
from mmjax.fileio import read_json_or_none

CONFIG_FILE = 'config.json'
LOCK_FILE = 'mmjax.lock'
# Config fields that define the train state, or the data a resumed run must
# continue with (the seed and batch size fix the input iterator's order and
# position): when any differs from the stored config, the checkpoints are
# another run's. Everything else (step counts, cadences, evaluation, mesh,
# checkpoint options) may change between restarts.
STATE_FIELDS = ('seed', 'dataset', 'input.global_batch_size', 'input.pp_train',
                'model', 'optimizer', 'optimizer_groups', 'task')
# Fields inside those that only say where things are.
LOCATION_FIELDS = ('dataset.data_dir',)

# The probe writes at most this much, so a large model's start-up stays fast.
PROBE_BYTES = 64 << 20
_CHUNK = 1 << 20


def check_workdir(workdir: str, checkpoint_bytes: int, copies: int,
                  process_index: int = 0) -> None:
  """Creates `workdir` and checks that it can take the run's checkpoints.

  Writes (and fsyncs, then removes) a test file of min(`checkpoint_bytes`,
  64 MiB) bytes, which fails on a read-only, unwritable or full file system
  or under a file-size limit, and compares the free space with one
  checkpoint (an error) and with `copies` of them (a warning: saves may fail
  later, as the retention policy keeps that many).

  Raises:
    WorkdirError naming the directory, what failed and how to fix it.
  """
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise WorkdirError(workdir, f'cannot be created ({e}); choose another '
                       '--workdir.') from e
  probe = os.path.join(workdir, f'.mmjax_write_test.{process_index}')
  size = min(checkpoint_bytes, PROBE_BYTES)
  try:
    with open(probe, 'wb') as f:
      zeros = bytes(_CHUNK)
      for start in range(0, size, _CHUNK):
        f.write(zeros[:min(_CHUNK, size - start)])
      f.flush()
      os.fsync(f.fileno())
  except OSError as e:
    raise WorkdirError(workdir, (
        f'is not writable: writing a {size:,}-byte test file failed ({e}). '
        'Free space, fix its permissions or choose another --workdir.')
                       ) from e
  finally:
    if os.path.exists(probe):
      os.remove(probe)
  free = shutil.disk_usage(workdir).free
  if free < checkpoint_bytes:
    raise WorkdirError(workdir, (
        f'has {free:,} bytes free, less than one checkpoint '
        f'({checkpoint_bytes:,} bytes). Free space or choose another '
        '--workdir.'))
  if free < copies * checkpoint_bytes:
    logging.warning(
        'workdir %s has %s bytes free; the %d checkpoints the retention '
        'policy keeps need about %s. Saves will fail when the disk fills.',
        workdir, f'{free:,}', copies, f'{copies * checkpoint_bytes:,}')


def _is_state_field(name: str) -> bool:
  def under(field):
    return name == field or name.startswith(field + '.')
  return (any(under(f) for f in STATE_FIELDS) and
          not any(under(f) for f in LOCATION_FIELDS))


def _has_checkpoints(workdir: str) -> bool:
  directory = os.path.join(workdir, 'checkpoints')
  return os.path.isdir(directory) and any(
      name.isdigit() for name in os.listdir(directory))


def check_stored_config(workdir: str,
                        config: ml_collections.ConfigDict) -> None:
  """Compares `config` with the config stored in `workdir` by an earlier run.

  Only a workdir with checkpoints is checked (without, there is nothing to
  resume or lose). Differences in `STATE_FIELDS` are an error; others are
  logged. Reads files only: nothing in `workdir` changes.

  Raises:
    WorkdirError listing each differing state field as
    `model.dim: 64 (stored) -> 32 (now)` and the two ways forward.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if not _has_checkpoints(workdir):
    return
  stored = read_json_or_none(path)
  if stored is None:
    logging.warning('%s has checkpoints but no readable %s: cannot check '
                    'that they were saved by this config.', workdir,
                    CONFIG_FILE)
    return
  stored = traverse_util.flatten_dict(stored, sep='.')
  now = traverse_util.flatten_dict(json.loads(config.to_json_best_effort()),
                                   sep='.')
  absent = object()
  changed = [k for k in sorted(stored.keys() | now.keys())
             if stored.get(k, absent) != now.get(k, absent)]

  def show(value):
    return '(absent)' if value is absent else json.dumps(value)

  lines = [f'{k}: {show(stored.get(k, absent))} (stored) -> '
           f'{show(now.get(k, absent))} (now)' for k in changed]
  state = [line for k, line in zip(changed, lines) if _is_state_field(k)]
  if state:
    raise WorkdirError(workdir, (
        'holds the checkpoints of a run with another config, which this run '
        'cannot resume:\n  ' + '\n  '.join(state) + '\nNothing in it was '
        'changed. Train into a new --workdir, or start one from this run\'s '
        f'parameters with --config.checkpoint.warm_start_from={workdir} '
        '(parameters of the same name, shape and dtype are loaded; the others '
        'are initialised afresh and listed).'))
  for line in lines:
    logging.info('Config changed since the last run in %s: %s', workdir, line)


def _process_start(pid: int) -> Optional[str]:
  """The start time of process `pid` in clock ticks since boot (Linux), to
  tell a live holder from a new process that reuses its PID; None if unknown."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      # Field 22; the command name (field 2) may contain spaces, so count
      # from its closing parenthesis.
      return f.read().rsplit(')', 1)[1].split()[19]
  except (OSError, IndexError):
    return None


def _running(holder: Dict[str, Any]) -> bool:
  """Whether the lock holder (on this host) is still running."""
  pid = holder.get('pid')
  if not isinstance(pid, int):
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Another user's live process.
    return True
  start = holder.get('process_start')
  return start is None or _process_start(pid) in (None, start)


class WorkdirLock:
  """Context manager holding `workdir` for one trainer.

  The lock is the file `<workdir>/mmjax.lock`, created exclusively and
  holding the holder's host, PID and start time. A lock left by a process
  that is no longer running on this host (killed, crashed) is stale and
  taken over with a log line; one from another host cannot be checked and
  must be deleted by hand if its holder is gone (the error says so). In a
  multi-process run, process 0 holds the lock for the run.
  """

  def __init__(self, workdir: str, process_index: int = 0):
    self._path = os.path.join(workdir, LOCK_FILE)
    self._workdir = workdir
    self._record = None
    self._active = process_index == 0

  def __enter__(self) -> 'WorkdirLock':
    if self._active:
      self._acquire()
    return self

  def __exit__(self, *exc) -> None:
    if self._record is not None and read_json_or_none(
        self._path) == self._record:
      os.remove(self._path)
    self._record = None

  def _acquire(self) -> None:
    try:
      os.makedirs(self._workdir, exist_ok=True)
    except OSError as e:
      raise WorkdirError(self._workdir, f'cannot be created ({e}); choose '
                         'another --workdir.') from e
    pid = os.getpid()
    record = dict(host=socket.gethostname(), pid=pid,
                  process_start=_process_start(pid),
                  started=datetime.datetime.now().isoformat(timespec='seconds'))
    while True:
      try:
        fd = os.open(self._path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        break
      except FileExistsError:
        holder = read_json_or_none(self._path) or {}
        if holder.get('host') != record['host'] or _running(holder):
          raise WorkdirError(self._workdir, self._held_message(holder))
        logging.warning('Taking over %s: its holder, PID %s started %s, is '
                        'no longer running on this host.', self._path,
                        holder.get('pid'), holder.get('started'))
        os.remove(self._path)
      except OSError as e:
        raise WorkdirError(self._workdir, f'cannot take the lock file '
                           f'{self._path} ({e}); fix its permissions or '
                           'choose another --workdir.') from e
    with os.fdopen(fd, 'w') as f:
      json.dump(record, f)
      f.flush()
      os.fsync(f.fileno())
    self._record = record

  def _held_message(self, holder: Dict[str, Any]) -> str:
    if not holder:  # Created, not yet written: a trainer is starting.
      return (f'is being taken by another trainer that is starting ({self._path}).'
              ' Wait for it, or use another --workdir.')
    return (f'is in use by another trainer: PID {holder.get("pid")} on host '
            f'{holder.get("host")}, started {holder.get("started")} '
            f'({self._path}). Wait for it to finish or stop it; if it is '
            'no longer running (it ran on another host), delete that file.')
