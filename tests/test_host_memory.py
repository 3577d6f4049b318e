"""mmjax.host_memory: a step's freed temporary buffer is reused, not faulted
back in. Each case runs in a fresh interpreter, as the setting must come
before NumPy is imported."""
import os
import subprocess
import sys

import pytest

# Faults per step of a jitted function whose XLA temporary buffer (128 MiB)
# is larger than a thread arena's heap, as a fraction of that buffer's pages.
PROBE = r'''
from mmjax import host_memory
print(host_memory.retain_freed_memory())
import resource
import jax
import jax.numpy as jnp

step = jax.jit(lambda x: (jnp.sin(x) * jnp.cos(x)).sum(0) +
               (jnp.exp(x) * jnp.tanh(x)).sum(1))
x = jnp.ones((4096, 4096))
pages = step.lower(x).compile().memory_analysis().temp_size_in_bytes // 4096
# Warm-up: a step may allocate before the last one has freed its buffer, so
# the heap first grows to hold two.
for _ in range(10):
  jax.block_until_ready(step(x))
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
  jax.block_until_ready(step(x))
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10 /
      pages)
'''


def run(code, **env):
  out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                       text=True, check=True, env={**os.environ, **env})
  return out.stdout.split(), out.stderr


@pytest.mark.parametrize('setting, retained', [('1', True), ('0', False)])
def test_a_step_reuses_the_pages_the_last_one_freed(setting, retained):
  (applied, faulted), _ = run(PROBE, MMJAX_RETAIN_FREED_MEMORY=setting)
  assert applied == str(retained)
  if retained:
    assert float(faulted) < 0.5
  else:  # glibc maps the buffer afresh for every step.
    assert float(faulted) > 0.9


def test_after_numpy_it_applies_nothing_and_says_how_to_fix_it():
  (applied,), stderr = run(
      'import numpy\nfrom mmjax import host_memory\n'
      'print(host_memory.retain_freed_memory())')
  assert applied == 'False'
  assert 'before importing NumPy' in stderr
