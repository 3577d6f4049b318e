"""Training-step throughput of a config: compile time, step time, FLOPs, MFU,
peak memory. `experiments/bench_throughput.py` is the command-line front end.

FLOPs per step are counted two ways:
  * analytic: the matmul FLOPs of the model's forward pass, read off the
    shapes every dense / conv / attention layer sees (`forward_matmul_flops`),
    times 3 for a training step (the backward pass costs two forward passes:
    gradients with respect to inputs and to weights). For one pre-LN
    self-attention block over B x T tokens of width D with MLP width M that
    is 3 * (8 B T D^2 + 4 B T^2 D + 4 B T D M): the q, k, v and output
    projections, the logits and the weighted sum, and the two MLP layers.
    Recomputation by remat is not counted (model FLOPs, as in MFU).
  * XLA: `compiled.cost_analysis()['flops']` of the compiled step times the
    number of devices (XLA analyses the per-device program), which also
    counts elementwise work and the optimizer update (XLA counts a loop body
    once, so it undercounts a scanned stack).
MFU = analytic FLOPs per step / step time / peak, where the peak is the FLOP
rate of a large matrix product timed on the same devices in the same run.
"""
import dataclasses
import functools
import json
import math
import os
import resource
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mmjax import data
from mmjax import fileio
from mmjax import host_memory
from mmjax import reporting
from mmjax.benchmarks import op_profile
from mmjax.errors import ConfigError
from mmjax.models import layers
from mmjax.experiment import Experiment
from mmjax.train import parallel


def _time(fn, *args, repeats: int) -> float:
  """Median wall time of `fn(*args)` (blocked on its result) over repeats."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def matmul_peak_flops(device: jax.Device, dtype: Any, sizes: Sequence[int],
                      repeats: int = 5) -> float:
  """The attainable FLOP/s for `dtype` on `device`: the best rate of square
  [n, n] x [n, n] products over `sizes` (each the median of `repeats` after a
  warm-up; the best size depends on the caches and the matmul library)."""
  matmul = jax.jit(jnp.matmul)
  rates = []
  for n in sizes:
    x = jax.device_put(jnp.ones((n, n), dtype), device)
    jax.block_until_ready(matmul(x, x))
    rates.append(2 * n**3 / _time(matmul, x, x, repeats=repeats))
  return max(rates)


def _call_flops(module: nn.Module, args: Sequence[Any], out: Any) -> int:
  """Forward matmul FLOPs of one layer call (0 for layers without matmuls)."""
  if isinstance(module, (nn.Dense, nn.DenseGeneral)):
    # Every input value meets every output feature once (one multiply-add).
    features = module.features
    return 2 * args[0].size * math.prod(
        features if isinstance(features, tuple) else (features,))
  if isinstance(module, nn.Conv):
    in_features = args[0].shape[-1]
    return 2 * out.size * math.prod(module.kernel_size) * in_features
  if isinstance(module, layers.MultiHeadAttention):
    q, kv = args[0], args[1]
    # Logits q k^T and the weighted sum of values: 2 * B Tq Tk D each.
    return 4 * q.shape[0] * q.shape[1] * kv.shape[1] * q.shape[2]
  return 0


def forward_matmul_flops(model: nn.Module, variables: Any,
                         batch: Mapping[str, Any]) -> int:
  """Matmul FLOPs of one forward pass of `model` on `batch` (traced, not run).

  Every dense, conv and attention call is counted from the shapes it sees.
  Blocks are unrolled and not rematerialised for the count, so that each
  executed call is traced once.
  """
  options = getattr(model, 'block_options', None)
  if options is not None:
    model = model.clone(block_options=dataclasses.replace(
        options, scan=False, remat='none'))
    variables = _unstack(variables)
  total = 0

  def count(next_fun, args, kwargs, context):
    nonlocal total
    out = next_fun(*args, **kwargs)
    if context.method_name == '__call__':
      total += _call_flops(context.module, args, out)
    return out

  with nn.intercept_methods(count):
    jax.eval_shape(lambda v, b: model.apply(v, b, train=True), variables,
                   batch)
  return total


def _unstack(tree: Any) -> Any:
  """Scanned stacks {blocks: [L, ...]} -> unrolled {block0, ...} (shapes)."""
  if not isinstance(tree, Mapping):
    return tree
  out = {}
  for key, value in tree.items():
    if key == 'blocks':
      depth = jax.tree.leaves(value)[0].shape[0]
      for i in range(depth):
        out[f'block{i}'] = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), value)
    else:
      out[key] = _unstack(value)
  return out


def xla_flops(compiled: Any) -> Optional[float]:
  """FLOPs of a compiled computation by XLA's cost analysis (None if absent)."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # Older JAX: one dict per device.
    analysis = analysis[0] if analysis else None
  return float(analysis['flops']) if analysis and 'flops' in analysis else None


