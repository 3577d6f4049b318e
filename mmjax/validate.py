"""Config validation: every ConfigError is raised here, before anything compiles
or any directory is written."""
import jax.numpy as jnp
import ml_collections

from mmjax import data
from mmjax import models as _models  # noqa: F401  (registers encoders, fusions)
from mmjax import tasks as _tasks  # noqa: F401  (registers tasks)
from mmjax.errors import ConfigError
from mmjax.models import layers
from mmjax.models.encoders import check_encoder_config
from mmjax.models.model import model_class
from mmjax.models.pretrained import check_pretrained_config
from mmjax.data.ops.audio import AudioFeatures
from mmjax.registry import MODALITIES, TASKS
from mmjax import sharding as sharding_lib
from mmjax.train.optimizer import check_optimizer_config

PARALLEL_MODES = ('jit', 'pmap')


def _check_positive(config, *fields):
  for field in fields:
    value = config
    for part in field.split('.'):
      value = value[part]
    if not isinstance(value, (int, float)) or value <= 0:
      raise ConfigError(field, f'must be a positive number, got {value!r}.')


def _check_audio_features(encoder_cfg, *pps) -> None:
  """The model takes precomputed features exactly when the pipeline makes them."""
  features = encoder_cfg.get('features', 'logmel')
  precomputed = features == 'precomputed'
  for pp in pps:
    computes = any(isinstance(op, AudioFeatures) for op in pp.ops)
    if computes != precomputed:
      raise ConfigError('model.encoders.audio.features', (
          f'is {features!r} but {pp.field} '
          f"{'computes' if computes else 'does not compute'} audio features;"
          " use 'precomputed' exactly when the pipeline has an "
          'audio_features op.'))


def _check_speed_options(config: ml_collections.ConfigDict,
                         data_parallel: int) -> None:
  """The precision, remat, scan, attention, accumulation and cache fields."""
  mc = config.model
  name = mc.get('param_dtype')
  try:
    param_dtype = jnp.dtype(name) if isinstance(name, str) else None
  except TypeError:
    param_dtype = None
  if param_dtype is None or not jnp.issubdtype(param_dtype, jnp.floating):
    raise ConfigError('model.param_dtype', f'{name!r} is not a float dtype '
                      "name; use 'float32' (or e.g. 'bfloat16').")
  for field, allowed in (('remat', tuple(layers.REMAT_POLICIES)),
                         ('attention', layers.ATTENTION_KERNELS),
                         ('conv_kernel_grad', layers.CONV_KERNEL_GRADS)):
    # conv_kernel_grad is absent from the configs of runs older than it.
    value = mc.get(field, 'xla' if field == 'conv_kernel_grad' else None)
    if value not in allowed:
      raise ConfigError(f'model.{field}', f'got {value!r}; valid '
                        f'values are: {", ".join(allowed)}.')
  if not isinstance(mc.get('scan_layers'), bool):
    raise ConfigError('model.scan_layers', 'must be True or False, got '
                      f'{mc.get("scan_layers")!r}.')
  steps = config.optimizer.get('accumulation_steps', 1)
  if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
    raise ConfigError('optimizer.accumulation_steps',
                      f'must be a positive integer, got {steps!r}.')
  if config.input.global_batch_size % (steps * data_parallel):
    raise ConfigError(
        'optimizer.accumulation_steps', f'{steps} micro-batches do not split '
        f'the global batch of {config.input.global_batch_size} evenly over '
        f'the data-parallel size {data_parallel}; use a global batch size '
        f'that is a multiple of {steps * data_parallel}.')
  if not isinstance(config.get('compilation_cache_dir'), str):
    raise ConfigError('compilation_cache_dir', "must be 'auto', a directory "
                      f"path, or '' for no cache, got "
                      f'{config.get("compilation_cache_dir")!r}.')


def group_optimizer_config(config: ml_collections.ConfigDict, group: str
                           ) -> ml_collections.ConfigDict:
  """`config.optimizer` with the overrides `config.optimizer_groups[group]`."""
  merged = ml_collections.ConfigDict(config.optimizer.to_dict())
  merged.update(config.optimizer_groups.get(group, {}))
  return merged


