"""Start-up check of the work directory: writable, with room for checkpoints.

Run before training, so a typo'd path, a read-only mount or a full disk is
reported in the first seconds instead of at the first checkpoint, hours in.
"""
import os
import shutil

from absl import logging

from mmjax.errors import WorkdirError

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
