"""The train step of an adversarial task (`task.adversarial`, e.g. 'gan').

One compiled step makes `discriminator_steps` updates of the parameter group
'discriminator', then one of 'generator', each by its own optimizer (`tx`
and `schedule` map the group to it, as for `task.optimizer_groups`), then
moves the exponential moving average of the generator:

  generator_ema <- ema_decay * generator_ema + (1 - ema_decay) * generator

`generator_ema` is a top-level parameter subtree no optimizer owns; the model
generates with it at evaluation. The model is applied with `group=` the group
being updated, so it may skip what that group's loss does not read. Each update differentiates its group's loss
`loss_fn(outputs, batch, group=...)` with respect to that group's parameters
only, so a discriminator update leaves the generator bitwise unchanged and
vice versa. Every update applies the model once on the whole batch with its
own dropout and 'noise' keys (fresh generator samples for every update), and
threads the batch statistics (e.g. the discriminator's spectral-norm power
iteration). If any update's loss or gradient is not finite, the step changes
nothing but the step counter, as `mmjax.train.steps.train_step` does.
"""
from typing import Any, Callable, Mapping, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from mmjax.train.steps import Batch, Metrics, TrainState, fold_step, model_variables

GROUPS = ('discriminator', 'generator')
EMA = 'generator_ema'


def ema_update(ema: Any, params: Any, decay: float) -> Any:
  """decay * ema + (1 - decay) * params, leaf by leaf."""
  return jax.tree.map(lambda e, p: decay * e + (1. - decay) * p, ema, params)


def _update(params, batch_stats, opt_state, batch, group: str, rng, *, model,
            tx, loss_fn, axis_name):
  """One optimizer update of `group`: (params, batch_stats, opt_state of the
  group, its metrics, finite)."""
  def group_loss(group_params):
    outputs, updates = model.apply(
        model_variables({**params, group: group_params}, batch_stats), batch,
        train=True, mutable=['batch_stats'], group=group,
        rngs={'dropout': rng, 'noise': jax.random.fold_in(rng, 1)})
    loss, metrics = loss_fn(outputs, batch, group=group)
    return loss, (metrics, updates.get('batch_stats', {}))

  (loss, (metrics, batch_stats)), grads = jax.value_and_grad(
      group_loss, has_aux=True)(params[group])
  if axis_name is not None:  # Equal shares of the batch: the global mean.
    grads, metrics, loss = jax.lax.pmean((grads, metrics, loss), axis_name)
  updates, group_opt = tx[group].update(grads, opt_state[group],
                                        params[group])
  params = {**params, group: optax.apply_updates(params[group], updates)}
  grad_norm = optax.tree.norm(grads)
  metrics = {**metrics, f'{group}_grad_norm': grad_norm}
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  return (params, batch_stats, {**opt_state, group: group_opt}, loss,
          metrics, finite)


def adversarial_train_step(state: TrainState, batch: Batch, *,
                           model: nn.Module,
                           tx: Mapping[str, optax.GradientTransformation],
                           loss_fn: Callable,
                           schedule: Mapping[str, Callable], rng: jax.Array,
                           axis_name: Optional[str] = None,
                           discriminator_steps: int = 1,
                           ema_decay: float = 0.999
                           ) -> Tuple[TrainState, Metrics]:
  """k discriminator updates, one generator update and the EMA (see the
  module docstring); returns the new state and on-device metrics: the
  task's metrics of the generator update, each group's loss
  ('<group>_loss') as its own (last) update minimised it and their sum as
  'loss', each group's gradient norm and learning rate, and 'nonfinite'."""
  key = fold_step(rng, state, axis_name)
  params, batch_stats, opt_state = (state.params, state.batch_stats,
                                    state.opt_state)
  finite, losses, metrics = jnp.array(True), {}, {}
  groups = ['discriminator'] * discriminator_steps + ['generator']
  for index, group in enumerate(groups):
    params, batch_stats, opt_state, losses[group], group_metrics, ok = (
        _update(params, batch_stats, opt_state, batch, group,
                jax.random.fold_in(key, index), model=model, tx=tx,
                loss_fn=loss_fn, axis_name=axis_name))
    finite &= ok
    metrics.update(group_metrics)
  params = {**params, EMA: ema_update(params[EMA], params['generator'],
                                      ema_decay)}
  params, opt_state, batch_stats = jax.lax.cond(
      finite, lambda: (params, opt_state, batch_stats),
      lambda: (state.params, state.opt_state, state.batch_stats))
  metrics = {**metrics, **{f'{g}_loss': losses[g] for g in GROUPS},
             'loss': sum(losses.values()),
             **{f'{g}_learning_rate': schedule[g](state.step) for g in GROUPS},
             'nonfinite': 1. - finite.astype(jnp.float32)}
  return state.replace(step=state.step + 1, params=params,
                       batch_stats=batch_stats, opt_state=opt_state,
                       nonfinite=state.nonfinite.add(finite)), metrics