def _check_optimizer_groups(config: ml_collections.ConfigDict, task) -> None:
  """The optimizer of each of the task's parameter groups, and that
  `optimizer_groups` names only those groups."""
  groups = tuple(getattr(task, 'optimizer_groups', ()))
  for group in config.get('optimizer_groups', {}):
    if group not in groups:
      raise ConfigError(f'optimizer_groups.{group}', (
          f'task {config.task.name!r} has no parameter group {group!r}; its '
          f'groups are: {", ".join(groups) or "none (one optimizer)"}.'))
  if groups and getattr(task, 'couples_examples', False):
    raise ConfigError('task.name', f'task {config.task.name!r} both couples '
                      'the rows of a batch and updates parameter groups in '
                      'turn; the train step supports one or the other.')
  if (getattr(task, 'adversarial', False) and
      config.optimizer.get('accumulation_steps', 1) != 1):
    raise ConfigError('optimizer.accumulation_steps', (
        f'task {config.task.name!r} makes its generator and discriminator '
        'updates within one step, without gradient accumulation; use 1 (and a '
        'smaller global batch if memory is short).'))
  for group in groups:
    check_optimizer_config(group_optimizer_config(config, group),
                           config.num_train_steps)


def validate_config(config: ml_collections.ConfigDict, *, num_devices: int,
                    process_count: int = 1):
  """Checks `config` against the registries, the dataset and the devices.

  Returns:
    (dataset spec, task) built from the config, both cheap to construct (no
    data is read or generated).
  Raises:
    ConfigError naming the first offending field.
  """
  _check_positive(config, 'num_train_steps', 'log_every_steps',
                  'eval_every_steps', 'checkpoint_every_steps',
                  'max_consecutive_nonfinite_steps',
                  'input.global_batch_size', 'input.eval_batch_size',
                  'model.dim')
  if config.input.prefetch < 0:
    raise ConfigError('input.prefetch', f'{config.input.prefetch} is negative; '
                      'use 0 (no prefetch) or the number of batches to '
                      'prepare ahead.')
  modalities = tuple(config.model.modalities)
  if not modalities:
    raise ConfigError('model.modalities', 'needs at least one modality.')
  for m in modalities:
    if m not in MODALITIES:
      raise ConfigError('model.modalities', f'unknown modality {m!r}; valid '
                        f'modalities are {", ".join(MODALITIES)}.')
  spec = data.DatasetSpec(config.dataset, modalities)
  # The modalities the model runs an encoder on (a GAN generates its images).
  for m in getattr(model_class(config), 'encoded_modalities', modalities):
    if m not in config.model.encoders:
      raise ConfigError(f'model.encoders.{m}', f'no encoder configured for {m!r}.')
    check_encoder_config(m, config.model.encoders[m])
  pp_train, pp_eval = data.preprocessing(config.input, spec)
  if 'audio' in modalities:
    _check_audio_features(config.model.encoders.audio, pp_train, pp_eval)
  model_class(config).check_config(config)
  check_pretrained_config(config)
  try:
    jnp.dtype(config.model.dtype)
  except TypeError:
    raise ConfigError('model.dtype', f'{config.model.dtype!r} is not a dtype '
                      "name; use e.g. 'float32' or 'bfloat16'.") from None

  task = TASKS.get(config.task.name, field='task.name')(config.task, spec,
                                                       pp_train)
  optimizer = check_optimizer_config(config.optimizer, config.num_train_steps)
  _check_optimizer_groups(config, task)

  if config.parallel.mode not in PARALLEL_MODES:
    raise ConfigError('parallel.mode', f'unknown mode {config.parallel.mode!r};'
                      f' valid modes are {", ".join(PARALLEL_MODES)}.')
  for m in config.parallel.tower_rules:
    if m not in MODALITIES:
      raise ConfigError(f'parallel.tower_rules.{m}', (
          f'{m!r} is not a modality; towers are {", ".join(MODALITIES)}.'))
  shape = dict(zip(sharding_lib.MESH_AXES, sharding_lib.mesh_shape(
      config.parallel.mesh, num_devices)))
  if optimizer.flatten and (shape['fsdp'] > 1 or shape['tensor'] > 1):
    raise ConfigError('optimizer.flatten', (
        f'needs replicated parameters, but mesh {shape} shards them over '
        'fsdp / tensor, and one flat vector of moments would be replicated '
        'on every device; set it to False or use a data-only mesh.'))
  parallel = (num_devices if config.parallel.mode == 'pmap' else
              sharding_lib.data_parallel_size(shape, config.parallel.rules))
  for field in ('global_batch_size', 'eval_batch_size'):
    size = config.input[field]
    if size % parallel or size % process_count:
      raise ConfigError(
          f'input.{field}', f'{size} is not divisible by the data-parallel '
          f'size {parallel} (mode {config.parallel.mode!r}, mesh {shape}) and '
          f'the process count {process_count}; use a multiple of '
          f'{max(parallel, process_count)}.')
  _check_speed_options(config, parallel)
  return spec, task
