"""Optax optimizer and learning-rate schedule from `config.optimizer`.

Fields (defaults in `default_optimizer_config`):
  name                      'adamw' | 'adam' | 'lamb' | 'sgd'
  learning_rate             peak learning rate, > 0.
  warmup_steps              linear warmup from 0 to the peak, in
                            [0, num_train_steps].
  schedule                  decay after warmup, reaching
                            end_learning_rate_factor * learning_rate at
                            num_train_steps: 'cosine' | 'linear' | 'constant'
                            (stays at the peak; the factor is unused).
  end_learning_rate_factor  in [0, 1].
  weight_decay              >= 0, applied to the parameters `decay_mask`
                            selects. Decoupled from the gradient for adamw
                            and lamb (scaled by the learning rate, as in
                            optax); added to the gradient (L2) for sgd and
                            adam.
  b1, b2, eps               adam, adamw and lamb.
  momentum, nesterov        sgd; momentum 0 is plain SGD.
  grad_clip_norm            clip gradients to this global norm; 0 or None
                            disables clipping.
  accumulation_steps        micro-batches per step, whose gradients the
                            train step (`mmjax.train.steps`) averages
                            before one update; checked in `mmjax.validate`.
Fields the chosen optimizer does not use are ignored, so that one config
switches optimizer with a single `--config.optimizer.name=...` override.
"""
import numbers
from typing import Any, Callable, Tuple

import flax.linen as nn
import jax
import ml_collections
import optax

from mmjax.errors import ConfigError, check_fields

# Parameters with these names are never decayed: biases (including the
# [heads, kv] biases of attention projections) and normalisation scales.
_NO_DECAY_NAMES = ('bias', 'scale')


def default_optimizer_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      name='adamw', learning_rate=1e-3, warmup_steps=0, schedule='cosine',
      end_learning_rate_factor=0.0, weight_decay=0.0, b1=0.9, b2=0.999,
      eps=1e-8, momentum=0.9, nesterov=False, grad_clip_norm=None,
      accumulation_steps=1))


def decay_mask(params: Any) -> Any:
  """True for the parameters that weight decay applies to.

  Decayed: parameters of rank >= 2 (dense, conv and attention kernels,
  embedding and learned position tables) not named 'bias' or 'scale'.
  Spared: biases, normalisation (LayerNorm, BatchNorm) scales and biases, and
  every other rank-0/1 parameter.

  Args:
    params: a parameter pytree, plain or boxed (`nn.Partitioned` from
      `nn.with_logical_partitioning`).
  Returns:
    bools with the structure of `params`, one per parameter; a boxed
    parameter gets one bool in place of its box (a prefix of `params`, which
    is what `optax.masked` takes), so boxed and unboxed params agree.
  """
  def decay(path, leaf) -> bool:
    value = leaf.unbox() if isinstance(leaf, nn.meta.AxisMetadata) else leaf
    name = getattr(path[-1], 'key', None) if path else None
    return value.ndim >= 2 and name not in _NO_DECAY_NAMES

  return jax.tree_util.tree_map_with_path(
      decay, params, is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata))


def _add_l2(weight_decay: float, tx: optax.GradientTransformation):
  """`tx` on the gradient plus weight_decay * params (masked)."""
  if not weight_decay:
    return tx
  return optax.chain(optax.add_decayed_weights(weight_decay, decay_mask), tx)


_OPTIMIZERS = {
    'adamw': lambda c, lr: optax.adamw(
        lr, c.b1, c.b2, c.eps, weight_decay=c.weight_decay, mask=decay_mask),
    'lamb': lambda c, lr: optax.lamb(
        lr, c.b1, c.b2, c.eps, weight_decay=c.weight_decay, mask=decay_mask),
    'adam': lambda c, lr: _add_l2(c.weight_decay,
                                  optax.adam(lr, c.b1, c.b2, c.eps)),
    'sgd': lambda c, lr: _add_l2(c.weight_decay, optax.sgd(
        lr, momentum=c.momentum or None, nesterov=c.nesterov)),
}

