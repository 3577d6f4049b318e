"""Tests of the Grain train / eval pipelines, the tokenizers and spec errors."""
import numpy as np
import pytest
from absl import flags

from mmjax.data import pipeline
from mmjax.data import tokenizers
from mmjax.errors import ConfigError
from mmjax.registry import DATASETS

TRAIN_SIZE, TEST_SIZE = 256, 100  # The 'tiny' splits.


def _key(image) -> bytes:
  """Identifies an example by its (noisy, hence unique) preprocessed image."""
  return np.ascontiguousarray(image).tobytes()


def _index(spec, split):
  """Image key -> position in the split."""
  source = spec.source(split)
  keys = {_key(spec.preprocess(source[i])['image']): i
          for i in range(len(source))}
  assert len(keys) == len(source)
  return keys


def _indices(index, batches):
  return [index[_key(x)] for b in batches for x in b['image']]


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_train_batches_follow_the_example_spec(spec):
  batch = next(pipeline.train_iterator(spec, 'train', batch_size=8, seed=0))
  example_spec = spec.example_spec()
  assert batch.keys() == example_spec.keys()
  for k, s in example_spec.items():
    assert isinstance(batch[k], np.ndarray)
    assert (batch[k].shape, batch[k].dtype) == ((8, *s.shape), s.dtype), k