def peak_memory(device: jax.Device) -> Dict[str, Any]:
  """Peak memory so far: the device allocator's peak where it reports one
  (GPU, TPU), else the process's peak resident set (CPU: the device memory
  is host memory)."""
  stats = device.memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    return {'peak_memory_bytes': int(stats['peak_bytes_in_use']),
            'peak_memory_source': 'device.memory_stats peak_bytes_in_use'}
  # ru_maxrss is in KiB on Linux.
  return {'peak_memory_bytes':
              resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
          'peak_memory_source': 'getrusage ru_maxrss (process)'}


def benchmark(config: ml_collections.ConfigDict, *, steps: int, warmup: int,
              peak_sizes: Optional[Sequence[int]] = None,
              profile_steps: int = 0) -> Dict[str, Any]:
  """Compiles and times the training step of `config` on one fixed batch.

  The batch is put on the devices once, so the input pipeline and the host
  to device copy are not timed; each timed step is synchronised
  (`block_until_ready`) so the median is one step's device time.

  Args:
    config: a training config in jit mode.
    steps: timed steps (0: compile and count only).
    warmup: steps run before timing.
    peak_sizes: matrix sizes of the peak-FLOP/s products (default 1024,
      2048, 4096 on CPU; 4096, 8192 on accelerators).
    profile_steps: steps traced after the timed ones for `op_profile`
      (where the step's time goes; 0: none).
  Returns:
    A JSON-able dict of the measurements and the settings they belong to.
  """
  if config.parallel.mode != 'jit':
    raise ConfigError('parallel.mode', "the benchmark times the 'jit' mode; "
                      f'got {config.parallel.mode!r}.')
  data.prepare(config)
  experiment = Experiment(config)
  runner = experiment.runner
  host_batch = next(experiment.train_iterator())
  batch = runner.put(host_batch)
  state = runner.init(experiment.init_rng)

  devices = runner.mesh.devices.flatten().tolist()
  platform = devices[0].platform
  peak_sizes = tuple(peak_sizes or ((1024, 2048, 4096) if platform == 'cpu'
                                    else (4096, 8192)))
  measure_peak = functools.partial(matmul_peak_flops, devices[0],
                                   jnp.dtype(config.model.dtype), peak_sizes)

  start = time.perf_counter()
  lowered = runner.lower_train_step(state, batch)
  lower_seconds = time.perf_counter() - start
  compiled = lowered.compile()  # From the persistent cache when it has it.
  compile_seconds = time.perf_counter() - start
  memory = compiled.memory_analysis()

  for _ in range(warmup):
    state, metrics = compiled(state, batch)
  jax.block_until_ready(state)
  step_times = []
  faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  for _ in range(steps):
    begin = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    step_times.append(time.perf_counter() - begin)
  faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
  # Memory before the peak products, whose buffers would count on CPU.
  result = peak_memory(devices[0])
  if profile_steps:
    result['op_profile'], state = op_profile.profile_ops(
        lambda s: compiled(s, batch)[0], state, compiled.as_text(),
        profile_steps)
  step_time = float(np.median(step_times)) if step_times else None
  # The best of two measurements, so that a busy moment on a shared machine
  # does not lower the peak (and inflate the MFU).
  peak = len(devices) * max(measure_peak(), measure_peak()) if steps else None
  analytic = 3 * forward_matmul_flops(
      experiment.model, {'params': state.params}, host_batch)
  batch_size = config.input.global_batch_size
  mc = config.model
  result.update({
      'device': f'{len(devices)} x {devices[0].device_kind}',
      'platform': platform,
      'jax_version': jax.__version__,
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
      'batch_size': batch_size,
      'dtype': mc.dtype,
      'param_dtype': mc.param_dtype,
      'remat': mc.remat,
      'scan_layers': mc.scan_layers,
      'attention': mc.attention,
      'accumulation_steps': config.optimizer.accumulation_steps,
      'num_params': int(sum(x.size for x in jax.tree.leaves(state.params))),
      'compile_seconds': compile_seconds,
      'lower_seconds': lower_seconds,
      'compilation_cache_dir': parallel.cache_directory(
          config.compilation_cache_dir),
      'steps': steps,
      'warmup': warmup,
      'step_seconds_median': step_time,
      'step_seconds_all': step_times,
      # Pages the process touched for the first time per step: XLA:CPU's
      # temporary buffer, unless mmjax.host_memory keeps it.
      'page_faults_per_step': faults / steps if steps else None,
      'retained_freed_memory': host_memory.retained(),
      'examples_per_second': batch_size / step_time if step_time else None,
      'flops_per_step_analytic': analytic,
      'flops_per_step_xla': xla_flops(compiled) * len(devices),
      'peak_flops_per_second': peak,
      'peak_matmul_sizes': list(peak_sizes),
      'achieved_flops_per_second': analytic / step_time if step_time else None,
      'mfu': analytic / step_time / peak if step_time else None,
      'xla_temp_bytes': getattr(memory, 'temp_size_in_bytes', None),
      'xla_argument_bytes': getattr(memory, 'argument_size_in_bytes', None),
      'final_loss': float(metrics['loss']) if steps + warmup else None,
  })
  return result


