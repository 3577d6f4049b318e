"""Host memory: keep the pages a CPU step frees for the next step.

XLA:CPU allocates each execution's temporary buffer (all of a training step's
activations and gradients: 218 MiB for the manifest audio config, 553 MiB for
configs/bench.py) with `malloc`, from one of its own threads, and frees it at
the end of the step. glibc serves such a block from that thread's arena,
whose heaps are capped at 64 MiB, so it maps it fresh with `mmap` and unmaps
it on `free`: every step then page-faults its whole temporary buffer back in
(one fault per 4 KiB page, each zeroing it): on a 2-core CPU the bench
model's median step took 16 % longer for it (benchmarks/throughput.md).

`retain_freed_memory` sets glibc's allocator, for this process, to do what
accelerator allocators do: one arena for every thread, large blocks from its
heap instead of `mmap`, and freed memory kept rather than returned to the
system, so a step reuses the pages of the one before. The process's resident
memory stays at its peak. Nothing computed changes. `MMJAX_RETAIN_FREED_MEMORY=0`
in the environment turns it off (a host shared with jobs that need the memory
back).
"""
import ctypes
import ctypes.util
import os
import platform
import sys

from absl import logging

# mallopt(3) parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_INT_MAX = 2**31 - 1
_ENV = 'MMJAX_RETAIN_FREED_MEMORY'
_retained = False


def retained() -> bool:
  """Whether `retain_freed_memory` applied its settings in this process."""
  return _retained


def retain_freed_memory() -> bool:
  """Keeps freed heap memory in the process (glibc only; see module doc).

  Call it first thing in a script: before NumPy is imported, whose OpenBLAS
  thread opens a second arena that the threads started later would share
  (and that arena, like any but the main one, maps large blocks afresh).
  Returns whether the settings were applied.
  """
  global _retained
  if os.environ.get(_ENV, '1') == '0' or platform.libc_ver()[0] != 'glibc':
    return False  # Turned off; or not glibc (macOS, musl): no mallopt.
  if 'numpy' in sys.modules:
    logging.warning(
        'mmjax.host_memory.retain_freed_memory() was called after NumPy was '
        'imported; freed memory is not retained. Call it before importing '
        'NumPy, JAX or TensorFlow.')
    return False
  libc = ctypes.CDLL(ctypes.util.find_library('c'))
  _retained = all(libc.mallopt(parameter, value) == 1 for parameter, value in (
      (_M_ARENA_MAX, 1),  # Every thread on the main arena ...
      (_M_MMAP_MAX, 0),  # ... which grows its heap for large blocks ...
      (_M_TRIM_THRESHOLD, _INT_MAX)))  # ... and keeps what is freed.
  return _retained
