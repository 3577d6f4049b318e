"""The train state and the pure train / eval steps, shared by the jit and pmap modes.

Each step is a pure function of (state, batch); the parallel runners in
`mmjax.train.parallel` compile them with `jax.jit` over a mesh or with
`jax.pmap`, where `axis_name` names the device axis to average over.
"""
import functools
from typing import Any, Callable, Mapping, Optional, Tuple, Union

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

Batch = Mapping[str, jax.Array]
Metrics = Mapping[str, jax.Array]
# One optimizer for all parameters, or one per parameter group: {name of a
# top-level parameter subtree: its optimizer}, the groups updated in turn.
Optimizers = Union[optax.GradientTransformation,
                   Mapping[str, optax.GradientTransformation]]


@flax.struct.dataclass
class NonFiniteCounts:
  """Steps whose loss or gradient was not finite (int32 scalars), counted on
  the device so that the host reads them only when it logs, evaluates or
  saves (`mmjax.train.nonfinite.NonFiniteGuard`)."""
  streak: jax.Array  # Consecutive non-finite steps up to this one.
  longest: jax.Array  # The longest streak so far.
  total: jax.Array

  @classmethod
  def zeros(cls) -> 'NonFiniteCounts':
    zero = jnp.zeros((), jnp.int32)
    return cls(streak=zero, longest=zero, total=zero)

  def add(self, finite: jax.Array) -> 'NonFiniteCounts':
    """The counts after one more step, finite or not."""
    bad = 1 - finite.astype(jnp.int32)
    streak = (self.streak + 1) * bad
    return NonFiniteCounts(streak=streak,
                           longest=jnp.maximum(self.longest, streak),
                           total=self.total + bad)


@flax.struct.dataclass
class TrainState:
  """Everything a training run updates; all leaves are arrays (checkpointable)."""
  step: jax.Array
  params: Any
  batch_stats: Any  # BatchNorm running statistics; {} for models without.
  opt_state: Any
  nonfinite: NonFiniteCounts


def init_state(model: nn.Module, tx: Optimizers, example_batch: Batch,
               rng: jax.Array) -> TrainState:
  """A fresh state. Parameters stay boxed (`nn.Partitioned`) so that
  `jax.eval_shape` of this function exposes their logical axis names.
  With one optimizer per parameter group, `opt_state` is {group: state}."""
  variables = model.init({'params': rng, 'dropout': rng}, example_batch,
                         train=False)
  params = variables['params']
  opt_state = ({g: t.init(params[g]) for g, t in tx.items()}
               if isinstance(tx, Mapping) else tx.init(params))
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get('batch_stats', {}),
                    opt_state=opt_state,
                    nonfinite=NonFiniteCounts.zeros())


def model_variables(params: Any, batch_stats: Any) -> Mapping[str, Any]:
  """The variables `model.apply` takes: params, and batch statistics if any."""
  if batch_stats:
    return {'params': params, 'batch_stats': batch_stats}
  return {'params': params}