COLUMNS = (  # Of `format_table`.
    ('label', 'run', reporting.text),
    ('compile_seconds', 'compile s', reporting.fixed('{:.1f}')),
    ('lower_seconds', 'of it trace+lower s', reporting.fixed('{:.1f}')),
    ('step_seconds_median', 'step s', reporting.fixed('{:.4f}')),
    ('examples_per_second', 'examples/s', reporting.fixed('{:.1f}')),
    ('flops_per_step_analytic', 'GFLOP/step (analytic)',
     reporting.fixed('{:.1f}', 1e-9)),
    ('flops_per_step_xla', 'GFLOP/step (XLA)', reporting.fixed('{:.1f}', 1e-9)),
    ('peak_flops_per_second', 'peak GFLOP/s', reporting.fixed('{:.0f}', 1e-9)),
    ('mfu', 'MFU', reporting.fixed('{:.1%}')),
    ('peak_memory_bytes', 'peak memory MiB', reporting.fixed('{:.0f}', 2**-20)),
    ('xla_temp_bytes', 'XLA temp MiB', reporting.fixed('{:.0f}', 2**-20)),
)


def format_op_profile(profile: Mapping[str, Any], top: int = 12) -> str:
  """The largest shares of a step's op time by kind and by model part."""
  lines = []
  for field, title in (('by_part', 'model part'), ('by_kind', 'XLA op kind')):
    rows = [dict(name=name, seconds=seconds, share=seconds / profile['total'])
            for name, seconds in list(profile[field].items())[:top]]
    lines.append(reporting.markdown_table(rows, (
        ('name', title, reporting.text),
        ('seconds', 'thread ms / step', reporting.fixed('{:.1f}', 1e3)),
        ('share', 'share', reporting.fixed('{:.1%}')))))
  return '\n\n'.join(lines)


def default_label(config_file: str, result: Mapping[str, Any]) -> str:
  """A result's name in the table: the config file and the settings that
  tell benchmark runs of it apart."""
  return (f'{config_file} dtype={result["dtype"]} remat={result["remat"]} '
          f'scan={result["scan_layers"]} attention={result["attention"]} '
          f'batch={result["batch_size"]}')


def append_result(path: str, result: Mapping[str, Any]) -> List[Dict]:
  """Appends `result` to the JSON list in `path` (created with its directory
  if missing) and returns the whole list, so that several runs (say, remat
  off and on) make one table.

  Raises:
    ValueError naming `path` if it holds something other than a JSON list
    (it is left as it is).
  """
  results = []
  if os.path.exists(path):
    with open(path) as f:
      try:
        results = json.load(f)
      except json.JSONDecodeError as e:
        raise ValueError(f'{path} is not valid JSON ({e}); repair it or name '
                         'another --out.') from None
    if not isinstance(results, list):
      raise ValueError(f'{path} holds a JSON {type(results).__name__}, not '
                       'the list of results that benchmark runs append to; '
                       'name another --out.')
  results.append(dict(result))
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fileio.atomic_write_json(path, results)
  return results


def format_table(results: Sequence[Mapping[str, Any]]) -> str:
  """A Markdown table of benchmark results, one row per result."""
  return reporting.markdown_table(results, COLUMNS)
