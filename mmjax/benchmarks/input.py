"""Input pipeline benchmark: in one run, the input pipeline alone (examples/s
and time per op), the training step alone (fed one device-resident batch)
and the training loop, where the pipeline feeds the step as in
`mmjax.train.loop`. `experiments/bench_input.py` is the command-line front
end.

The pipeline should deliver comfortably more than the step consumes (the aim
is 1.5x); otherwise the accelerator waits for the host, and the loop's rate
falls below the step's.
"""
import itertools
import os
import time
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import jax
import ml_collections
import numpy as np

from mmjax import data
from mmjax import fileio
from mmjax import reporting
from mmjax.experiment import Experiment

RESULT_FILE = 'bench_input.json'
_WARMUP_BATCHES = 5  # Untimed batches before the pipeline is timed.
_WARMUP_STEPS = 3  # Untimed steps: the first compiles.


def time_ops(experiment: Experiment, count: int) -> Dict[str, float]:
  """Seconds per example of reading, selecting and each training op, over
  the first `count` stored examples (cycled if the split is smaller); keys
  'read', 'select' and '<i>:<op class>'."""
  spec, pp = experiment.spec, experiment.pp_train
  source = spec.source(spec.train_split)
  rng = np.random.default_rng(0)
  totals = {'read': 0., 'select': 0.}
  totals.update({f'{i}:{type(op).__name__}': 0. for i, op in
                 enumerate(pp.ops)})
  for i in range(count):
    start = time.perf_counter()
    stored = source[i % len(source)]
    totals['read'] += time.perf_counter() - start
    start = time.perf_counter()
    example = spec.select(stored)
    totals['select'] += time.perf_counter() - start
    for j, op in enumerate(pp.ops):
      start = time.perf_counter()
      example = op(example, rng)
      totals[f'{j}:{type(op).__name__}'] += time.perf_counter() - start
  return {k: v / count for k, v in totals.items()}


