"""`train_and_evaluate`: the training loop. It drives any task and knows nothing
about modalities; the config decides the data, model, task and parallelism."""
import os
import time
from typing import Any, Dict, Iterator, Mapping, Optional

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from tqdm import tqdm

from mmjax import data
from mmjax.errors import ConfigError
from mmjax.fileio import atomic_write, atomic_write_json, read_json_or_none
from mmjax.models.model import build_model
from mmjax.tasks.base import split_predictions
from mmjax.train import parallel
from mmjax.train.checkpoint import Checkpointer
from mmjax.train.nonfinite import NonFiniteGuard
from mmjax.train.optimizer import make_optimizer
from mmjax.train.preemption import Interrupted, PreemptionWatcher
from mmjax.train.sharding import make_mesh
from mmjax.train.warm_start import warm_start
from mmjax.train.workdir import (CONFIG_FILE, WorkdirLock, check_stored_config,
                                 check_workdir)
from mmjax.train.writers import MetricWriter
from mmjax.validate import validate_config

SUMMARY_FILE = 'summary.json'
# {"step": N}: the evaluation of step N was interrupted by a preemption, and
# its checkpoint is the one a resumed run starts from; it re-runs it first.
EVAL_PENDING_FILE = 'eval_pending.json'


def _example_batch(example_spec) -> Dict[str, np.ndarray]:
  """A one-example batch of zeros with the dataset's shapes, for model init."""
  return {k: np.zeros((1, *s.shape), s.dtype) for k, s in example_spec.items()}


def _devices(config: ml_collections.ConfigDict):
  """The devices a run uses: all of them, or this host's in pmap mode."""
  return (jax.local_devices() if config.parallel.mode == 'pmap' else
          jax.devices())


def _rules(rules):
  """Config rules (lists after a JSON round trip) -> tuples of pairs."""
  return tuple(tuple(r) for r in rules)


class Experiment:
  """The pieces of one run, built from a validated config.

  Separate from the loop so that tests and tools (evaluation, benchmarks) can
  build the same model, state and steps without training. The dataset must be
  prepared (`mmjax.data.prepare`): the input shapes come from its first
  example.
  """

  def __init__(self, config: ml_collections.ConfigDict, devices=None):
    """`devices` defaults to all devices (local devices in pmap mode)."""
    self.config = config
    pmap = config.parallel.mode == 'pmap'
    devices = _devices(config) if devices is None else devices
    self.spec, self.task = validate_config(
        config, num_devices=len(devices),
        process_count=jax.process_count())
    parallel.enable_compilation_cache(config.compilation_cache_dir)
    self.pp_train, self.pp_eval = data.preprocessing(config.input, self.spec)
    self.example_spec = data.example_spec(self.spec, self.pp_train)
    eval_spec = data.example_spec(self.spec, self.pp_eval)
    if eval_spec != self.example_spec:
      raise ConfigError('input.pp_eval', (
          f'gives examples {eval_spec}, but input.pp_train gives '
          f'{self.example_spec}; evaluation must produce the same keys, '
          'shapes and dtypes as training.'))
    meta = self.pp_train.meta
    self.model = build_model(config, num_outputs=self.task.num_outputs,
                             vocab_size=meta.get('vocab_size'),
                             sample_rate=meta.get('sample_rate'),
                             bn_axis_name=parallel.PMAP_AXIS if pmap else None)
    self.tx, self.schedule = make_optimizer(config.optimizer,
                                            config.num_train_steps)
    init_rng, dropout_rng = jax.random.split(jax.random.key(config.seed))
    self.init_rng = init_rng
    common = dict(model=self.model, tx=self.tx, task=self.task,
                  schedule=self.schedule, dropout_rng=dropout_rng,
                  example_batch=_example_batch(self.example_spec),
                  accumulation_steps=config.optimizer.accumulation_steps)
    if pmap:
      self.runner = parallel.PmapRunner(devices=devices, **common)
    else:
      self.runner = parallel.JitRunner(
          mesh=make_mesh(config.parallel.mesh, devices),
          rules=_rules(config.parallel.rules),
          tower_rules={m: _rules(r) for m, r in
                       config.parallel.tower_rules.items()},
          **common)

  def train_iterator(self):
    return data.train_iterator(
        self.spec, self.pp_train,
        batch_size=self.config.input.global_batch_size // jax.process_count(),
        seed=self.config.seed, shard_index=jax.process_index(),
        shard_count=jax.process_count(),
        num_workers=self.config.input.num_workers)

  def eval_batches(self) -> Iterator[Mapping[str, np.ndarray]]:
    return data.eval_iterator(
        self.spec, self.pp_eval,
        batch_size=self.config.input.eval_batch_size // jax.process_count(),
        shard_index=jax.process_index(), shard_count=jax.process_count())

  def evaluate(self, state) -> Dict[str, float]:
    return self.runner.evaluate(state, self.eval_batches())

  def make_checkpointer(self, workdir: str,
                        read_only: bool = False) -> Checkpointer:
    c = self.config.checkpoint
    return Checkpointer(
        os.path.join(workdir, 'checkpoints'), keep_last=c.keep_last,
        keep_best=c.keep_best, best_metric=self.task.best_metric,
        best_mode=self.task.best_mode, async_save=c.async_save,
        fallback_on_corrupt=c.fallback_on_corrupt, read_only=read_only)

  def check_workdir(self, workdir: str) -> None:
    """Fails early if `workdir` cannot take this run's checkpoints."""
    target = self.runner.restore_target()
    c = self.config.checkpoint
    check_workdir(workdir,
                  sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(target)),
                  copies=c.keep_last + c.keep_best + 1,
                  process_index=jax.process_index())


