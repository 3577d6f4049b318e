"""Helpers for tests on tiny configs."""
import jax


def set_fields(config, **fields):
  """Sets `config.a.b = value` for every `a__b=value` in `fields`; returns
  `config`."""
  for key, value in fields.items():
    *path, leaf = key.split('__')
    node = config
    for part in path:
      node = node[part]
    node[leaf] = value
  return config


def gradient_step_config(config, data_dir, mesh=None, **fields):
  """`config` on the 'tiny' data in `data_dir`, batches of 16 (eval 32),
  width 16, and plain SGD at rate 1, so that one step moves the parameters
  by minus the gradient (see `one_step`); `mesh` 'DxF' puts D x F devices
  on data x fsdp. `fields` as for `set_fields`."""
  if mesh:
    data_size, fsdp = map(int, mesh.split('x'))
    config.parallel.mesh = dict(data=data_size, fsdp=fsdp, tensor=1)
  config.dataset.builder_config, config.dataset.data_dir = 'tiny', data_dir
  config.input.global_batch_size, config.input.eval_batch_size = 16, 32
  config.model.dim = 16
  config.optimizer.update(name='sgd', learning_rate=1.0, warmup_steps=0,
                          schedule='constant', momentum=0.0, weight_decay=0.0,
                          grad_clip_norm=0.0)
  return set_fields(config, **fields)


def one_step(experiment, batch):
  """(loss, gradients as host arrays) of one step of a
  `gradient_step_config` experiment from its initial state."""
  runner = experiment.runner
  state = runner.init(experiment.init_rng)
  before = jax.device_get(runner.to_checkpoint(state).params)
  state, metrics = runner.train_step(state, batch)
  after = jax.device_get(runner.to_checkpoint(state).params)
  return (float(runner.fetch(metrics)['loss']),
          jax.tree.map(lambda b, a: b - a, before, after))
