"""Where a compiled step's time goes: its XLA ops, traced by JAX's profiler
and summed by kind of op and by the part of the model they belong to.

An XLA op's kind is its name without the numeric suffix (`ynn_fusion`: a
matmul or conv handed to the matmul library; `multiply_tanh_fusion`: an
elementwise fusion; `transpose_copy_fusion`: a layout change, ...). Its part
is read from the op's JAX metadata (`op_name`, the module path under the
model's `apply`): the top-level module (`image_encoder`, `fusion`, ...) and
whether it is the forward or the backward pass; ops outside the model (the
loss's tail, gradient clipping, the optimizer update) are 'outside model'.
Times are thread times summed over the step's threads (on CPU, XLA runs ops
on several threads at once), so shares, not sums, compare with the step time.
"""
import collections
import glob
import re
import tempfile
from typing import Any, Callable, Dict, Tuple

import jax

_INSTRUCTION = re.compile(r'^\s*(?:ROOT )?%([\w.\-]+) = ', re.M)
_OP_NAME = re.compile(r'^\s*(?:ROOT )?%([\w.\-]+) = .*?op_name="([^"]*)"',
                      re.M)


def op_parts(hlo_text: str) -> Dict[str, str]:
  """XLA op name -> 'module (forward|backward)' from compiled HLO text."""
  parts = {}
  for name, op_name in _OP_NAME.findall(hlo_text):
    scopes = op_name.split('/')
    # The model's apply is the first scope holding the jvp of a module call
    # ('jvp(MultimodalModel)'); the backward pass wraps it in 'transpose('.
    model = next((i for i, s in enumerate(scopes) if s.startswith(
        ('jvp(', 'transpose(jvp('))), None)
    if model is None or model + 1 >= len(scopes):
      continue
    direction = 'backward' if scopes[model].startswith('transpose(') else (
        'forward')
    parts[name] = f'{scopes[model + 1].split(".")[0]} ({direction})'
  return parts


def profile_ops(step: Callable[[Any], Any], carry: Any, hlo_text: str,
                steps: int = 3) -> Tuple[Dict[str, Any], Any]:
  """Runs `carry = step(carry)` `steps` times under the profiler.

  Args:
    step: one compiled step as a function of what it carries (e.g. the
      train state), blocked on before the trace ends.
    carry: its first input.
    hlo_text: the compiled step's `as_text()`, for the ops' parts.
    steps: steps traced.
  Returns:
    ({'by_kind': {kind: seconds per step}, 'by_part': {...}, 'total':
    seconds per step}, sorted by time, and the last carry).
  """
  with tempfile.TemporaryDirectory() as directory:
    with jax.profiler.trace(directory):
      for _ in range(steps):
        carry = step(carry)
      jax.block_until_ready(carry)
    trace, = glob.glob(f'{directory}/**/*.xplane.pb', recursive=True)
    profile = jax.profiler.ProfileData.from_file(trace)
  parts = op_parts(hlo_text)
  instructions = set(_INSTRUCTION.findall(hlo_text))
  by_kind, by_part = collections.Counter(), collections.Counter()
  for plane in profile.planes:
    for line in plane.lines:
      for event in line.events:
        name = event.name
        # Op events carry the HLO instruction's name; the executor's, the
        # thread pool's and Python's own events do not.
        if name not in instructions:
          continue
        seconds = event.duration_ns * 1e-9 / steps
        by_kind[re.sub(r'\.\d+$', '', name)] += seconds
        by_part[parts.get(name, 'outside model')] += seconds
  return {'by_kind': dict(by_kind.most_common()),
          'by_part': dict(by_part.most_common()),
          'total': sum(by_kind.values())}, carry
