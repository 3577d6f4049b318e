r"""Training-step time of configs/bench.py with each MLP activation, in one
process: every variant is compiled first, then timed in alternating rounds
(4 steps each after one untimed step), so all see the same machine load.
The activation is swapped in `layers.ACTIVATIONS['gelu_tanh']` (the default
of every transformer block, fusion blocks included) for the variant's
compilation only: a measurement device, not a config option.

  python benchmarks/activation/compare.py --config=configs/bench.py \
      --out=benchmarks/activation/results.json
"""
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from mmjax import data
from mmjax import fileio
from mmjax.benchmarks import throughput
from mmjax.experiment import Experiment
from mmjax.models import layers

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/bench.py', '')
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Alternating timing rounds.')
_OUT = flags.DEFINE_string('out', 'benchmarks/activation/results.json', '')
VARIANTS = dict(layers.ACTIVATIONS, relu=jax.nn.relu)


def main(_):
  config = _CONFIG.value
  data.prepare(config)
  default = layers.ACTIVATIONS['gelu_tanh']
  runs = {}
  for name, fn in VARIANTS.items():
    layers.ACTIVATIONS['gelu_tanh'] = fn
    experiment = Experiment(config)
    runner = experiment.runner
    batch = runner.put(next(experiment.train_iterator()))
    state = runner.init(experiment.init_rng)
    runs[name] = [runner.lower_train_step(state, batch).compile(), state,
                  batch, []]
  layers.ACTIVATIONS['gelu_tanh'] = default
  peaks = []
  for _ in range(_ROUNDS.value):
    for run in runs.values():
      compiled, state, batch, times = run
      state = jax.block_until_ready(compiled(state, batch)[0])
      for _ in range(4):
        state, seconds = _timed(compiled, state, batch)
        times.append(seconds)
      run[1] = state
    peaks.append(throughput.matmul_peak_flops(
        jax.devices()[0], jnp.float32, (1024, 2048, 4096)))
  base = float(np.median(runs['gelu_tanh'][3]))
  result = {'peak_flops_per_second': max(peaks), 'peaks': peaks, 'steps': {}}
  for name, (_, _, _, times) in runs.items():
    result['steps'][name] = dict(step_seconds_median=float(np.median(times)),
                                 relative_to_gelu_tanh=np.median(times) / base,
                                 step_seconds_all=times)
    print(f'{name:11s} {np.median(times):.4f} s  '
          f'{np.median(times) / base:.3f} x gelu_tanh')
  fileio.atomic_write_json(_OUT.value, result)


def _timed(compiled, state, batch):
  """One step's wall time (the previous step was blocked on)."""
  begin = time.perf_counter()
  state = jax.block_until_ready(compiled(state, batch)[0])
  return state, time.perf_counter() - begin


if __name__ == '__main__':
  app.run(main)