def split_microbatches(batch: Batch, num: int) -> Batch:
  """[B, ...] arrays -> [num, B / num, ...]; micro-batch i holds rows i::num.

  Strided rather than contiguous rows: a device holding a contiguous block of
  the (data-sharded) batch then holds an equal share of every micro-batch, so
  the split moves no data between devices.
  """
  def split(x):
    if x.shape[0] % num:
      raise ValueError(f'batch of {x.shape[0]} rows does not split into '
                       f'{num} micro-batches')
    return x.reshape(x.shape[0] // num, num, *x.shape[1:]).swapaxes(0, 1)
  return jax.tree.map(split, batch)


def fold_step(rng: jax.Array, state: TrainState,
             axis_name: Optional[str]) -> jax.Array:
  """`rng` folded with the step and, under pmap, the device index."""
  step_rng = jax.random.fold_in(rng, state.step)
  if axis_name is not None:
    step_rng = jax.random.fold_in(step_rng, jax.lax.axis_index(axis_name))
  return step_rng


def train_step(state: TrainState, batch: Batch, *, model: nn.Module,
               tx: Optimizers, loss_fn: Callable, schedule: Callable,
               rng: jax.Array, axis_name: Optional[str] = None,
               accumulation_steps: int = 1, group: Optional[str] = None
               ) -> Tuple[TrainState, Metrics]:
  """One optimizer step on `batch`; returns the new state and on-device metrics.

  With one optimizer per parameter group (`tx` and `schedule` mappings),
  step s updates only group `list(tx)[s % len(tx)]`, by its own optimizer
  (whose learning rate `schedule[group]` reports), minimising
  `loss_fn(outputs, batch, group)`; the other groups and their optimizer
  states stay as they are (`lax.switch`: one compiled step for all groups;
  `group` is the group a branch updates).

  The dropout key is `rng` folded with the step (and, under pmap, with the
  device index; with accumulation, with the micro-batch index), so no key is
  ever reused. With `accumulation_steps` k > 1 the batch is split into k
  equal micro-batches (`split_microbatches`) whose gradients and metrics are
  averaged in a `lax.scan` before one update: for a mean loss and a
  deterministic model without batch statistics this is the full batch's
  gradient, with the activation memory of one micro-batch. BatchNorm
  statistics are updated micro-batch after micro-batch. A step whose loss or
  gradients are not finite changes nothing but the step counter and reports
  `nonfinite` = 1 in its metrics.
  """
  if isinstance(tx, Mapping):
    updates = [functools.partial(
        train_step, model=model, tx=group_tx,
        loss_fn=functools.partial(loss_fn, group=group),
        schedule=schedule[group],
        rng=rng, axis_name=axis_name, accumulation_steps=accumulation_steps,
        group=group) for group, group_tx in tx.items()]
    return jax.lax.switch(state.step % len(updates), updates, state, batch)
  step_rng = fold_step(rng, state, axis_name)

  def compute_loss(params, batch_stats, batch, dropout_rng):
    outputs, updates = model.apply(
        model_variables(params, batch_stats), batch, train=True,
        rngs={'dropout': dropout_rng}, mutable=['batch_stats'])
    loss, metrics = loss_fn(outputs, batch)
    return loss, (metrics, updates.get('batch_stats', {}))

  grad_fn = jax.value_and_grad(compute_loss, has_aux=True)
  if accumulation_steps == 1:
    (_, (metrics, batch_stats)), grads = grad_fn(
        state.params, state.batch_stats, batch, step_rng)
  else:
    def accumulate(carry, inputs):
      grad_sum, metric_sum, batch_stats = carry
      index, micro_batch = inputs
      (_, (metrics, batch_stats)), grads = grad_fn(
          state.params, batch_stats, micro_batch,
          jax.random.fold_in(step_rng, index))
      return (jax.tree.map(jnp.add, grad_sum, grads),
              jax.tree.map(jnp.add, metric_sum, metrics), batch_stats), None

    micro_batches = split_microbatches(batch, accumulation_steps)
    zeros = lambda tree: jax.tree.map(
        lambda x: jnp.zeros(x.shape, x.dtype), tree)
    _, (metric_shapes, _) = jax.eval_shape(
        grad_fn, state.params, state.batch_stats,
        jax.tree.map(lambda x: x[0], micro_batches), step_rng)[0]
    (grads, metrics, batch_stats), _ = jax.lax.scan(
        accumulate,
        (zeros(state.params), zeros(metric_shapes), state.batch_stats),
        (jnp.arange(accumulation_steps), micro_batches))
    grads, metrics = jax.tree.map(lambda x: x / accumulation_steps,
                                  (grads, metrics))
  return _apply_gradients(state, grads, metrics, batch_stats, tx=tx,
                          schedule=schedule, axis_name=axis_name, group=group)


def _apply_gradients(state: TrainState, grads: Any, metrics: Metrics,
                     batch_stats: Any, *, tx: optax.GradientTransformation,
                     schedule: Callable, axis_name: Optional[str],
                     group: Optional[str] = None
                     ) -> Tuple[TrainState, Metrics]:
  """The optimizer update of both train steps, skipped when not finite;
  with `group`, of that parameter group only (by its optimizer `tx`)."""
  if group is not None:
    grads = grads[group]
  if axis_name is not None:
    # Every device holds an equal share of the global batch, so the mean of
    # per-device means is the global mean, as in the jit mode (for
    # `coupled_train_step`, see its docstring).
    grads, metrics = jax.lax.pmean((grads, metrics), axis_name)
  if group is None:
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
  else:
    updates, group_opt = tx.update(grads, state.opt_state[group],
                                   state.params[group])
    params = {**state.params,
              group: optax.apply_updates(state.params[group], updates)}
    opt_state = {**state.opt_state, group: group_opt}
  # A step with a non-finite loss or gradient leaves parameters, optimizer
  # state and batch statistics bitwise as they were (the step counter and
  # the data move on); the state's `nonfinite` counts tell the loop's guard.
  # The gradient norm is finite iff every gradient is (or it overflows past
  # 1e19, which counts as divergence too).
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(metrics['loss']) & jnp.isfinite(grad_norm)
  # A cond, not an elementwise select per leaf: it picks whole buffers; the
  # selects made the bench config's test step 3.4x slower to build on CPU
  # (96 s vs 28 s).
  params, opt_state, batch_stats = jax.lax.cond(
      finite, lambda: (params, opt_state, batch_stats),
      lambda: (state.params, state.opt_state, state.batch_stats))
  metrics = {**metrics, 'grad_norm': grad_norm,
             'learning_rate': schedule(state.step),
             'nonfinite': 1. - finite.astype(jnp.float32)}
  new_state = state.replace(step=state.step + 1, params=params,
                            batch_stats=batch_stats, opt_state=opt_state,
                            nonfinite=state.nonfinite.add(finite))
  return new_state, metrics


def _gather_rows(tree: Any, axis_name: Optional[str]) -> Any:
  """Under pmap, every leaf with a leading batch axis concatenated over the
  devices (rank-0 leaves, shared by all rows, stay as they are)."""
  if axis_name is None:
    return tree
  return jax.tree.map(
      lambda x: jax.lax.all_gather(x, axis_name, tiled=True) if x.ndim
      else x, tree)


def coupled_train_step(state: TrainState, batch: Batch, *, model: nn.Module,
                       tx: optax.GradientTransformation, loss_fn: Callable,
                       schedule: Callable, rng: jax.Array,
                       axis_name: Optional[str] = None,
                       accumulation_steps: int = 1
                       ) -> Tuple[TrainState, Metrics]:
  """`train_step` for a loss that couples the rows of the global batch
  (a task with `couples_examples`, e.g. contrastive retrieval).

  The model outputs (leaves [B, ...] per row, or rank-0 leaves shared by all
  rows, e.g. a temperature) of the whole global batch go into one call of
  `loss_fn(outputs, {'_mask': ...})` (the batch's `_mask` where it has one):
  under jit the global arrays do it; under pmap the outputs are gathered
  over `axis_name` (and the pmean of the per-device gradients is then the
  full-batch gradient, since all_gather's transpose sums every device's
  share).

  With `accumulation_steps` k > 1, the gradient is still exactly the full
  batch's (GradCache, Gao et al. 2021): the k micro-batches
  (`split_microbatches`) are embedded without gradients, the loss and its
  gradient with respect to all outputs are computed at once, then each
  micro-batch is embedded again and back-propagated with its slice of that
  gradient (a VJP in a `lax.scan`), and the parameter gradients summed.
  Activation memory is one micro-batch's, at the cost of a second forward
  pass. Each micro-batch uses the same dropout key in both passes.
  """
  step_rng = fold_step(rng, state, axis_name)
  loss_batch = {k: batch[k] for k in ('_mask',) if k in batch}

  def embed(params, batch_stats, micro_batch, index):
    outputs, updates = model.apply(
        model_variables(params, batch_stats), micro_batch, train=True,
        rngs={'dropout': jax.random.fold_in(step_rng, index)},
        mutable=['batch_stats'])
    return outputs, updates.get('batch_stats', {})

  def global_loss(outputs):
    return loss_fn(_gather_rows(outputs, axis_name),
                   _gather_rows(loss_batch, axis_name))

  loss_grad = jax.value_and_grad(global_loss, has_aux=True)
  if accumulation_steps == 1:
    outputs, backward, batch_stats = jax.vjp(
        lambda p: embed(p, state.batch_stats, batch, 0), state.params,
        has_aux=True)
    (_, metrics), d_outputs = loss_grad(outputs)
    grads, = backward(d_outputs)
  else:
    k = accumulation_steps
    micro_batches = split_microbatches(batch, k)
    indices = jnp.arange(k)

    def forward(_, inputs):
      index, micro_batch = inputs
      return None, embed(state.params, state.batch_stats, micro_batch,
                         index)[0]

    _, stacked = jax.lax.scan(forward, None, (indices, micro_batches))
    # [k, B / k, ...] -> [B, ...] in batch order (micro-batch i holds rows
    # i::k); a shared rank-0 output is the same in every micro-batch.
    outputs = jax.tree.map(
        lambda x: x.swapaxes(0, 1).reshape(-1, *x.shape[2:]) if x.ndim > 1
        else x[0], stacked)
    (_, metrics), d_outputs = loss_grad(outputs)
    # Back to [k, B / k, ...]; a shared output's gradient is split evenly,
    # as it is reached through every micro-batch.
    d_stacked = jax.tree.map(
        lambda d: split_microbatches(d, k) if d.ndim
        else jnp.broadcast_to(d / k, (k,)), d_outputs)

    def backward(carry, inputs):
      grad_sum, batch_stats = carry
      index, micro_batch, d_micro = inputs
      _, vjp, batch_stats = jax.vjp(
          lambda p: embed(p, batch_stats, micro_batch, index), state.params,
          has_aux=True)
      grads, = vjp(d_micro)
      return (jax.tree.map(jnp.add, grad_sum, grads), batch_stats), None

    zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), state.params)
    (grads, batch_stats), _ = jax.lax.scan(
        backward, (zeros, state.batch_stats),
        (indices, micro_batches, d_stacked))
  return _apply_gradients(state, grads, metrics, batch_stats, tx=tx,
                          schedule=schedule, axis_name=axis_name)


