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
  flatten                   adam and adamw: keep the moments as one flat
                            vector and update it in one piece instead of
                            one update per parameter (`optax.flatten`);
                            the same arithmetic per element. For meshes
                            that replicate parameters (checked in
                            `mmjax.validate`): the flat moments carry no
                            logical axes, so they are replicated.
  accumulation_steps        micro-batches per step, whose gradients the
                            train step (`mmjax.train.steps`) averages
                            before one update; checked in `mmjax.validate`.
  frozen                    regular expressions of parameter paths
                            ('/'-joined scopes, e.g. 'text_encoder/' for a
                            tower, 'text_encoder/(word|layer[0-3])/' for
                            parts) matched from the path's start: those
                            parameters are never updated (no weight decay,
                            no optimizer state).
  param_learning_rates      ((pattern, peak learning rate), ...): the
                            parameters a pattern matches (as for `frozen`)
                            train with that peak instead of learning_rate,
                            on the same warmup and decay; e.g. a pretrained
                            tower's smaller rate: (('text_encoder/', 5e-5),).
Each pattern must match some parameter (checked when the optimizer state is
initialised). With `frozen` or `param_learning_rates` set, the update is an
`optax.multi_transform` with one label per parameter path; gradient clipping
then sees only the trained parameters' gradients.
Fields the chosen optimizer does not use are ignored, so that one config
switches optimizer with a single `--config.optimizer.name=...` override.
"""
import numbers
import re
from typing import Any, Callable, Dict, List, Tuple

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
      flatten=False, accumulation_steps=1, frozen=(),
      param_learning_rates=()))


def _is_box(x: Any) -> bool:
  return isinstance(x, nn.meta.AxisMetadata)


def _map_paths(fn: Callable[[str, Any], Any], params: Any) -> Any:
  """fn('/'-joined path, unboxed leaf) for every parameter; a boxed
  parameter gets one value in place of its box (a prefix of `params`, which
  optax's masks and labels take), so boxed and unboxed params agree."""
  def visit(path, leaf):
    value = leaf.unbox() if _is_box(leaf) else leaf
    return fn('/'.join(str(getattr(k, 'key', k)) for k in path), value)
  return jax.tree_util.tree_map_with_path(visit, params, is_leaf=_is_box)


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
  def decay(path: str, value) -> bool:
    return value.ndim >= 2 and path.rsplit('/', 1)[-1] not in _NO_DECAY_NAMES

  return _map_paths(decay, params)


def _add_l2(weight_decay: float, tx: optax.GradientTransformation):
  """`tx` on the gradient plus weight_decay * params (masked)."""
  if not weight_decay:
    return tx
  return optax.chain(optax.add_decayed_weights(weight_decay, decay_mask), tx)


def _adamw(c: ml_collections.ConfigDict, lr) -> optax.GradientTransformation:
  """optax.adamw, with `c.flatten` its moments over one flat vector (the
  decay and the step size stay per parameter: the mask needs the tree)."""
  if not c.flatten:
    return optax.adamw(lr, c.b1, c.b2, c.eps, weight_decay=c.weight_decay,
                       mask=decay_mask)
  # optax.adamw's own chain, with the moments flattened.
  return optax.chain(
      optax.flatten(optax.scale_by_adam(c.b1, c.b2, c.eps)),
      optax.add_decayed_weights(c.weight_decay, decay_mask),
      optax.scale_by_learning_rate(lr))


def _adam(c: ml_collections.ConfigDict, lr) -> optax.GradientTransformation:
  tx = optax.adam(lr, c.b1, c.b2, c.eps)
  return _add_l2(c.weight_decay, optax.flatten(tx) if c.flatten else tx)


_OPTIMIZERS = {
    'adamw': _adamw,
    'lamb': lambda c, lr: optax.lamb(
        lr, c.b1, c.b2, c.eps, weight_decay=c.weight_decay, mask=decay_mask),
    'adam': _adam,
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
  for field in ('nesterov', 'flatten'):
    if not isinstance(c[field], bool):
      raise ConfigError(f'optimizer.{field}',
                        f'must be True or False, got {c[field]!r}.')
  if c.flatten and c.name not in ('adam', 'adamw'):
    raise ConfigError('optimizer.flatten', f'applies to adam and adamw, not '
                      f'{c.name!r}; set it to False.')
  clip = c.grad_clip_norm
  if clip is not None and (not _is_number(clip) or clip < 0):
    raise ConfigError('optimizer.grad_clip_norm', 'must be a number >= 0, or '
                      f'0 / None for no clipping, got {clip!r}.')
  _check_groups(c)
  return c


def _check_pattern(pattern: Any, field: str) -> None:
  if not isinstance(pattern, str) or not pattern:
    raise ConfigError(field, f'must be a non-empty regular expression of '
                      f"parameter paths (e.g. 'text_encoder/'), got "
                      f'{pattern!r}.')
  try:
    re.compile(pattern)
  except re.error as e:
    raise ConfigError(field, f'{pattern!r} is not a regular expression: '
                      f'{e}.') from None


def _check_groups(c: ml_collections.ConfigDict) -> None:
  """Checks `frozen` and `param_learning_rates` (see the module doc)."""
  if isinstance(c.frozen, str) or not isinstance(c.frozen, (tuple, list)):
    raise ConfigError('optimizer.frozen', 'must be a tuple of regular '
                      "expressions, e.g. ('text_encoder/',), got "
                      f'{c.frozen!r}.')
  for i, pattern in enumerate(c.frozen):
    _check_pattern(pattern, f'optimizer.frozen[{i}]')
  groups = c.param_learning_rates
  if not isinstance(groups, (tuple, list)):
    raise ConfigError('optimizer.param_learning_rates', 'must be a tuple of '
                      "(pattern, learning rate) pairs, e.g. (('text_encoder/',"
                      f' 5e-5),), got {groups!r}.')
  for i, group in enumerate(groups):
    field = f'optimizer.param_learning_rates[{i}]'
    if (not isinstance(group, (tuple, list)) or len(group) != 2 or
        not _is_number(group[1]) or group[1] <= 0):
      raise ConfigError(field, 'must be a (pattern, learning rate > 0) pair,'
                        f' got {group!r}.')
    _check_pattern(group[0], field)


def _labels(c: ml_collections.ConfigDict) -> Callable[[Any], Any]:
  """params -> a label per parameter: 'frozen', 'group<i>' (the first
  pattern of `param_learning_rates` that matches) or 'default'.

  Raises ConfigError for a pattern that matches no parameter, or a
  parameter that two learning-rate patterns match.
  """
  patterns = ([('frozen', p, f'optimizer.frozen[{i}]')
               for i, p in enumerate(c.frozen)] +
              [(f'group{i}', g[0], f'optimizer.param_learning_rates[{i}]')
               for i, g in enumerate(c.param_learning_rates)])

  def labels(params: Any) -> Any:
    used: Dict[str, List[str]] = {field: [] for _, _, field in patterns}

    def label(path: str, value) -> str:
      del value
      matched = [(name, field) for name, p, field in patterns
                 if re.match(p, path)]
      for _, field in matched:
        used[field].append(path)
      groups = {field for name, field in matched if name != 'frozen'}
      if len(groups) > 1:
        raise ConfigError(sorted(groups)[1], f'parameter {path} is matched '
                          f'by {" and ".join(sorted(groups))}; give each '
                          'parameter at most one learning rate.')
      # Frozen wins over a learning rate (its patterns come first).
      return matched[0][0] if matched else 'default'
    tree = _map_paths(label, params)
    if any(not paths for paths in used.values()):
      field = next(f for f, paths in used.items() if not paths)
      scopes = sorted({p.split('/', 1)[0] for p in jax.tree.leaves(
          _map_paths(lambda path, v: path, params))})
      raise ConfigError(field, 'matches no parameter; parameter paths are '
                        "'/'-joined scopes starting with one of: "
                        f'{", ".join(scopes)}.')
    return tree
  return labels


def _schedule(c: ml_collections.ConfigDict,
              num_train_steps: int) -> Callable[[Any], Any]:
  """The learning rate as a function of the step (0-based, jit-able) of a
  checked config `c` (its `learning_rate` peak)."""
  decay = _DECAYS[c.schedule](c.learning_rate, c.end_learning_rate_factor,
                              num_train_steps - c.warmup_steps)
  if not c.warmup_steps:
    return decay
  warmup = optax.linear_schedule(0.0, c.learning_rate, c.warmup_steps)
  return optax.join_schedules([warmup, decay], [c.warmup_steps])


def make_optimizer(
    cfg: ml_collections.ConfigDict, num_train_steps: int
) -> Tuple[optax.GradientTransformation, Callable[[Any], Any]]:
  """Returns (optax transformation, learning-rate schedule) for `cfg`; the
  schedule is that of the parameters `param_learning_rates` does not name."""
  c = check_optimizer_config(cfg, num_train_steps)
  schedule = _schedule(c, num_train_steps)
  tx = _OPTIMIZERS[c.name](c, schedule)
  clip = ([optax.clip_by_global_norm(c.grad_clip_norm)]
          if c.grad_clip_norm else [])
  if not (c.frozen or c.param_learning_rates):
    return optax.chain(*clip, tx) if clip else tx, schedule
  transforms = {'default': tx, 'frozen': optax.set_to_zero()}
  for i, (_, lr) in enumerate(c.param_learning_rates):
    group = ml_collections.ConfigDict({**c.to_dict(), 'learning_rate': lr})
    transforms[f'group{i}'] = _OPTIMIZERS[c.name](
        group, _schedule(group, num_train_steps))
  labels = _labels(c)
  # Frozen gradients are zeroed before clipping, so that the global norm is
  # the trained parameters' own.
  frozen = lambda params: jax.tree.map(lambda l: l == 'frozen',
                                       labels(params))
  tx = optax.multi_transform(transforms, labels)
  return optax.chain(optax.masked(optax.set_to_zero(), frozen), *clip,
                     tx), schedule
