"""The composition root: turns a config into the parts of a run.

Scripts, evaluators, benchmarks and sweeps import `Experiment` and
`train_and_evaluate` from here; the layers below (data, models, tasks, train)
never see a whole config's wiring.
"""
import json
import os
import time
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from mmjax import data, evaluators
from mmjax.errors import ConfigError
from mmjax.fileio import atomic_write, atomic_write_json
from mmjax.models.model import build_model
from mmjax.registry import EVALUATORS
from mmjax.train import loop, parallel
from mmjax.train.checkpoint import Checkpointer
from mmjax.train.optimizer import make_optimizer
from mmjax.train.preemption import PreemptionWatcher
from mmjax.sharding import make_mesh
from mmjax.train.workdir import (CONFIG_FILE, WorkdirLock, check_stored_config,
                                 check_workdir)
from mmjax.train.writers import MetricWriter
from mmjax.validate import group_optimizer_config, validate_config

SUMMARY_FILE = loop.SUMMARY_FILE


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

  def __init__(self, config: ml_collections.ConfigDict, devices=None,
               validated=None):
    """`devices` defaults to all devices (local devices in pmap mode);
    `validated`: what `validate` returned for this config and devices, when
    the caller validated it already."""
    self.config = config
    pmap = config.parallel.mode == 'pmap'
    devices = _devices(config) if devices is None else devices
    self.spec, self.task = validated or validate(config, devices)
    parallel.enable_compilation_cache(config.compilation_cache_dir)
    self.pp_train, self.pp_eval = data.preprocessing(config.input, self.spec)
    # Shared by this experiment's training iterators (`input.cache`).
    self._train_cache = {} if config.input.cache else None
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
    self.tx, self.schedule = _optimizers(config, self.task)
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

  def train_iterator(self, on_device: bool = False):
    """This host's training batches: NumPy, or with `on_device` global arrays
    on the runner's devices, prefetched by `config.input.prefetch`."""
    return data.train_iterator(
        self.spec, self.pp_train,
        batch_size=self.config.input.global_batch_size // jax.process_count(),
        seed=self.config.seed, shard_index=jax.process_index(),
        shard_count=jax.process_count(),
        num_workers=self.config.input.num_workers,
        prefetch=self.config.input.prefetch if on_device else 0,
        put=self.runner.put if on_device else None,
        cache=self._train_cache)

  def eval_batches(self) -> Iterator[Mapping[str, np.ndarray]]:
    return data.eval_iterator(
        self.spec, self.pp_eval,
        batch_size=self.config.input.eval_batch_size // jax.process_count(),
        shard_index=jax.process_index(), shard_count=jax.process_count())

  def restore_run(self, workdir: str, step: Optional[int] = None
                  ) -> Tuple['Experiment', Any, int]:
    """Another run's (experiment, state, step) from its workdir (`restore`),
    e.g. the classifier whose features measure a generator's images."""
    return restore(load_config(workdir), workdir, step)

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



def _optimizers(config: ml_collections.ConfigDict, task):
  """(optimizer, learning-rate schedule): one for all parameters, or
  {group: ...} for a task that updates parameter groups in turn
  (`task.optimizer_groups`, e.g. a generator and a discriminator)."""
  groups = tuple(getattr(task, 'optimizer_groups', ()))
  if not groups:
    return make_optimizer(config.optimizer, config.num_train_steps)
  made = {g: make_optimizer(group_optimizer_config(config, g),
                            config.num_train_steps) for g in groups}
  return ({g: tx for g, (tx, _) in made.items()},
          {g: schedule for g, (_, schedule) in made.items()})


def validate(config: ml_collections.ConfigDict, devices=None):
  """Checks `config` for `devices` (default: the run's), naming the first bad
  field; returns (dataset spec, task). Cheap: reads and generates nothing."""
  devices = _devices(config) if devices is None else devices
  validated = validate_config(config, num_devices=len(devices),
                              process_count=jax.process_count())
  for name, cfg in config.get('evals', {}).items():
    EVALUATORS.get(cfg.get('type', ''), field=f'evals.{name}.type')
  logging.info('Config validated for %d devices.', len(devices))
  return validated


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
  validated = validate(config)  # Before anything is generated or written.
  with PreemptionWatcher() as preemption, WorkdirLock(
      workdir, jax.process_index()):
    check_stored_config(workdir, config)
    lead = jax.process_index() == 0
    if lead:  # One process generates the data; the others wait for it.
      data.prepare(config)
    multihost_utils.sync_global_devices('mmjax: dataset prepared')
    preemption.check('dataset preparation', step=None)
    experiment = Experiment(config, validated=validated)
    experiment.check_workdir(workdir)
    if lead:
      atomic_write(os.path.join(workdir, CONFIG_FILE),
                   config.to_json_best_effort(indent=2))
    checkpointer = experiment.make_checkpointer(workdir)
    writer = MetricWriter(workdir)
    try:
      summary = loop.train(experiment, workdir, checkpointer, writer, preemption,
                           progress, evaluators.build(config, experiment,
                                                      workdir))
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


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run in `workdir` was trained with."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f'{path} does not exist: {workdir} holds no mmjax training run. '
        'Pass the run\'s workdir, or its config with --config.')
  with open(path) as f:
    try:
      return ml_collections.ConfigDict(json.load(f))
    except ValueError as e:
      raise ValueError(f'{path} is not valid JSON ({e}); pass the run\'s '
                       'config with --config instead.') from e


def restore(config: ml_collections.ConfigDict, workdir: str,
            step: Optional[int] = None) -> Tuple['Experiment', Any, int]:
  """Builds the run's experiment and restores the state of `step` (default:
  the latest) onto this config's devices and mesh, for evaluation: the
  checkpoints are opened read-only (a training run may be writing to them at
  the same time) and only the train state is restored, not the input
  iterator.

  Returns:
    (experiment, state, step).
  Raises:
    CheckpointError naming the step and file when the step is corrupt;
    ValueError when the step does not exist, listing those that do.
  """
  if jax.process_index() == 0:
    data.prepare(config)
  multihost_utils.sync_global_devices('mmjax: dataset prepared')
  experiment = Experiment(config)
  checkpointer = experiment.make_checkpointer(workdir, read_only=True)
  steps = list(checkpointer.all_steps())
  if step is None and steps:
    step = steps[-1]
  if step not in steps:
    raise ValueError(f'{checkpointer.directory} has no checkpoint of step '
                     f'{step}; saved steps: {steps or "none"}.')
  state = experiment.runner.from_checkpoint(checkpointer.restore(
      step, experiment.runner.restore_target()))
  checkpointer.close()
  return experiment, state, step
