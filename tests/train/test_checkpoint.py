"""Checkpointer: retention of the last N and best-by-metric steps, restore."""
import os

import grain
import jax
import jax.numpy as jnp
import numpy as np

from mmjax.train.checkpoint import Checkpointer


def _iterator():
  """A Grain iterator over 0, 1, 2, ... ."""
  return iter(grain.MapDataset.range(100).to_iter_dataset())


def test_keeps_last_and_best_and_restores(tmp_path):
  checkpointer = Checkpointer(str(tmp_path), keep_last=1, keep_best=1,
                              best_metric='accuracy', best_mode='max')
  accuracies = {1: 0.9, 2: 0.5, 3: 0.7, 4: None}
  data = _iterator()
  for step, accuracy in accuracies.items():
    state = {'w': jnp.full((3,), float(step)), 'step': jnp.int32(step)}
    assert next(data) == step - 1
    checkpointer.save(step, state, data,
                      metrics=None if accuracy is None else
                      {'accuracy': accuracy})
  checkpointer.wait()
  # Step 4 is the latest, step 1 the best; 2 and 3 are neither.
  assert list(checkpointer.all_steps()) == [1, 4]
  assert checkpointer.latest_step() == 4
  target = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
      {'w': jnp.zeros((3,)), 'step': jnp.int32(0)})
  restored_data = _iterator()
  state = checkpointer.restore(1, target, restored_data)
  np.testing.assert_array_equal(state['w'], np.full((3,), 1.0))
  # The data iterator continues after the one element step 1 had consumed.
  assert next(restored_data) == 1
  # One file per process holds the iterator state.
  assert 'process_0-of-1.json' in os.listdir(tmp_path / '1' / 'data')
  checkpointer.close()


def test_best_mode_min_keeps_the_lowest(tmp_path):
  checkpointer = Checkpointer(str(tmp_path), keep_last=1, keep_best=1,
                              best_metric='loss', best_mode='min',
                              async_save=False)
  for step, loss in {1: 0.3, 2: 0.1, 3: 0.2, 4: 0.4}.items():
    checkpointer.save(step, {'w': jnp.zeros(2)}, _iterator(),
                      metrics={'loss': loss})
  assert list(checkpointer.all_steps()) == [2, 4]
  checkpointer.close()
