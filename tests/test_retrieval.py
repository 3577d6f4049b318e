"""Contrastive retrieval: losses, recall@k, sharded and pmap losses and
gradients equal to one device's, GradCache accumulation equal to the full
batch, whole-split evaluation, zero-shot classification of a trained model."""
import functools

import jax
import ml_collections
import numpy as np
import pyarrow.parquet as pq
import pytest
from tiny import gradient_step_config, one_step
from trees import assert_trees_close

from configs import retrieval as retrieval_config
from mmjax import data
from mmjax.data.builders import scenes
from mmjax.errors import ConfigError
from mmjax.models import model, two_tower
from mmjax.tasks import retrieval
from mmjax.evaluators import embedding
from mmjax.experiment import Experiment


def _config(data_dir, arg='text=embedding_bag', mesh=None, **fields):
  """A tiny retrieval config (see `tiny.gradient_step_config`)."""
  return gradient_step_config(retrieval_config.get_config(arg), data_dir,
                              mesh, **fields)


@functools.lru_cache(maxsize=None)
def _experiment(data_dir, devices=8, **fields):
  return Experiment(_config(data_dir, **fields),
                    devices=jax.devices()[:devices])


@functools.lru_cache(maxsize=None)
def _batch(data_dir):
  return next(_experiment(data_dir, devices=1).train_iterator())


@functools.lru_cache(maxsize=None)
def _step(data_dir, devices=8, **fields):
  """(loss, gradients as host arrays) of one step from the initial state."""
  return one_step(_experiment(data_dir, devices=devices, **fields),
                  _batch(data_dir))


def _assert_same_step(step, reference):
  (loss, grads), (ref_loss, ref_grads) = step, reference
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  assert_trees_close(grads, ref_grads, rtol=1e-4, atol=1e-6)
  # The temperature is learnt: its gradient is part of the comparison.
  assert np.abs(ref_grads['log_scale']).max() > 0


def _np_losses(logits, weights):
  """NumPy references of the softmax and sigmoid losses."""
  real = weights > 0
  x = logits[np.ix_(real, real)]
  n = len(x)

  def ce(z):
    z = z - z.max(1, keepdims=True)
    return -(np.diag(z) - np.log(np.exp(z).sum(1))).mean()

  signs = 2 * np.eye(n) - 1
  sigmoid = np.log1p(np.exp(-signs * x)).sum() / n
  return 0.5 * (ce(x) + ce(x.T)), sigmoid


def test_losses_match_references_and_ignore_padding():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(6, 6)).astype(np.float32) * 3
  weights = np.array([1, 1, 0, 1, 1, 0], np.float32)
  softmax, sigmoid = _np_losses(logits.astype(np.float64), weights)
  np.testing.assert_allclose(retrieval.softmax_loss(logits, weights),
                             softmax, rtol=1e-5)
  np.testing.assert_allclose(retrieval.sigmoid_loss(logits, weights),
                             sigmoid, rtol=1e-5)


def test_recall_at_k_and_ranks_on_hand_built_cases():
  # Query i's own item is item i; scores = queries @ items.T.
  items = np.eye(4)
  queries = np.array([[1., 0, 0, 0],  # Item 0 first: rank 1.
                      [0.9, 0.5, 0, 0],  # Item 0, then 1: rank 2.
                      [0.1, 0.2, 0.3, 0.9],  # Items 3, 2: rank 2.
                      [0.4, 0.3, 0.2, 0.1]])  # Items 0, 1, 2, 3: rank 4.
  right = np.eye(4, dtype=bool)
  query_ranks = retrieval.ranks(queries, items, right)
  np.testing.assert_array_equal(query_ranks, [1, 2, 2, 4])
  metrics = retrieval.rank_metrics('q', query_ranks, right)
  assert metrics['q_recall1'] == 0.25 and metrics['q_recall5'] == 1.0
  assert metrics['q_mean_rank'] == 2.25 and metrics['q_median_rank'] == 2.0
  assert metrics['q_chance_recall1'] == 0.25
  # Items 0 and 3 hold the same text: retrieving either is a hit, for
  # query 3 too (item 0 now counts as right).
  right[0, 3] = right[3, 0] = True
  np.testing.assert_array_equal(
      retrieval.ranks(queries, items, right), [1, 2, 2, 1])


def test_finalize_counts_a_duplicate_caption_as_a_hit():
  cfg = retrieval.default_task_config()
  spec = type('Spec', (), dict(modalities=('image', 'text'),
                               label_names=()))
  task = retrieval.Retrieval(cfg, spec)
  image = np.eye(3)
  text = np.array([[0., 1, 0], [1, 0, 0], [0, 0, 1]])  # 0 and 1 swapped.
  ids = np.array([[5, 6], [5, 6], [7, 8]])  # Texts 0 and 1 are equal.
  metrics = task.finalize({'count': np.int32(3)}, dict(
      image=image, text=text, text_values=ids))
  assert metrics['image_to_text_recall1'] == 1.0
  assert metrics['text_to_image_recall1'] == 1.0
  assert metrics['image_to_text_chance_recall1'] == pytest.approx(5 / 9)
  metrics = task.finalize({'count': np.int32(3)},
                          dict(image=image, text=text))
  assert metrics['image_to_text_recall1'] == pytest.approx(1 / 3)


def test_model_name_selects_the_model_and_defaults_to_classifier():
  old = ml_collections.ConfigDict({'model': {'modalities': ('image',)}})
  assert model.model_class(old) is model.MultimodalModel
  assert model.model_class(
      retrieval_config.get_config()) is two_tower.TwoTower


