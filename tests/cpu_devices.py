"""XLA settings of the test suite, shared by the test processes (see
conftest.py) and the scripts that tests start in subprocesses.

Tests import it by name: pytest puts tests/ on sys.path for its conftest.py.
"""
import os

# The suite compiles far more than it computes: without LLVM's optimisations
# XLA:CPU builds the same programs about a third faster (measured on 2 cores,
# `pytest -n 2 tests/test_configs.py tests/train/test_parallel.py`: 189 s
# with the default level, 124 s with 0). The arithmetic is the same IEEE
# arithmetic; only the machine code is slower, which these tiny steps do not
# notice.
FAST_COMPILE = '--xla_backend_optimization_level=0'


def xla_flags(devices: int) -> str:
  """XLA_FLAGS for `devices` forced CPU devices."""
  return f'--xla_force_host_platform_device_count={devices} {FAST_COMPILE}'


def subprocess_env(devices: int) -> dict:
  """The environment of a script run on `devices` CPU devices."""
  return {**os.environ, 'JAX_PLATFORMS': 'cpu', 'XLA_FLAGS': xla_flags(devices)}