def test_train_epochs_cover_the_split_reshuffled_each_epoch(spec):
  index = _index(spec, 'train')
  batches = _take(pipeline.train_iterator(spec, 'train', batch_size=32,
                                          seed=3), 2 * TRAIN_SIZE // 32)
  order = _indices(index, batches)
  first, second = order[:TRAIN_SIZE], order[TRAIN_SIZE:]
  assert sorted(first) == sorted(second) == list(range(TRAIN_SIZE))
  assert first != second and first != sorted(first)
  other_seed = _indices(index, _take(pipeline.train_iterator(
      spec, 'train', batch_size=32, seed=4), 1))
  assert other_seed != first[:32]


def test_train_resumes_from_state_exactly(spec):
  make = lambda: pipeline.train_iterator(spec, 'train', batch_size=24, seed=0)
  uninterrupted = make()
  _take(uninterrupted, 5)
  state = uninterrupted.get_state()
  expected = _take(uninterrupted, 8)  # Crosses the epoch boundary (10.7).
  resumed = make()
  resumed.set_state(state)
  _assert_same_batches(_take(resumed, 8), expected)


def test_train_shards_partition_each_epoch(spec):
  index = _index(spec, 'train')
  per_shard = TRAIN_SIZE // 2
  seen = []
  for shard in range(2):
    it = pipeline.train_iterator(spec, 'train', batch_size=16, seed=0,
                                 shard_index=shard, shard_count=2)
    order = _indices(index, _take(it, 2 * per_shard // 16))
    # Each epoch of a shard holds each of its examples once.
    assert sorted(order[:per_shard]) == sorted(order[per_shard:])
    assert len(set(order[:per_shard])) == per_shard
    seen += order[:per_shard]
  assert sorted(seen) == list(range(TRAIN_SIZE))


def test_worker_processes_give_the_same_batches_and_resume(spec):
  # Grain's worker processes read an absl flag; scripts parse flags via app.run.
  flags.FLAGS.mark_as_parsed()
  make = lambda workers: pipeline.train_iterator(
      spec, 'train', batch_size=32, seed=0, num_workers=workers)
  expected = _take(make(0), 6)
  it = make(2)
  try:
    _assert_same_batches(_take(it, 3), expected[:3])
    state = it.get_state()
  finally:
    it.close()
  resumed = make(2)
  try:
    resumed.set_state(state)
    _assert_same_batches(_take(resumed, 3), expected[3:])
  finally:
    resumed.close()


@pytest.mark.parametrize('shard_count,batch_size', [(1, 32), (3, 16)])
def test_eval_covers_every_example_once_with_padding(spec, shard_count,
                                                     batch_size):
  index = _index(spec, 'test')
  num_batches = pipeline.num_eval_batches(spec, 'test', batch_size,
                                          shard_count)
  # 100 = 4 batches of 32 (4 real rows last); shards of 34, 33, 33 examples
  # all take 3 batches of 16.
  assert num_batches == {1: 4, 3: 3}[shard_count]
  seen = []
  for shard in range(shard_count):
    batches = list(pipeline.eval_iterator(
        spec, 'test', batch_size=batch_size, shard_index=shard,
        shard_count=shard_count))
    assert len(batches) == num_batches
    mask = np.concatenate([b['_mask'] for b in batches])
    assert mask.dtype == np.float32
    real = int(mask.sum())
    assert real == len(range(shard, TEST_SIZE, shard_count))
    np.testing.assert_array_equal(mask[:real], 1)  # Padding only at the end.
    for b in batches:
      assert all(v.shape[0] == batch_size for v in b.values())
      padding = b['_mask'] == 0
      for k, v in b.items():
        assert not v[padding].any(), k
    seen += [index[_key(x)]
             for b in batches for x, m in zip(b['image'], b['_mask']) if m]
  assert sorted(seen) == list(range(TEST_SIZE))


def test_bad_arguments_raise(spec):
  with pytest.raises(ValueError, match='batch_size must be positive'):
    pipeline.train_iterator(spec, 'train', batch_size=0, seed=0)
  with pytest.raises(ValueError, match='shard_index must be in'):
    pipeline.eval_iterator(spec, 'test', batch_size=8, shard_index=2,
                           shard_count=2)
  with pytest.raises(ValueError, match='fewer than one batch of 200'):
    pipeline.train_iterator(spec, 'train', batch_size=200, seed=0,
                            shard_count=2)
  with pytest.raises(ConfigError, match='dataset.train_split.*valid splits '
                     'are train, test'):
    pipeline.train_iterator(spec, 'validation', batch_size=8, seed=0)
  with pytest.raises(ConfigError, match='dataset.eval_split'):
    pipeline.eval_iterator(spec, 'validation', batch_size=8)


def test_spec_config_errors(dataset_config, tmp_path):
  make = lambda cfg: DATASETS.get(cfg.name, field='dataset.name')(cfg)
  for field, value, match in [
      ('builder_config', 'huge', 'valid configs are default, tiny'),
      ('text_length', 0, 'positive int'),
      ('tokenizer', 'bpe', 'valid tokenizers are word, byte')]:
    cfg = dataset_config.copy_and_resolve_references()
    cfg[field] = value
    with pytest.raises(ConfigError, match=f'dataset.{field}.*{match}'):
      make(cfg)
  dataset_config.data_dir = str(tmp_path)
  with pytest.raises(FileNotFoundError, match='spec.prepare'):
    make(dataset_config).source('train')


def test_word_tokenizer_maps_pads_and_truncates():
  tokenizer = tokenizers.WordTokenizer(('red', 'fox'))
  assert tokenizer.vocab_size == 4
  ids, mask = tokenizer.encode(b'Fox  red owl', 5)
  np.testing.assert_array_equal(ids, [3, 2, 1, 0, 0])
  np.testing.assert_array_equal(mask, [1, 1, 1, 0, 0])
  assert ids.dtype == np.int32 and mask.dtype == bool
  np.testing.assert_array_equal(tokenizer.encode('red fox red', 2)[0], [2, 3])


def test_byte_tokenizer_and_spec_vocab_size(dataset_config):
  ids, mask = tokenizers.ByteTokenizer().encode('hé', 4)
  np.testing.assert_array_equal(ids, [ord('h') + 1, 0xc3 + 1, 0xa9 + 1, 0])
  np.testing.assert_array_equal(mask, [1, 1, 1, 0])
  dataset_config.tokenizer = 'byte'
  spec = DATASETS.get('triad', field='dataset.name')(dataset_config)
  assert spec.vocab_size == 257
  assert spec.preprocess(spec.source('test')[0])['text'].max() < 257