def test_config_errors_name_the_field(data_dir):
  with pytest.raises(ConfigError, match='task.pairs'):
    Experiment(_config(data_dir, task__pairs=(('image', 'audio'),)))
  with pytest.raises(ConfigError, match='task.loss'):
    Experiment(_config(data_dir, task__loss='hinge'))
  with pytest.raises(ConfigError, match='model.head_dropout'):
    Experiment(_config(data_dir, model__head_dropout=0.1))
  with pytest.raises(ConfigError, match='model.name'):
    Experiment(_config(data_dir, model__name='classifier'))


def test_sharded_loss_and_gradients_equal_single_device(data_dir):
  """Data x fsdp mesh (2 x 4) over the global batch of 16: every row is a
  negative of every other, as on one device."""
  _assert_same_step(
      _step(data_dir, mesh='2x4'),
      _step(data_dir, devices=1))


def test_pmap_gathers_every_negative(data_dir):
  """Under pmap each device holds 2 rows; the loss all-gathers the
  embeddings, and the pmean of the gradients is the full batch's."""
  _assert_same_step(_step(data_dir, parallel__mode='pmap'),
                    _step(data_dir, devices=1))


def test_gradcache_accumulation_equals_full_batch(data_dir):
  """4 micro-batches of 4 rows (GradCache), the loss still over all 16."""
  _assert_same_step(
      _step(data_dir, devices=1, optimizer__accumulation_steps=4),
      _step(data_dir, devices=1))


def test_whole_split_eval_is_the_same_on_any_mesh_and_mode(data_dir):
  """100 test examples in 4 padded batches, gathered from 8 devices."""
  results = []
  for fields in (dict(devices=1),
                 dict(mesh='2x4'),
                 dict(parallel__mode='pmap')):
    experiment = _experiment(data_dir, **fields)
    state = experiment.runner.init(experiment.init_rng)
    results.append(experiment.evaluate(state))
  assert results[0]['num_examples'] == 100
  assert 0 <= results[0]['mean_recall1'] <= 1
  for other in results[1:]:
    assert other.keys() == results[0].keys()
    for key in results[0]:
      np.testing.assert_allclose(other[key], results[0][key], rtol=1e-5)


def test_zero_shot_colour_of_one_object_scenes_after_training(data_dir):
  """A tiny two-tower model trained briefly on captions names the colour of
  one-object test scenes from prompts ('a {} circle', 'a {} square', 'a {}
  triangle', averaged) well above chance (1/6): 0.95 measured."""
  config = _config(data_dir, num_train_steps=100)
  config.input.global_batch_size = 32
  config.optimizer.update(name='adam', learning_rate=3e-3)
  experiment = Experiment(config, devices=jax.devices()[:1])
  runner = experiment.runner
  state = runner.init(experiment.init_rng)
  batches = experiment.train_iterator()
  for _ in range(config.num_train_steps):
    state, _ = runner.train_step(state, next(batches))
  examples = embedding.embed_split(experiment, state)
  source = data.DatasetSpec(config.dataset).source(
      'test', features=['caption', 'num_objects'])
  rows = [source[i] for i in range(len(source))]
  one = np.array([row['num_objects'] == 0 for row in rows])
  # A one-object caption: 'a red circle'.
  labels = np.array([scenes.COLOURS.index(row['caption'].decode().split()[1])
                     for row, single in zip(rows, one) if single])
  accuracy = embedding.zero_shot_accuracy(
      experiment, state, examples['image'][one], labels, scenes.COLOURS,
      [f'a {{}} {shape}' for shape in scenes.SHAPES])
  assert one.sum() >= 20 and accuracy >= 0.6, (one.sum(), accuracy)


@pytest.mark.parametrize('name', ['emb.npy', 'emb.parquet'])
def test_embeddings_export_round_trips(tmp_path, name):
  rng = np.random.default_rng(0)
  columns = {'image': rng.normal(size=(5, 4)).astype(np.float32),
             'label': np.arange(5, dtype=np.int32),
             'text_ids': rng.integers(0, 9, (5, 3)).astype(np.int32)}
  path = str(tmp_path / name)
  embedding.write_embeddings(columns, path)
  if name.endswith('.npy'):
    table = np.load(path)
    read = {k: table[k] for k in columns}
  else:
    table = pq.read_table(path)
    read = {k: np.stack(table[k].to_numpy(zero_copy_only=False))
            if columns[k].ndim > 1 else table[k].to_numpy()
            for k in columns}
  for key, value in columns.items():
    np.testing.assert_array_equal(read[key], value)


def test_embedding_and_zero_shot_evaluators_run_in_training(data_dir,
                                                            tmp_path):
  from mmjax.experiment import train_and_evaluate  # pylint: disable=g-import-not-at-top
  from mmjax.train import writers  # pylint: disable=g-import-not-at-top
  config = _config(data_dir, num_train_steps=2)
  config.log_every_steps = config.eval_every_steps = 2
  config.checkpoint_every_steps = 2
  config.evals = {'export': dict(type='embedding', every_steps=0),
                  'zero_shot': dict(type='zero_shot')}
  train_and_evaluate(config, str(tmp_path), progress=False)
  table = pq.read_table(tmp_path / 'embeddings' / 'step_2.parquet')
  test_size = data.DatasetSpec(config.dataset).num_examples('test', 'x')
  assert table.num_rows == test_size
  assert {'image', 'text', 'label'} <= set(table.column_names)
  records = {r['split']: r for r in writers.read_metrics(str(tmp_path))
             if r['step'] == 2}
  assert records['export']['rows'] == test_size
  assert 0 <= records['zero_shot']['accuracy'] <= 1
