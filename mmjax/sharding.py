"""Device meshes and logical-axis sharding of parameters, activations and batches.

Parameters carry logical axis names (`nn.with_logical_partitioning` in
`mmjax.models.layers`); the rules in ``config.parallel.rules`` map them to the
mesh axes ``data``, ``fsdp`` and ``tensor``, for the train state
(`state_shardings`), the batch (`batch_sharding`) and the activations pinned
at block boundaries (`constrain`). Nothing here depends on the device count
beyond the mesh shape.

`constrain` resolves the rules under the mesh that `activation_sharding` makes
current while the train and eval steps are traced, and does nothing outside
it (pmap, initialisation, plain `apply`). It is not Flax's
`nn.with_logical_constraint` because that would split a dimension its mesh
axes do not divide (3 colour channels, 2 heads on 4 tensor devices); here,
as for parameters, such a dimension is replicated (`fit_to_shape`), so one
set of rules is valid for every model and mesh.
"""
import contextlib
import math
import threading
from typing import Any, Iterator, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mmjax.errors import ConfigError

Rules = Sequence[Tuple[str, Any]]
_CURRENT = threading.local()


def fit_to_shape(spec: P, shape: Sequence[int], mesh: Mesh) -> P:
  """Replicates each dimension whose size its mesh axes do not divide.

  Small or odd-sized arrays (a 3-channel conv kernel, 8 classes, 2 heads on
  4 tensor devices) cannot be split evenly over the mesh; replicating just
  that dimension keeps one set of rules valid for every model and mesh.
  """
  fitted = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    names = (axes,) if isinstance(axes, str) else tuple(axes or ())
    size = math.prod(mesh.shape[a] for a in names)
    fitted.append(axes if size > 1 and dim % size == 0 else None)
  return P(*fitted)


@contextlib.contextmanager
def activation_sharding(mesh: Mesh, rules: Rules) -> Iterator[None]:
  """Makes `constrain` pin activations over `mesh` by `rules` in this block."""
  previous = getattr(_CURRENT, 'value', None)
  _CURRENT.value = (mesh, rules)
  try:
    yield
  finally:
    _CURRENT.value = previous


def constrain(x: jax.Array, axes: Tuple[Optional[str], ...]) -> jax.Array:
  """`x` constrained to the logical `axes` (one name or None per dimension)
  under the current `activation_sharding`; `x` itself outside one."""
  current = getattr(_CURRENT, 'value', None)
  if current is None:
    return x
  mesh, rules = current
  spec = fit_to_shape(nn.logical_to_mesh_axes(axes, rules), x.shape, mesh)
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


MESH_AXES = ('data', 'fsdp', 'tensor')


