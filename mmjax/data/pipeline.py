"""Grain input pipelines: host-local numpy batches from a dataset spec.

Each host reads its own shard of a split (examples `shard_index`,
`shard_index + shard_count`, ...), so the shards partition the split. Batches
are dicts of numpy arrays with a leading [batch_size] axis; `batch_size` is per
host and the train loop assembles the global batch on the mesh.
"""
import functools
import math

import grain
import numpy as np

# Main-process reading: a couple of threads and a few batches ahead is enough
# for small examples and leaves the cores to the training step (Grain's
# defaults, 16 threads and 500 elements, would buffer 500 whole batches).
_READ_OPTIONS = grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)


def _check_batching(batch_size: int, shard_index: int,
                    shard_count: int) -> None:
  if batch_size <= 0:
    raise ValueError(f'batch_size must be positive, got {batch_size}.')
  if shard_count <= 0:
    raise ValueError(f'shard_count must be positive, got {shard_count}.')
  if not 0 <= shard_index < shard_count:
    raise ValueError(f'shard_index must be in [0, {shard_count}), got '
                     f'{shard_index}.')


def _shard_size(num_examples: int, shard_index: int, shard_count: int) -> int:
  return len(range(shard_index, num_examples, shard_count))


def _shard(spec, split: str, shard_index: int, shard_count: int,
           field: str) -> grain.MapDataset:
  return grain.MapDataset.source(spec.source(split, field=field))[
      shard_index::shard_count]


def train_iterator(spec, split: str, *, batch_size: int, seed: int,
                   shard_index: int = 0, shard_count: int = 1,
                   num_workers: int = 0) -> grain.DatasetIterator:
  """An endless iterator of preprocessed, shuffled training batches.

  Each epoch of this host's shard is shuffled differently (from `seed` and the
  epoch number); batches run across epoch boundaries, so none is partial. The
  iterator's `get_state()` / `set_state()` let a checkpoint resume the exact
  sequence of batches.

  Args:
    spec: a dataset spec (`mmjax.data.datasets.DatasetSpec`).
    split: split name; errors name the config field `dataset.train_split`.
    batch_size: examples per batch on this host.
    seed: shuffle seed.
    shard_index, shard_count: which shard of the split this host reads.
    num_workers: Grain worker processes that preprocess in parallel; 0 reads
      in this process.
  Returns:
    A Grain DatasetIterator of dicts `key -> [batch_size, ...]` numpy arrays
    (the keys of `spec.example_spec()`).
  """
  _check_batching(batch_size, shard_index, shard_count)
  size = _shard_size(spec.num_examples(split, 'dataset.train_split'),
                     shard_index, shard_count)
  if size < batch_size:
    raise ValueError(
        f'split {split!r} has {size} examples in shard {shard_index} of '
        f'{shard_count}, fewer than one batch of {batch_size}; use a smaller '
        'batch or a larger split.')
  ds = (_shard(spec, split, shard_index, shard_count, 'dataset.train_split')
        .shuffle(seed)
        .repeat()
        .map(spec.preprocess)
        .batch(batch_size, drop_remainder=True)
        .to_iter_dataset(_READ_OPTIONS))
  if num_workers > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return iter(ds)


def num_eval_batches(spec, split: str, batch_size: int,
                     shard_count: int = 1) -> int:
  """Batches `eval_iterator` yields on every host: enough for the largest shard."""
  largest = _shard_size(spec.num_examples(split, 'dataset.eval_split'), 0,
                        shard_count)
  return math.ceil(largest / batch_size)


def _with_mask(spec, example):
  return {**spec.preprocess(example), '_mask': np.float32(1.)}


def eval_iterator(spec, split: str, *, batch_size: int, shard_index: int = 0,
                  shard_count: int = 1):
  """An iterator over this host's shard of `split`, each example once, in order.

  Every batch has `batch_size` rows: the last real examples are followed by
  rows of zeros, marked by `_mask` (float32 [batch_size], 1 real, 0 padding).
  Every host yields `num_eval_batches(...)` batches, also when shard sizes
  differ, so multi-host evaluation steps stay in lockstep.
  """
  _check_batching(batch_size, shard_index, shard_count)
  num_batches = num_eval_batches(spec, split, batch_size, shard_count)
  real = _shard(spec, split, shard_index, shard_count,
                'dataset.eval_split').map(functools.partial(_with_mask, spec))
  pad_row = {k: np.zeros(s.shape, s.dtype)
             for k, s in spec.example_spec().items()}
  pad_row['_mask'] = np.float32(0.)
  padding = grain.MapDataset.source(
      [pad_row] * (num_batches * batch_size - len(real)))
  ds = grain.MapDataset.concatenate([real, padding]).batch(batch_size)
  return iter(ds.to_iter_dataset(_READ_OPTIONS))
