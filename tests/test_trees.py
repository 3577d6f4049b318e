"""The strict tree comparisons of tests/trees.py fail where a leaf-by-leaf
zip would pass."""
import numpy as np
import pytest

from trees import assert_trees_close, assert_trees_equal


@pytest.mark.parametrize('assert_trees', [assert_trees_equal,
                                          assert_trees_close])
@pytest.mark.parametrize('actual, expected', [
    ({}, {}),  # Nothing compared.
    ({'a': np.ones(2)}, {'a': np.ones(2), 'b': np.ones(2)}),  # zip stops.
    ({'a': np.ones(2)}, {'b': np.ones(2)}),  # Other keys, same leaves.
    ({'a': np.ones(2)}, {'a': np.float64(1)}),  # Broadcasts.
    ({'a': np.ones(2)}, {'a': np.ones(2, np.float32)}),  # Other dtype.
    ({'a': np.ones(2)}, {'a': np.array([1., 2.])}),  # Other value.
])
def test_mismatched_or_empty_trees_fail(assert_trees, actual, expected):
  with pytest.raises(AssertionError):
    assert_trees(actual, expected)


def test_equal_and_close_trees_pass():
  tree = {'a': np.arange(3.), 'b': [np.int32(1)]}
  assert_trees_equal(tree, {'a': np.arange(3.), 'b': [np.int32(1)]})
  assert_trees_close(tree, {'a': np.arange(3.) * (1 + 1e-9), 'b': [np.int32(1)]},
                     rtol=1e-6)
