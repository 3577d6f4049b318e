"""How the pure steps run on devices: `jax.jit` over a Mesh, or `jax.pmap`.

Both runners expose the same methods, so the train loop does not care which
one it drives. Checkpoints hold one (unreplicated) copy of the state in either
mode, so a run can switch modes or meshes on resume.
"""
import contextlib
import functools
import gc
import os
from typing import Any, Callable, Dict, Iterable, Mapping, Tuple

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mmjax import sharding as sharding_lib
from mmjax.train import adversarial
from mmjax.train import steps

HostBatch = Mapping[str, np.ndarray]
PMAP_AXIS = 'batch'


# Where `compilation_cache_dir='auto'` (the configs' default) keeps the
# executables when $JAX_COMPILATION_CACHE_DIR does not say.
DEFAULT_CACHE_DIR = '~/.cache/mmjax/xla'


def cache_directory(setting: str) -> str:
  """The directory of config field `compilation_cache_dir`: 'auto' ->
  $JAX_COMPILATION_CACHE_DIR if set, else DEFAULT_CACHE_DIR (user-expanded);
  '' -> '' (no cache); a path -> itself (user-expanded)."""
  if setting == 'auto':
    setting = os.environ.get('JAX_COMPILATION_CACHE_DIR') or DEFAULT_CACHE_DIR
  return os.path.expanduser(setting)


def enable_compilation_cache(setting: str) -> None:
  """Keeps compiled executables across runs in the directory of `setting`
  (see `cache_directory`; '' = off).

  Every executable is cached, however fast it compiled, so a rerun of the
  same config (a sweep's next variant with the same shapes, a resumed run)
  skips compilation. Call it before the process compiles anything: JAX
  fixes its cache at the first compilation.
  """
  directory = cache_directory(setting)
  if not directory:
    return
  jax.config.update('jax_compilation_cache_dir', directory)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


@contextlib.contextmanager
def _collector_paused():
  """Python's cyclic garbage collector paused for the block (left as it was
  if a caller paused it)."""
  if not gc.isenabled():
    yield
    return
  gc.disable()
  try:
    yield
  finally:
    gc.enable()


class _Compiled:
  """A jitted or pmapped step, called and lowered with the garbage collector
  paused. Its first call traces, lowers and compiles the step: a trace
  allocates objects by the hundred thousand and frees none of them before it
  ends, so the collection passes it triggers are wasted; on the bench model
  they took a fifth of the tracing (benchmarks/throughput.md). Later
  calls only dispatch, where pausing costs nothing.
  """

  def __init__(self, step: Callable):
    self._step = step

  def __call__(self, *args):
    with _collector_paused():
      return self._step(*args)

  def lower(self, *args) -> jax.stages.Lowered:
    with _collector_paused():
      return self._step.lower(*args)

  def __getattr__(self, name):  # The rest of the step's API, as it is.
    return getattr(self._step, name)


def _on_devices(batch) -> bool:
  return all(isinstance(x, jax.Array) for x in jax.tree.leaves(batch))