def pipeline_rate(experiment: Experiment, batches: int) -> float:
  """Examples/s of the training iterator alone (after a few warm-up
  batches; with `input.cache`, after an epoch, which fills the cache)."""
  config, spec = experiment.config, experiment.spec
  warmup = _WARMUP_BATCHES
  if config.input.cache:
    warmup += -(-spec.num_examples(spec.train_split)
                // config.input.global_batch_size)
  iterator = experiment.train_iterator()
  for _ in range(warmup):
    next(iterator)
  start = time.perf_counter()
  for _ in range(batches):
    batch = next(iterator)
  seconds = time.perf_counter() - start
  rows = len(next(iter(batch.values())))
  return batches * rows / seconds


def _train(runner, state, batches: Iterator[Any], steps: int
           ) -> Tuple[Any, float]:
  """Runs `steps` train steps on `batches` as the training loop does; returns
  the state and the seconds until the last step's metrics are ready."""
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = runner.train_step(state, next(batches))
  jax.block_until_ready(metrics)
  return state, time.perf_counter() - start


def train_rates(experiment: Experiment, steps: int, rounds: int
                ) -> Tuple[List[float], List[float]]:
  """Examples/s of the training step fed one device-resident batch, and of
  the training loop fed by the training iterator as `mmjax.train.loop` feeds
  it (with `config.input.prefetch`): `rounds` pairs of `steps` timed steps,
  step then loop, after warm-up ones (the step's compile is not timed).

  Alternating the two in rounds exposes both to the same load on the host, so
  their ratio holds on a machine whose speed drifts while the benchmark runs.
  """
  runner = experiment.runner
  state = runner.init(experiment.init_rng)
  resident = itertools.repeat(runner.put(next(experiment.train_iterator())))
  batches = experiment.train_iterator(on_device=True)
  state, _ = _train(runner, state, resident, _WARMUP_STEPS)
  state, _ = _train(runner, state, batches, _WARMUP_STEPS)
  examples = steps * experiment.config.input.global_batch_size
  step_rates, loop_rates = [], []
  for _ in range(rounds):
    state, step_seconds = _train(runner, state, resident, steps)
    state, loop_seconds = _train(runner, state, batches, steps)
    step_rates.append(examples / step_seconds)
    loop_rates.append(examples / loop_seconds)
  return step_rates, loop_rates


def benchmark(config: ml_collections.ConfigDict, *, batches: int, steps: int,
              examples: int, rounds: int = 3,
              num_workers: Optional[int] = None
              ) -> Dict[str, Any]:
  """Prepares the dataset of `config` and measures its input pipeline, its
  training step and its training loop.

  Args:
    config: a training config.
    batches: timed batches of the pipeline alone.
    steps: timed steps of the step alone, and of the loop, per round.
    examples: examples timed per preprocessing op.
    rounds: alternating rounds of the step alone and the loop; the rates
      reported are their medians.
    num_workers: Grain worker processes (default: `config.input.num_workers`).
  Returns:
    A JSON-able dict: the settings, examples/s of the pipeline, step and
    loop (the medians over rounds, and each round's), the pipeline-to-step
    ratio, the loop's fraction of min(pipeline, step) (1 when the pipeline
    is fully hidden behind the step) and microseconds per example of each op.
  """
  if min(batches, steps, examples, rounds) < 1:
    raise ValueError(f'batches, steps, examples and rounds must be >= 1, got '
                     f'{batches}, {steps}, {examples}, {rounds}.')
  config = config.copy_and_resolve_references()
  if num_workers is not None:
    config.input.num_workers = num_workers
  data.prepare(config)
  experiment = Experiment(config)
  per_op = time_ops(experiment, examples)
  pipeline = pipeline_rate(experiment, batches)
  step_rates, loop_rates = train_rates(experiment, steps, rounds)
  consumed, loop = np.median(step_rates), np.median(loop_rates)
  return {
      'dataset': f'{config.dataset.name}/{config.dataset.builder_config}',
      'pp_train': config.input.pp_train,
      'num_workers': config.input.num_workers,
      'prefetch': config.input.prefetch,
      'cache': config.input.cache,
      'cpu_count': os.cpu_count(),
      'devices': f'{jax.device_count()} x {jax.devices()[0].device_kind}',
      'pipeline_examples_per_s': pipeline,
      'step_examples_per_s': float(consumed),
      'ratio': pipeline / consumed,
      'loop_examples_per_s': float(loop),
      'loop_fraction_of_bound': float(loop / min(pipeline, consumed)),
      'rounds': {'step_examples_per_s': step_rates,
                 'loop_examples_per_s': loop_rates},
      'op_microseconds_per_example': {k: v * 1e6 for k, v in per_op.items()},
  }


def report(result: Mapping[str, Any]) -> str:
  """The result as text: a Markdown table of the time per op, then the
  rates."""
  table = reporting.markdown_table(
      [{'stage': k, 'us': v}
       for k, v in result['op_microseconds_per_example'].items()],
      [('stage', 'stage', reporting.text),
       ('us', 'us / example', reporting.fixed('{:.1f}'))])
  lines = [
      table,
      f'pipeline alone ({result["num_workers"]} workers): '
      f'{result["pipeline_examples_per_s"]:,.0f} examples/s',
      f'training step consumes: {result["step_examples_per_s"]:,.0f} '
      'examples/s',
      f'ratio: {result["ratio"]:.2f}x',
      f'training loop (pipeline feeding the step): '
      f'{result["loop_examples_per_s"]:,.0f} examples/s, '
      f'{result["loop_fraction_of_bound"]:.2f} of min(pipeline, step)']
  return '\n'.join(lines)


def write(result: Mapping[str, Any], workdir: str) -> str:
  """Writes `result` to `<workdir>/bench_input.json`; returns the path."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, RESULT_FILE)
  fileio.atomic_write_json(path, result)
  return path