def _param_count(state) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(state.params)))


def _read_eval_pending(workdir: str) -> Optional[int]:
  """The step whose evaluation a preemption interrupted, if any."""
  pending = read_json_or_none(os.path.join(workdir, EVAL_PENDING_FILE))
  return pending.get('step') if isinstance(pending, dict) else None


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       progress: bool = True) -> Dict[str, Any]:
  """Trains `config` in `workdir`, resuming from its latest checkpoint.

  Holds the workdir's lock for the whole run, and stops on SIGTERM / SIGINT
  in any phase with its progress checkpointed (`preemption.Preempted`).
  Writes TensorBoard events and `metrics.jsonl` while training, checkpoints
  under `checkpoints/`, and `summary.json` at the end.
  Returns:
    The summary: final eval metrics, parameter count, steps/s, wall time.
  Raises:
    WorkdirError if another trainer holds `workdir`, or its checkpoints were
    saved by a config that changes the train state.
  """
  start = time.time()
  # Validate before anything is generated or written.
  validate_config(config, num_devices=len(_devices(config)),
                  process_count=jax.process_count())
  with PreemptionWatcher() as preemption, WorkdirLock(
      workdir, jax.process_index()):
    check_stored_config(workdir, config)
    lead = jax.process_index() == 0
    if lead:  # One process generates the data; the others wait for it.
      data.prepare(config)
    multihost_utils.sync_global_devices('mmjax: dataset prepared')
    preemption.check('dataset preparation', step=None)
    experiment = Experiment(config)
    experiment.check_workdir(workdir)
    if lead:
      atomic_write(os.path.join(workdir, CONFIG_FILE),
                   config.to_json_best_effort(indent=2))
    checkpointer = experiment.make_checkpointer(workdir)
    writer = MetricWriter(workdir)
    try:
      summary = _train(experiment, workdir, checkpointer, writer, preemption,
                       progress)
    except Exception:
      # Saves already started hold good states: let them land before failing.
      checkpointer.wait()
      raise
    finally:
      checkpointer.close()
      writer.close()
    summary['wall_time_seconds'] = time.time() - start
    if lead:
      atomic_write_json(os.path.join(workdir, SUMMARY_FILE), summary)
    return summary