def mesh_shape(mesh_cfg: Mapping[str, int], num_devices: int) -> Tuple[int, ...]:
  """Resolves `{'data': -1, 'fsdp': 2, 'tensor': 1}` to sizes over MESH_AXES."""
  unknown = set(mesh_cfg) - set(MESH_AXES)
  if unknown:
    raise ConfigError('parallel.mesh', f'unknown mesh axes {sorted(unknown)}; '
                      f'valid axes are {", ".join(MESH_AXES)}.')
  sizes = [int(mesh_cfg.get(a, 1)) for a in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ConfigError('parallel.mesh', 'at most one axis may be -1.')
  if any(s == 0 or s < -1 for s in sizes):
    raise ConfigError('parallel.mesh', f'axis sizes must be positive or -1, '
                      f'got {dict(zip(MESH_AXES, sizes))}.')
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise ConfigError(
          'parallel.mesh', f'{num_devices} devices cannot be split into '
          f'{dict(zip(MESH_AXES, sizes))}: the fixed axes ({known}) must '
          f'divide the device count.')
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise ConfigError(
        'parallel.mesh', f'mesh {dict(zip(MESH_AXES, sizes))} has '
        f'{math.prod(sizes)} devices but {num_devices} are available; make '
        f'the product equal the device count or set one axis to -1.')
  return tuple(sizes)


def make_mesh(mesh_cfg: Mapping[str, int], devices=None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  shape = mesh_shape(mesh_cfg, len(devices))
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def _tower(path) -> Optional[str]:
  """The modality whose encoder or projection holds the parameter at `path`
  (modules '<modality>_encoder' / '<modality>_proj' of `mmjax.models.model`)."""
  for key in path:
    name = getattr(key, 'key', None)
    for suffix in ('_encoder', '_proj'):
      if isinstance(name, str) and name.endswith(suffix):
        return name[:-len(suffix)]
  return None


def state_shardings(abstract_state: Any, mesh: Mesh, rules: Rules,
                    tower_rules: Optional[Mapping[str, Rules]] = None) -> Any:
  """NamedShardings for a (boxed, abstract) train state from its logical names.

  Args:
    abstract_state: the state as returned by `jax.eval_shape` of its init,
      still holding `nn.Partitioned` boxes for logically named parameters.
    rules: logical axis name -> mesh axes, the first match of each name wins.
    tower_rules: modality -> rules tried before `rules` for the parameters
      (and their optimizer state) of that modality's tower.
  Returns:
    A pytree matching the *unboxed* state with a NamedSharding per leaf.
  """
  logical = nn.get_partition_spec(abstract_state)
  unboxed = nn.meta.unbox(abstract_state)
  tower_rules = tower_rules or {}

  def to_sharding(path, logical_spec, leaf):
    leaf_rules = tuple(tower_rules.get(_tower(path), ())) + tuple(rules)
    spec = nn.logical_to_mesh_axes(logical_spec, leaf_rules)
    return NamedSharding(mesh, fit_to_shape(spec, leaf.shape, mesh))

  return jax.tree_util.tree_map_with_path(
      to_sharding, logical, unboxed, is_leaf=lambda x: isinstance(x, P))


def batch_sharding(mesh: Mesh, rules: Rules) -> NamedSharding:
  """Sharding of a batch array: leading axis over the mesh axes of 'batch'."""
  return NamedSharding(mesh, nn.logical_to_mesh_axes(('batch',), rules))


def data_parallel_size(shape: Mapping[str, int], rules: Rules) -> int:
  """How many ways the batch axis is split over a mesh of axis sizes `shape`
  (the global batch size must be a multiple)."""
  axes = dict(rules).get('batch')
  names = (axes,) if isinstance(axes, str) else tuple(axes or ())
  return math.prod(shape[a] for a in names)


def host_to_global(batch: Mapping[str, np.ndarray],
                   sharding: NamedSharding) -> Mapping[str, jax.Array]:
  """Assembles each host's local batch rows into global jax.Arrays.

  Every process passes its own [B_local, ...] rows; the result is a
  [B_local * process_count, ...] array laid out by `sharding`.
  """
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, x), batch)


def shard_summary(state: Any, shardings: Any, mesh: Mesh) -> str:
  """How much of the state is split over devices, then each parameter's mesh
  axes and the fraction of it that one device holds, for the run log."""
  total = sharded = 0
  for leaf, sharding in zip(jax.tree.leaves(state), jax.tree.leaves(shardings)):
    size = int(np.prod(leaf.shape))
    total += size
    sharded += size if any(s is not None for s in sharding.spec) else 0
  lines = [f'{sharded:,} of {total:,} state values '
           f'({100 * sharded / max(total, 1):.0f}%) are sharded over the mesh '
           f'{dict(mesh.shape)}; per parameter (optimizer state alike):']
  for (path, leaf), sharding in zip(
      jax.tree_util.tree_leaves_with_path(state.params),
      jax.tree.leaves(shardings.params)):
    shard = np.prod(sharding.shard_shape(leaf.shape)) / max(leaf.size, 1)
    lines.append(f'  {jax.tree_util.keystr(path, simple=True, separator="/")}'
                 f' {tuple(leaf.shape)} {tuple(sharding.spec)} '
                 f'{shard:.3g} per device')
  return '\n'.join(lines)