def eval_step(state: TrainState, batch: Batch, totals: Metrics, *,
              model: nn.Module, stats_fn: Callable,
              examples_fn: Optional[Callable] = None,
              axis_name: Optional[str] = None):
  """Adds this batch's additive eval statistics to `totals`.

  With `examples_fn` (a task's `eval_examples`), returns (totals, this
  batch's per-example values, with its `_mask` [B] added), for the runner
  to gather; without, returns totals.
  """
  outputs = model.apply(model_variables(state.params, state.batch_stats),
                        batch, train=False)
  stats = stats_fn(outputs, batch)
  if axis_name is not None:
    stats = jax.lax.psum(stats, axis_name)
  totals = jax.tree.map(jnp.add, totals, stats)
  if examples_fn is None:
    return totals
  examples = dict(examples_fn(outputs, batch))
  size = jax.tree.leaves(examples)[0].shape[0]
  examples['_mask'] = (batch['_mask'] if '_mask' in batch else
                       jnp.ones((size,), jnp.float32))
  return totals, examples


def zero_totals(model: nn.Module, stats_fn: Callable, state: TrainState,
                batch: Batch) -> Metrics:
  """Zeros shaped like `stats_fn`'s output: the start of an eval sum."""
  stats = jax.eval_shape(
      lambda s, b: stats_fn(
          model.apply(model_variables(s.params, s.batch_stats), b,
                      train=False), b),
      state, batch)
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), stats)