def _train(experiment: Experiment, workdir: str, checkpointer: Checkpointer,
           writer: MetricWriter, preemption: PreemptionWatcher,
           progress: bool) -> Dict[str, Any]:
  """The training loop of `train_and_evaluate`; returns the summary (less
  the wall time)."""
  config, runner = experiment.config, experiment.runner
  lead = jax.process_index() == 0
  batches = experiment.train_iterator()
  state = runner.init(experiment.init_rng)
  latest, restored = checkpointer.restore_latest(runner.restore_target(),
                                                 batches)
  if latest is not None:
    state = runner.from_checkpoint(restored)
    logging.info('Resumed from step %d in %s', latest, checkpointer.directory)
  elif config.checkpoint.warm_start_from:
    state = runner.from_checkpoint(warm_start(
        runner.to_checkpoint(state), config.checkpoint.warm_start_from))
  first_step = latest or 0
  preemption.check('restore', step=latest)
  num_params = _param_count(runner.to_checkpoint(state))
  logging.info('Model: %s parameters. %s', f'{num_params:,}',
               runner.describe(state))

  total = config.num_train_steps
  bar = tqdm(total=total, initial=first_step, unit='step', dynamic_ncols=True,
             disable=not (progress and lead))
  # Training speed: the steps after the first (which compiles), excluding the
  # time spent in evaluation.
  timed_steps, eval_seconds, timer = 0, 0.0, None
  guard = NonFiniteGuard(config.max_consecutive_nonfinite_steps,
                         runner.fetch)
  checked = None  # (step, metrics) whose finiteness is still to be read.

  def evaluate(step: int) -> Dict[str, float]:
    """Evaluates `state` (at `step`) and writes the records; raises
    preemption.Interrupted if a signal arrives between two batches."""
    nonlocal eval_seconds
    jax.block_until_ready(state)  # Queued train steps count as training.
    eval_start = time.time()
    metrics, predictions = split_predictions(runner.evaluate(
        state, preemption.interruptible(experiment.eval_batches())))
    eval_seconds += time.time() - eval_start
    writer.write(step, 'eval', metrics)
    writer.write_predictions(step, 'eval', predictions)
    bar.write(f'step {step}: ' + ', '.join(
        f'{k}={v:.4f}' for k, v in sorted(metrics.items())))
    pending = os.path.join(workdir, EVAL_PENDING_FILE)
    if lead and os.path.exists(pending):
      os.remove(pending)
    return metrics

  def save(step: int, metrics: Optional[Mapping[str, float]]) -> None:
    nonlocal checked
    if checked is not None:  # Never save the state of a failing run.
      guard.check(*checked)
      checked = None
    checkpointer.save(step, runner.to_checkpoint(state), batches,
                      metrics=metrics)

  eval_metrics: Optional[Dict[str, float]] = None
  if latest is not None and _read_eval_pending(workdir) == latest:
    try:  # The evaluation a preemption interrupted: the checkpoint is after it.
      eval_metrics = evaluate(latest)
    except Interrupted:
      preemption.check(f'the evaluation of step {latest}', step=latest)
  for step in range(first_step + 1, total + 1):
    state, metrics = runner.train_step(state, next(batches))
    # Read the previous step's flag while this one runs: the device never
    # waits for the host.
    if checked is not None:
      guard.check(*checked)
    checked = (step, metrics)
    bar.update(1)
    if timer is None:
      jax.block_until_ready(metrics)
      timer = time.time()
    else:
      timed_steps += 1
    if step % config.log_every_steps == 0 or step == total:
      guard.check(*checked)  # This step's count goes into its record.
      checked = None
      checkpointer.check()  # A failed save stops the run now.
      host = runner.fetch(metrics)
      writer.write(step, 'train', {**host, 'nonfinite_steps': guard.total})
      bar.set_postfix(loss=f'{host["loss"]:.4f}')
    is_eval = step % config.eval_every_steps == 0 or step == total
    if is_eval:
      try:
        eval_metrics = evaluate(step)
      except Interrupted:
        # Save the trained step; its evaluation runs again on resume.
        if lead:
          atomic_write_json(os.path.join(workdir, EVAL_PENDING_FILE),
                            {'step': step})
        save(step, None)
        checkpointer.wait()
        logging.warning('Preempted during the evaluation of step %d: saved '
                        'it; the evaluation runs again on resume.', step)
        raise preemption.stop(step)
    scheduled = step % config.checkpoint_every_steps == 0 or step == total
    stop = preemption.requested(step)
    if scheduled or stop:
      save(step, eval_metrics if is_eval else None)
    if stop:
      checkpointer.wait()
      logging.warning('Preempted: saved step %d; stopping.', step)
      raise preemption.stop(step)
  if checked is not None:
    guard.check(*checked)
  jax.block_until_ready(state)
  train_seconds = time.time() - timer - eval_seconds if timer else 0.0
  bar.close()
  if eval_metrics is None:  # Nothing left to train: evaluate what was restored.
    try:
      eval_metrics = evaluate(total)
    except Interrupted:
      preemption.check(f'the evaluation of step {total}', step=total)
  checkpointer.wait()
  # The final save has landed: a signal during it stops the run like any
  # other (exit 75); the rerun finds every step trained and re-evaluates.
  if preemption.received:
    raise preemption.stop(total)
  return {
      'final_step': total,
      'eval': eval_metrics,
      'num_params': num_params,
      'steps_per_second': (timed_steps / train_seconds if timed_steps
                           else None),
      'nonfinite_steps': guard.total,
      'devices': jax.device_count(),
      'mode': config.parallel.mode,
  }
