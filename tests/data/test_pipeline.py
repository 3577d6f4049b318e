"""Tests of the Grain train / eval pipelines, the tokenizers and spec errors."""
import numpy as np
import pytest
from absl import flags

from mmjax import data
from mmjax.data import pipeline
from mmjax.data import tokenizers
from mmjax.data.preprocess import Preprocess
from mmjax.errors import ConfigError

TRAIN_SIZE, TEST_SIZE = 256, 100  # The 'tiny' splits.


def _key(image) -> bytes:
  """Identifies an example by its (noisy, hence unique) preprocessed image."""
  return np.ascontiguousarray(image).tobytes()


def _index(spec, pp, split):
  """Image key -> position in the split."""
  source = spec.source(split)
  keys = {_key(pp(spec.select(source[i]))['image']): i
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


def test_train_batches_follow_the_example_spec(spec, pp):
  batch = next(pipeline.train_iterator(spec, pp, batch_size=8, seed=0))
  example_spec = pipeline.example_spec(spec, pp)
  assert batch.keys() == example_spec.keys()
  for k, s in example_spec.items():
    assert isinstance(batch[k], np.ndarray)
    assert (batch[k].shape, batch[k].dtype) == ((8, *s.shape), s.dtype), k


def test_train_epochs_cover_the_split_reshuffled_each_epoch(spec, pp):
  index = _index(spec, pp, 'train')
  batches = _take(pipeline.train_iterator(spec, pp, batch_size=32, seed=3),
                  2 * TRAIN_SIZE // 32)
  order = _indices(index, batches)
  first, second = order[:TRAIN_SIZE], order[TRAIN_SIZE:]
  assert sorted(first) == sorted(second) == list(range(TRAIN_SIZE))
  assert first != second and first != sorted(first)
  other_seed = _indices(index, _take(pipeline.train_iterator(
      spec, pp, batch_size=32, seed=4), 1))
  assert other_seed != first[:32]


RANDOM_PP = ('decode_image|random_crop(28)|flip_lr|value_range(0, 1)|'
             'decode_audio|random_crop_audio(3000)|pad_audio(3000)|'
             'audio_features|spec_augment|tokenize(16)')


@pytest.mark.parametrize('random_ops', [False, True])
def test_train_resumes_from_state_exactly(spec, pp, random_ops):
  if random_ops:
    pp = Preprocess.parse(RANDOM_PP, spec.meta, 'input.pp_train')
  make = lambda: pipeline.train_iterator(spec, pp, batch_size=24, seed=0)
  uninterrupted = make()
  _take(uninterrupted, 5)
  state = uninterrupted.get_state()
  expected = _take(uninterrupted, 8)  # Crosses the epoch boundary (10.7).
  resumed = make()
  resumed.set_state(state)
  _assert_same_batches(_take(resumed, 8), expected)
  if random_ops:  # Augmentations differ between epochs (10.7 batches).
    assert not np.array_equal(expected[0]['image'], expected[-1]['image'])


@pytest.mark.parametrize('shard_count', [2, 4])
def test_hosts_assemble_the_single_host_batches(spec, shard_count):
  """Simulated hosts (process index / count): stacked in host order, their
  batches are one host's global batches, bitwise (random ops included), so
  each epoch covers each example exactly once over the hosts (shown for one
  host by the test above)."""
  pp = Preprocess.parse(RANDOM_PP, spec.meta, 'input.pp_train')
  global_batch = 32
  single = _take(pipeline.train_iterator(spec, pp, batch_size=global_batch,
                                         seed=5), 2 * TRAIN_SIZE // global_batch)
  hosts = [_take(pipeline.train_iterator(
      spec, pp, batch_size=global_batch // shard_count, seed=5,
      shard_index=i, shard_count=shard_count), len(single))
           for i in range(shard_count)]
  assembled = [{k: np.concatenate([h[b][k] for h in hosts])
                for k in single[0]} for b in range(len(single))]
  _assert_same_batches(assembled, single)


class _CountingSource:
  """A split's source that counts the reads of each index."""

  def __init__(self, source):
    self._source, self.reads = source, {}

  def __len__(self):
    return len(self._source)

  def __getitem__(self, index):
    self.reads[index] = self.reads.get(index, 0) + 1
    return self._source[index]


def test_cache_gives_the_same_batches_reading_each_example_once(
    spec, pp, monkeypatch):
  pp = Preprocess.parse(RANDOM_PP, spec.meta, 'input.pp_train')
  fixed, rest = pp.split_deterministic()
  assert [type(op).__name__ for op in fixed.ops] == ['DecodeImage']
  assert fixed.ops + rest.ops == pp.ops
  expected = _take(pipeline.train_iterator(spec, pp, batch_size=24, seed=0),
                   24)  # Over two epochs (10.7 batches each).
  counted = _CountingSource(spec.source(spec.train_split))
  monkeypatch.setattr(spec, 'source', lambda *a, **k: counted)
  store = {}
  cached = pipeline.train_iterator(spec, pp, batch_size=24, seed=0,
                                   cache=store)
  _assert_same_batches(_take(cached, 12), expected[:12])
  state = cached.get_state()
  resumed = pipeline.train_iterator(spec, pp, batch_size=24, seed=0,
                                    cache=store)
  resumed.set_state(state)
  _assert_same_batches(_take(resumed, 12), expected[12:])
  assert sorted(counted.reads) == list(range(TRAIN_SIZE))
  assert set(counted.reads.values()) == {1}
  with pytest.raises(ValueError, match='read-only'):
    store[0]['image'][0, 0, 0] = 0


def test_cache_too_large_for_memory_names_the_field(spec, pp, monkeypatch):
  monkeypatch.setattr(pipeline.os, 'sysconf', lambda name: 1024)
  with pytest.raises(ConfigError, match='input.cache'):
    pipeline.train_iterator(spec, pp, batch_size=8, seed=0, cache={})


def test_worker_processes_give_the_same_batches_and_resume(spec, pp):
  # Grain's worker processes read an absl flag; scripts parse flags via app.run.
  flags.FLAGS.mark_as_parsed()
  make = lambda workers: pipeline.train_iterator(
      spec, pp, batch_size=32, seed=0, num_workers=workers)
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
def test_eval_covers_every_example_once_with_padding(spec, pp, shard_count,
                                                     batch_size):
  index = _index(spec, pp, 'test')
  num_batches = pipeline.num_eval_batches(spec, batch_size, shard_count)
  # 100 = 4 batches of 32 (4 real rows last); shards of 34, 33, 33 examples
  # all take 3 batches of 16.
  assert num_batches == {1: 4, 3: 3}[shard_count]
  seen = []
  for shard in range(shard_count):
    batches = list(pipeline.eval_iterator(
        spec, pp, batch_size=batch_size, shard_index=shard,
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


def test_bad_arguments_raise(spec, pp):
  with pytest.raises(ValueError, match='batch_size must be positive'):
    pipeline.train_iterator(spec, pp, batch_size=0, seed=0)
  with pytest.raises(ValueError, match='shard_index must be in'):
    pipeline.eval_iterator(spec, pp, batch_size=8, shard_index=2,
                           shard_count=2)
  with pytest.raises(ValueError,
                     match='fewer than one global batch of 200 x 2 hosts'):
    pipeline.train_iterator(spec, pp, batch_size=200, seed=0, shard_count=2)
  spec.train_split = spec.eval_split = 'validation'
  with pytest.raises(ConfigError, match='dataset.train_split.*splits are '
                     'train, test'):
    pipeline.train_iterator(spec, pp, batch_size=8, seed=0)
  with pytest.raises(ConfigError, match='dataset.eval_split'):
    pipeline.eval_iterator(spec, pp, batch_size=8)


def test_batches_of_unequal_or_unbatchable_examples_name_the_key(spec):
  ragged = Preprocess.parse('decode_audio|tokenize(16)', spec.meta,
                            'input.pp_train')
  batch_of = lambda pp: next(pipeline.train_iterator(spec, pp, batch_size=8,
                                                     seed=0))
  if len({len(spec.source('train')[i]['audio']) for i in range(8)}) > 1:
    with pytest.raises(ValueError, match="input.pp_train: examples differ in "
                       "the shape of 'audio'.*pad_audio"):
      batch_of(ragged)
  raw_text = Preprocess.parse('decode_audio|pad_audio(100)', spec.meta,
                              'input.pp_eval')
  with pytest.raises(ValueError, match="input.pp_eval: after preprocessing, "
                     "'text' holds.*tokenize"):
    pipeline.example_spec(spec, raw_text)


def test_spec_config_errors(config, tmp_path):
  for field, value, match in [
      ('builder_config', 'huge', 'valid configs are'),
      ('features.text', 'no_such_feature', 'has no feature'),
      ('name', 'imagenet21k', 'no dataset .imagenet21k.*mmjax generates')]:
    cfg = config.dataset.copy_and_resolve_references()
    *path, leaf = field.split('.')
    node = cfg
    for part in path:
      node = node[part]
    node[leaf] = value
    with pytest.raises(ConfigError, match=f'dataset.{field}.*{match}'):
      data.DatasetSpec(cfg)
  config.dataset.data_dir = str(tmp_path)
  with pytest.raises(FileNotFoundError, match='spec.prepare'):
    data.DatasetSpec(config.dataset).source('train')


def test_word_tokenizer_maps_pads_and_truncates():
  tokenizer = tokenizers.WordTokenizer(('red', 'fox'))
  assert tokenizer.vocab_size == 4
  ids, mask = tokenizer.encode(b'Fox  red owl', 5)
  np.testing.assert_array_equal(ids, [3, 2, 1, 0, 0])
  np.testing.assert_array_equal(mask, [1, 1, 1, 0, 0])
  assert ids.dtype == np.int32 and mask.dtype == bool
  np.testing.assert_array_equal(tokenizer.encode('red fox red', 2)[0], [2, 3])


def test_tokenizers_set_the_vocab_size(spec):
  ids, mask = tokenizers.ByteTokenizer().encode('hé', 4)
  np.testing.assert_array_equal(ids, [ord('h') + 1, 0xc3 + 1, 0xa9 + 1, 0])
  np.testing.assert_array_equal(mask, [True, True, True, False])
  for tokenizer, size in [('byte', 257),
                          ('word', len(spec.meta['vocabulary']) + 2)]:
    pp = Preprocess.parse(f'tokenize(16, tokenizer={tokenizer!r})', spec.meta,
                          'input.pp_train')
    assert pp.meta['vocab_size'] == size
    assert pp(spec.select(spec.source('test')[0]))['text'].max() < size


def test_features_map_dataset_keys_to_modalities_and_label(config):
  """How a dataset with other key names (a TFDS catalog one) is read: here
  the spoken claim's transcript as 'text' and the object count as 'label'."""
  config.dataset.features = dict(image='', text='transcript',
                                 label='num_objects')
  spec = data.DatasetSpec(config.dataset, ('image', 'text'))
  assert spec.modalities == ('image', 'text')
  assert spec.num_classes == 3 and not spec.multilabel
  assert list(spec.label_names) == ['one', 'two', 'three']
  stored = spec.source('test')[7]
  example = spec.select(stored)
  assert example['text'] == stored['transcript']
  assert example['label'] == stored['num_objects']
  assert 'audio' not in example and 'caption' not in example


def test_source_parses_only_the_features_it_is_asked_for(spec):
  """A source reads the features `select` needs, with the values that TFDS's
  full decoding gives."""
  full = spec._builder().as_data_source(split='test')
  source = spec.source('test', 'dataset.eval_split')
  assert len(source) == len(full) == TEST_SIZE
  for i in (0, 57, TEST_SIZE - 1):
    stored, reference = source[i], full[i]
    assert set(stored) == set(spec.feature_map.values())
    for k, value in stored.items():
      np.testing.assert_array_equal(value, reference[k], err_msg=k)
  assert set(spec.source('test', features=['caption'])[3]) == {'caption'}
