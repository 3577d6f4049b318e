"""`train`: the training loop. It drives any task and knows nothing about
modalities; `mmjax.experiment` builds the parts it drives."""
import os
import time
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import jax
import numpy as np
from absl import logging

from mmjax.fileio import atomic_write_json, read_json_or_none
from mmjax.models.pretrained import load_pretrained, pretrained_towers
from mmjax.tasks.base import split_predictions
from mmjax.train.checkpoint import Checkpointer
from mmjax.train.nonfinite import NonFiniteGuard
from mmjax.train.preemption import Interrupted, PreemptionWatcher
from mmjax.train.progress import Progress
from mmjax.train.warm_start import warm_start, warm_start_sources
from mmjax.train.writers import MetricWriter

SUMMARY_FILE = 'summary.json'
# Key of an evaluator's results holding {tag: uint8 image [H, W, C]}, which
# go to TensorBoard (e.g. the 'gan' evaluator's sample grid).
IMAGES = 'images'
# {"step": N}: the evaluation of step N was interrupted by a preemption, and
# its checkpoint is the one a resumed run starts from; it re-runs it first.
EVAL_PENDING_FILE = 'eval_pending.json'


def _param_count(state) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(state.params)))


def _numbers(results: Mapping[str, Any], prefix: str = '') -> Dict[str, float]:
  """The numbers of nested `results`, keyed 'a/b/c' (lists are left out)."""
  out = {}
  for key, value in results.items():
    if isinstance(value, Mapping):
      out.update(_numbers(value, f'{prefix}{key}/'))
    elif isinstance(value, (int, float, np.number)) and not isinstance(
        value, bool):
      out[f'{prefix}{key}'] = float(value)
  return out


def _read_eval_pending(workdir: str) -> Optional[int]:
  """The step whose evaluation a preemption interrupted, if any."""
  pending = read_json_or_none(os.path.join(workdir, EVAL_PENDING_FILE))
  return pending.get('step') if isinstance(pending, dict) else None


def train(experiment, workdir: str, checkpointer: Checkpointer,
          writer: MetricWriter, preemption: PreemptionWatcher,
          progress: bool, evaluators: Sequence[Tuple[str, int, Any]] = ()
          ) -> Dict[str, Any]:
  """Trains `experiment` (a `mmjax.experiment.Experiment`) to its last step,
  resuming from `checkpointer`'s latest step; returns the summary (less the
  wall time). `mmjax.experiment.train_and_evaluate` sets up the workdir.

  `evaluators`: (name, every_steps, evaluator) run after the task's own
  evaluation every `every_steps` steps (0: only after the last), their
  results' numbers written under `name` (see `mmjax.evaluators`), and the
  images under their `IMAGES` key to TensorBoard.
  """
  config, runner = experiment.config, experiment.runner
  lead = jax.process_index() == 0
  batches = experiment.train_iterator(on_device=True)
  state = runner.init(experiment.init_rng)
  latest, restored = checkpointer.restore_latest(runner.restore_target(),
                                                 batches)
  if latest is not None:
    state = runner.from_checkpoint(restored)
    logging.info('Resumed from step %d in %s', latest, checkpointer.directory)
  else:  # A fresh run: pretrained towers, then a warm start over them.
    if pretrained_towers(config):
      fresh = runner.to_checkpoint(state)
      state = runner.from_checkpoint(
          fresh.replace(params=load_pretrained(fresh.params, config)))
    if config.checkpoint.warm_start_from:
      state = runner.from_checkpoint(warm_start(
          runner.to_checkpoint(state),
          warm_start_sources(config.checkpoint.warm_start_from)))
  first_step = latest or 0
  preemption.check('restore', step=latest)
  num_params = _param_count(runner.to_checkpoint(state))
  logging.info('Model: %s parameters. %s', f'{num_params:,}',
               runner.describe(state))

  total = config.num_train_steps
  report = Progress(total, initial=first_step, enabled=progress and lead)
  guard = NonFiniteGuard(config.max_consecutive_nonfinite_steps)
  guard.total = int(runner.fetch(state.nonfinite.total))
  # Training speed: the steps after the first (which compiles), excluding the
  # time spent in evaluation.
  timed_steps, eval_seconds, timer = 0, 0.0, None

  def sync(step: int, metrics) -> Dict[str, Any]:
    """Step `step`'s metrics on the host, once its non-finite counts pass the
    guard: the loop's only reads of device values, at log, eval and
    checkpoint steps, so the device never waits for the host in between."""
    host, counts = runner.fetch((metrics, state.nonfinite))
    guard.check(step, counts, host)
    checkpointer.check()  # A failed save stops the run now.
    return host

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
    report.write(f'step {step}: ' + ', '.join(
        f'{k}={v:.4f}' for k, v in sorted(metrics.items())))
    pending = os.path.join(workdir, EVAL_PENDING_FILE)
    if lead and os.path.exists(pending):
      os.remove(pending)
    return metrics

  def save(step: int, metrics: Optional[Mapping[str, float]]) -> None:
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
    report.update(step)
    if timer is None:  # The first step compiled: the clock starts after it.
      jax.block_until_ready(metrics)
      timer = time.time()
    else:
      timed_steps += 1
    is_log = step % config.log_every_steps == 0 or step == total
    is_eval = step % config.eval_every_steps == 0 or step == total
    scheduled = step % config.checkpoint_every_steps == 0 or step == total
    stop = preemption.requested(step)
    due = [(name, evaluator) for name, every, evaluator in evaluators
           if (every and step % every == 0) or step == total]
    if not (is_log or is_eval or scheduled or stop or due):
      continue
    host = sync(step, metrics)  # Never evaluate or save a failing run.
    if is_log:
      writer.write(step, 'train', {**host, 'nonfinite_steps': guard.total})
      report.postfix = f'loss={host["loss"]:.4f}'
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
    for name, evaluator in due:
      jax.block_until_ready(state)
      eval_start = time.time()
      results = evaluator.run(state, step)
      writer.write(step, name, _numbers(results))
      writer.write_images(step, name, results.get(IMAGES, {}))
      eval_seconds += time.time() - eval_start
    if scheduled or stop:
      save(step, eval_metrics if is_eval else None)
    if stop:
      checkpointer.wait()
      logging.warning('Preempted: saved step %d; stopping.', step)
      raise preemption.stop(step)
  jax.block_until_ready(state)
  train_seconds = time.time() - timer - eval_seconds if timer else 0.0
  report.close()
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