# Decay from `peak` to `factor * peak` over `steps`.
_DECAYS = {
    'cosine': lambda peak, factor, steps: optax.cosine_decay_schedule(
        peak, max(steps, 1), alpha=factor),
    'linear': lambda peak, factor, steps: optax.linear_schedule(
        peak, factor * peak, steps),
    'constant': lambda peak, factor, steps: optax.constant_schedule(peak),
}

# Numeric fields: (test of the value, what is allowed).
_RANGES = {
    'learning_rate': (lambda v: v > 0, 'a number > 0'),
    'end_learning_rate_factor': (lambda v: 0 <= v <= 1, 'a number in [0, 1]'),
    'weight_decay': (lambda v: v >= 0, 'a number >= 0'),
    'b1': (lambda v: 0 <= v < 1, 'a number in [0, 1)'),
    'b2': (lambda v: 0 <= v < 1, 'a number in [0, 1)'),
    'eps': (lambda v: v > 0, 'a number > 0'),
    'momentum': (lambda v: 0 <= v < 1, 'a number in [0, 1)'),
}


def _is_number(value: Any) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_optimizer_config(cfg: ml_collections.ConfigDict,
                           num_train_steps: int) -> ml_collections.ConfigDict:
  """Checks `cfg` without building anything.

  Returns:
    `cfg` completed with the defaults of the fields it leaves out.
  Raises:
    ConfigError naming the first offending `optimizer.<field>`.
  """
  defaults = default_optimizer_config()
  check_fields(cfg, defaults, 'optimizer', 'the optimizer config')
  # A new ConfigDict, since assigning into `defaults` would raise TypeError
  # (not ConfigError) for a value of the wrong type.
  c = ml_collections.ConfigDict({**defaults.to_dict(), **dict(cfg)})
  for field, names in (('name', _OPTIMIZERS), ('schedule', _DECAYS)):
    if c[field] not in names:
      raise ConfigError(f'optimizer.{field}', f'unknown {field} {c[field]!r};'
                        f' valid names are {", ".join(sorted(names))}.')
  for field, (ok, allowed) in _RANGES.items():
    if not _is_number(c[field]) or not ok(c[field]):
      raise ConfigError(f'optimizer.{field}',
                        f'must be {allowed}, got {c[field]!r}.')
  warmup = c.warmup_steps
  if (not isinstance(warmup, numbers.Integral) or isinstance(warmup, bool)
      or not 0 <= warmup <= num_train_steps):
    raise ConfigError(
        'optimizer.warmup_steps', f'must be an int in [0, num_train_steps='
        f'{num_train_steps}], got {warmup!r}.')
  if not isinstance(c.nesterov, bool):
    raise ConfigError('optimizer.nesterov',
                      f'must be True or False, got {c.nesterov!r}.')
  clip = c.grad_clip_norm
  if clip is not None and (not _is_number(clip) or clip < 0):
    raise ConfigError('optimizer.grad_clip_norm', 'must be a number >= 0, or '
                      f'0 / None for no clipping, got {clip!r}.')
  return c


def make_schedule(cfg: ml_collections.ConfigDict,
                  num_train_steps: int) -> Callable[[Any], Any]:
  """The learning rate as a function of the step (0-based, jit-able)."""
  c = check_optimizer_config(cfg, num_train_steps)
  decay = _DECAYS[c.schedule](c.learning_rate, c.end_learning_rate_factor,
                              num_train_steps - c.warmup_steps)
  if not c.warmup_steps:
    return decay
  warmup = optax.linear_schedule(0.0, c.learning_rate, c.warmup_steps)
  return optax.join_schedules([warmup, decay], [c.warmup_steps])


def make_optimizer(
    cfg: ml_collections.ConfigDict, num_train_steps: int
) -> Tuple[optax.GradientTransformation, Callable[[Any], Any]]:
  """Returns (optax transformation, learning-rate schedule) for `cfg`."""
  c = check_optimizer_config(cfg, num_train_steps)
  schedule = make_schedule(c, num_train_steps)
  tx = _OPTIMIZERS[c.name](c, schedule)
  if c.grad_clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(c.grad_clip_norm), tx)
  return tx, schedule