class _Runner:
  """What both modes share: the step functions bound to model, optimizer and task."""

  def __init__(self, *, model: nn.Module, tx: optax.GradientTransformation,
               task: Any, schedule: Callable, dropout_rng: jax.Array,
               example_batch: HostBatch, accumulation_steps: int = 1,
               axis_name=None):
    self._model = model
    self._task = task
    # What every batch must hold (any number of rows): the example batch the
    # model was built for.
    self._expected = {k: (v.shape[1:], v.dtype)
                      for k, v in example_batch.items()}
    self._init_fn = functools.partial(steps.init_state, model, tx,
                                      example_batch)
    # A loss over the whole global batch (contrastive) needs its own step,
    # and so do the generator and discriminator updates of a GAN.
    if getattr(task, 'adversarial', False):
      train_step = functools.partial(
          adversarial.adversarial_train_step,
          discriminator_steps=task.discriminator_steps,
          ema_decay=task.ema_decay)
    else:
      train_step = functools.partial(
          steps.coupled_train_step
          if getattr(task, 'couples_examples', False) else steps.train_step,
          accumulation_steps=accumulation_steps)
    self._examples_fn = getattr(task, 'eval_examples', None)
    self._train_fn = functools.partial(
        train_step, model=model, tx=tx, loss_fn=task.loss,
        schedule=schedule, rng=dropout_rng, axis_name=axis_name)
    self._eval_fn = functools.partial(
        steps.eval_step, model=model, stats_fn=task.eval_stats,
        examples_fn=self._examples_fn, axis_name=axis_name)

  def check_batch(self, host_batch: HostBatch) -> None:
    """Raises ValueError naming the key (modality or label) of `host_batch`
    whose shape or dtype is not what the model was built for; keys the model
    may go without (an absent modality, `_mask`, `<m>_present`) are allowed.
    """
    rows = {k: np.shape(x)[0] for k, x in host_batch.items() if np.ndim(x)}
    if len(set(rows.values())) > 1:
      raise ValueError(f'batch keys differ in their number of rows ({rows}); '
                       'every key needs one row per example.')
    for key, value in host_batch.items():
      if key not in self._expected:
        continue
      shape, dtype = self._expected[key]
      value = np.asarray(value)
      if value.shape[1:] != shape or value.dtype != dtype:
        raise ValueError(
            f'{key!r}: a batch holds {value.dtype}{list(value.shape)}; the '
            f'model expects {dtype}[batch, {", ".join(map(str, shape))}] (the '
            "dataset's examples after input.pp_train). Check the data source "
            'and the preprocessing ops of this key.')

  def evaluate(self, state: steps.TrainState,
               batches: Iterable[HostBatch]) -> Mapping[str, float]:
    """The task's metrics over every batch of `batches` (one pass)."""
    stats, examples = self.collect(state, batches)
    if self._examples_fn is None:
      return self._task.finalize(stats)
    return self._task.finalize(stats, examples)

  def collect(self, state: steps.TrainState, batches: Iterable[HostBatch]
              ) -> Tuple[Mapping[str, np.ndarray], Dict[str, np.ndarray]]:
    """(summed `eval_stats`, gathered `eval_examples`) over `batches`.

    The task's per-example values (None for a task without
    `eval_examples`) of the real rows of every batch of every process,
    concatenated in batch order, on every host.
    """
    totals, gathered = None, []
    for host_batch in batches:
      batch = self.put(host_batch)
      if totals is None:
        totals = self._zero_totals(state, batch)
      if self._examples_fn is None:
        totals = self._eval(state, batch, totals)
        continue
      totals, examples = self._eval(state, batch, totals)
      examples = self.gather_rows(examples)
      real = examples.pop('_mask') > 0
      gathered.append({k: v[real] for k, v in examples.items()})
    examples = ({k: np.concatenate([g[k] for g in gathered])
                 for k in gathered[0]} if gathered else None)
    return self.fetch(totals), examples

  def gather_rows(self, tree) -> Any:
    """Per-example device values -> NumPy [global rows, ...] on every host."""
    raise NotImplementedError


class JitRunner(_Runner):
  """Steps compiled with `jax.jit`, explicit in/out shardings, state donated."""

  def __init__(self, *, mesh: Mesh, rules, tower_rules=None, **kwargs):
    super().__init__(**kwargs)
    self.mesh = mesh
    self.batch_sharding = sharding_lib.batch_sharding(mesh, rules)
    replicated = NamedSharding(mesh, P())
    self._abstract = jax.eval_shape(self._init_fn, jax.random.key(0))
    self.state_sharding = sharding_lib.state_shardings(
        self._abstract, mesh, rules, tower_rules)
    self._init = _Compiled(jax.jit(
        lambda rng: nn.meta.unbox(self._init_fn(rng)),
        out_shardings=self.state_sharding))
    self._train = _Compiled(jax.jit(
        self._with_activation_sharding(self._train_fn, rules),
        in_shardings=(self.state_sharding, self.batch_sharding),
        out_shardings=(self.state_sharding, replicated), donate_argnums=0))
    self._eval = _Compiled(jax.jit(
        self._with_activation_sharding(self._eval_fn, rules),
        in_shardings=(self.state_sharding, self.batch_sharding, replicated),
        out_shardings=(replicated if self._examples_fn is None else
                       (replicated, self.batch_sharding)),
        donate_argnums=2))
    self._zero_totals = _Compiled(jax.jit(
        functools.partial(steps.zero_totals, self._model, self._task.eval_stats),
        out_shardings=replicated))

  def _with_activation_sharding(self, fn: Callable, rules) -> Callable:
    """`fn`, tracing under this mesh's activation constraints."""
    @functools.wraps(fn)
    def traced(*args):
      with sharding_lib.activation_sharding(self.mesh, rules):
        return fn(*args)
    return traced

  def init(self, rng: jax.Array) -> steps.TrainState:
    return self._init(rng)

  def put(self, host_batch: HostBatch):
    """This host's rows -> global arrays on the mesh (a batch already on the
    devices, e.g. from a prefetching iterator, is returned as it is)."""
    if _on_devices(host_batch):
      return host_batch
    self.check_batch(host_batch)
    return sharding_lib.host_to_global(host_batch, self.batch_sharding)

  def train_step(self, state, host_batch):
    return self._train(state, self.put(host_batch))

  def lower_train_step(self, state, batch) -> jax.stages.Lowered:
    """The train step lowered for `state` and a `put` batch, for ahead-of-
    time compilation and XLA's cost and memory analyses (benchmarks)."""
    return self._train.lower(state, batch)

  def fetch(self, tree) -> Any:
    return jax.device_get(tree)

  def gather_rows(self, tree) -> Any:
    return multihost_utils.process_allgather(tree, tiled=True)

  def restore_target(self) -> Any:
    """Abstract state with this run's shardings, to restore a checkpoint into."""
    unboxed = nn.meta.unbox(self._abstract)
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        unboxed, self.state_sharding)

  def to_checkpoint(self, state):
    return state

  def from_checkpoint(self, state):
    return state

  def describe(self, state) -> str:
    return sharding_lib.shard_summary(state, self.state_sharding, self.mesh)


