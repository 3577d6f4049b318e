"""Logical axis names -> mesh axes, for parameters and activations.

Parameters carry logical names (`mmjax.models.layers`) that the train state's
shardings resolve (`mmjax.train.sharding`). Activations are pinned at block
boundaries with `constrain`: it resolves the same rules under the mesh that
`activation_sharding` makes current while the train and eval steps are
traced, and does nothing outside it (pmap, initialisation, plain `apply`).
"""
import contextlib
import math
import threading
from typing import Any, Iterator, Optional, Sequence, Tuple

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

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
