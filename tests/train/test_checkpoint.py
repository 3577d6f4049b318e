"""Checkpointer: retention of the last N and best-by-metric steps, restore."""
import jax
import jax.numpy as jnp
import numpy as np

from mmjax.train.checkpoint import Checkpointer


def test_keeps_last_and_best_and_restores(tmp_path):
  checkpointer = Checkpointer(str(tmp_path), keep_last=1, keep_best=1,
                              best_metric='accuracy', best_mode='max')
  accuracies = {1: 0.9, 2: 0.5, 3: 0.7, 4: None}
  for step, accuracy in accuracies.items():
    state = {'w': jnp.full((3,), float(step)), 'step': jnp.int32(step)}
    checkpointer.save(step, state, {'position': step},
                      metrics=None if accuracy is None else
                      {'accuracy': accuracy})
  checkpointer.wait()
  # Step 4 is the latest, step 1 the best; 2 and 3 are neither.
  assert list(checkpointer.all_steps()) == [1, 4]
  assert checkpointer.latest_step() == 4
  target = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
      {'w': jnp.zeros((3,)), 'step': jnp.int32(0)})
  state, data_state = checkpointer.restore(1, target)
  np.testing.assert_array_equal(state['w'], np.full((3,), 1.0))
  assert data_state == {'position': 1}
  checkpointer.close()


def test_best_mode_min_keeps_the_lowest(tmp_path):
  checkpointer = Checkpointer(str(tmp_path), keep_last=1, keep_best=1,
                              best_metric='loss', best_mode='min',
                              async_save=False)
  for step, loss in {1: 0.3, 2: 0.1, 3: 0.2, 4: 0.4}.items():
    checkpointer.save(step, {'w': jnp.zeros(2)}, {}, metrics={'loss': loss})
  assert list(checkpointer.all_steps()) == [2, 4]
  checkpointer.close()