class PmapRunner(_Runner):
  """Data-parallel steps with `jax.pmap`: state replicated on local devices."""

  def __init__(self, *, devices, **kwargs):
    super().__init__(axis_name=PMAP_AXIS, **kwargs)
    self.devices = devices
    # Leading axis of every pmapped array: one slice per local device.
    mesh = Mesh(np.array(self.devices), (PMAP_AXIS,))
    self._stacked = NamedSharding(mesh, P(PMAP_AXIS))
    self._copies = NamedSharding(mesh, P())  # A full copy on every device.
    n = len(self.devices)
    self._replicate = jax.jit(
        lambda tree: jax.tree.map(
            lambda x: jax.numpy.broadcast_to(x, (n, *x.shape)), tree),
        out_shardings=self._stacked)
    self._init = _Compiled(jax.jit(
        lambda rng: nn.meta.unbox(self._init_fn(rng))))
    pmap = functools.partial(jax.pmap, axis_name=PMAP_AXIS, devices=devices)
    self._train = _Compiled(pmap(self._train_fn, donate_argnums=0))
    self._eval = _Compiled(pmap(self._eval_fn, donate_argnums=2))
    self._zero_totals = _Compiled(pmap(functools.partial(
        steps.zero_totals, self._model, self._task.eval_stats)))

  def init(self, rng: jax.Array) -> steps.TrainState:
    return self.from_checkpoint(self._init(rng))

  def put(self, host_batch: HostBatch):
    """[B_local, ...] -> [local devices, B_local / devices, ...] on the devices
    (a batch already there is returned as it is)."""
    if _on_devices(host_batch):
      return host_batch
    self.check_batch(host_batch)
    n = len(self.devices)
    return jax.device_put(
        jax.tree.map(lambda x: x.reshape(n, -1, *x.shape[1:]), host_batch),
        self._stacked)

  def train_step(self, state, host_batch):
    return self._train(state, self.put(host_batch))

  def fetch(self, tree) -> Any:
    """Device values are replicated after the pmean/psum: read device 0's."""
    return jax.device_get(jax.tree.map(lambda x: x[0], tree))

  def gather_rows(self, tree) -> Any:
    """[local devices, B / devices, ...] -> [global rows, ...]."""
    local = jax.tree.map(lambda x: np.asarray(x).reshape(-1, *x.shape[2:]),
                         jax.device_get(tree))
    return multihost_utils.process_allgather(local, tiled=True)

  def restore_target(self) -> Any:
    """The state on this host's first device (`from_checkpoint` replicates
    it): explicit, so that a checkpoint saved with other devices (another
    pmap width, or a jit mesh) restores here."""
    device = jax.sharding.SingleDeviceSharding(self.devices[0])
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
        jax.eval_shape(lambda: nn.meta.unbox(self._init_fn(
            jax.random.key(0)))))

  def to_checkpoint(self, state):
    return jax.tree.map(lambda x: x[0], state)

  def from_checkpoint(self, state):
    # A restored state sits on other devices (committed): copy it to this
    # runner's devices before stacking the copies.
    return self._replicate(jax.device_put(state, self._copies))

  def describe(self, state) -> str:
    del state
    return f'pmap data parallel over {len(self.devices)} local devices'
