r"""Kernel-gradient time of each conv of the manifest config's image CNN
(64-px images, batch 64, `ConvStack` sizes 'tiny': 3 -> 16 -> 32 -> 32
channels, 3x3, a 2x2 max-pool after each), computed by XLA (`jax.vjp` of
`lax.conv_general_dilated`) and by offsets (`layers.conv_offset_kernel_grad`),
jitted alone and timed in alternating rounds in one process.

  python benchmarks/conv_kernel_grad/compare.py \
      --out=benchmarks/conv_kernel_grad/results.json
"""
from mmjax import host_memory

host_memory.retain_freed_memory()  # As the scripts do: before NumPy.

import time  # noqa: E402

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from mmjax import fileio  # noqa: E402
from mmjax.models import layers  # noqa: E402

_ROUNDS = flags.DEFINE_integer('rounds', 5, 'Alternating timing rounds.')
_OUT = flags.DEFINE_string('out', 'benchmarks/conv_kernel_grad/results.json',
                           '')
# (input [B, H, W, in], out channels) of the three convs.
CONVS = {'conv0': ((64, 64, 64, 3), 16), 'conv1': ((64, 32, 32, 16), 32),
         'conv2': ((64, 16, 16, 32), 32)}
NUMBERS = jax.lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1),
                                       (0, 3, 1, 2))


def kernel_grad(conv):
  def grad(x, kernel, dy):
    _, vjp = jax.vjp(lambda k: conv(x, k, (1, 1), 'SAME',
                                      dimension_numbers=NUMBERS), kernel)
    return vjp(dy)[0]
  return jax.jit(grad)


def main(_):
  rng = np.random.default_rng(0)
  methods = {'xla': kernel_grad(jax.lax.conv_general_dilated),
             'offsets': kernel_grad(layers.conv_offset_kernel_grad)}
  results = {}
  for name, (shape, out) in CONVS.items():
    x = rng.normal(size=shape).astype(np.float32)
    kernel = rng.normal(size=(3, 3, shape[-1], out)).astype(np.float32)
    dy = rng.normal(size=shape[:-1] + (out,)).astype(np.float32)
    grads = {m: jax.block_until_ready(f(x, kernel, dy))
             for m, f in methods.items()}
    times = {m: [] for m in methods}
    for _ in range(_ROUNDS.value):
      for m, f in methods.items():
        start = time.perf_counter()
        for _ in range(5):
          jax.block_until_ready(f(x, kernel, dy))
        times[m].append((time.perf_counter() - start) / 5)
    seconds = {m: float(np.median(t)) for m, t in times.items()}
    results[name] = dict(
        input_shape=shape, out_channels=out,
        flops=2 * int(np.prod(shape)) * 9 * out,
        seconds=seconds, xla_over_offsets=seconds['xla'] / seconds['offsets'],
        max_relative_difference=float(
            np.abs(grads['xla'] - grads['offsets']).max() /
            np.abs(grads['xla']).max()))
    print(name, results[name])
  fileio.atomic_write_json(_OUT.value, dict(
      device=str(jax.devices()[0].device_kind), jax_version=jax.__version__,
      rounds=_ROUNDS.value, convs=results))


if __name__ == '__main__':
  app.run(main)
