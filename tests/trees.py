"""Strict pytree comparisons for tests.

Comparing `zip(jax.tree.leaves(a), jax.tree.leaves(b))` proves nothing when a
tree is empty (a model without BatchNorm has no batch statistics) or when the
trees differ in structure (zip stops at the shorter one), and
`np.testing.assert_array_equal` broadcasts a scalar against an array. These
helpers fail in each of those cases.
"""
import jax
import numpy as np


def _leaf_pairs(actual, expected):
  """(key path, actual leaf, expected leaf) of two trees of one structure,
  with leaves of one shape and dtype; fails on a structure, shape or dtype
  mismatch and on trees without leaves."""
  assert jax.tree.structure(actual) == jax.tree.structure(expected), (
      f'tree structures differ:\n{jax.tree.structure(actual)}\n'
      f'{jax.tree.structure(expected)}')
  pairs = [(jax.tree_util.keystr(path), np.asarray(x), np.asarray(y))
           for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(actual),
                                   jax.tree.leaves(expected))]
  assert pairs, 'both trees are empty: comparing them would prove nothing'
  for path, x, y in pairs:
    assert (x.shape, x.dtype) == (y.shape, y.dtype), (
        f'{path}: {x.shape} {x.dtype} vs {y.shape} {y.dtype}')
  return pairs


def assert_trees_equal(actual, expected):
  """Fails unless the trees have one structure and every leaf is bitwise
  equal (same shape and dtype too)."""
  for path, x, y in _leaf_pairs(actual, expected):
    np.testing.assert_array_equal(x, y, err_msg=path)


def assert_trees_close(actual, expected, **tolerance):
  """Fails unless the trees have one structure and every leaf is close
  (`np.testing.assert_allclose` `rtol`/`atol`, compared in float32 so that
  bfloat16 leaves compare too)."""
  for path, x, y in _leaf_pairs(actual, expected):
    np.testing.assert_allclose(x.astype(np.float32), y.astype(np.float32),
                               err_msg=path, **tolerance)
