"""Grain input pipelines: host-local NumPy batches from a dataset spec.

Training: every host walks the same seeded, endless stream of shuffled
examples and reads its own rows of each global batch, so the global batches
(and their augmentations) are the same whatever the number of hosts, and each
epoch covers each example once. Evaluation: each host reads its own shard of
the split (examples `shard_index`, `shard_index + shard_count`, ...), so the
shards partition it. Stored examples go through `spec.select` and the preprocessing ops (`pp`, see
`mmjax.data.preprocess`); batches are dicts of NumPy arrays with a leading
[batch_size] axis. `batch_size` is per host: the train loop assembles the
global batch on the mesh. Reading and preprocessing run ahead of the training
step in Grain's threads (or worker processes), and the step's device transfer
is asynchronous, so the device does not wait for the host.
"""
import functools
import math
import os
from typing import (Any, Callable, Dict, Mapping, MutableMapping, Optional,
                    Sequence)

import grain
import jax
import numpy as np

from mmjax.data.datasets import DatasetSpec
from mmjax.data.preprocess import Preprocess
from mmjax.errors import ConfigError

# Main-process reading happens in the consuming thread: the prefetch thread
# when `config.input.prefetch` > 0. The ops are Python holding the GIL, so
# Grain's read threads would only contend for it (on the `digits_speech`
# config of docs/benchmarks.md two of them made the pipeline alone slower than
# none); processes (`config.input.num_workers`) parallelise preprocessing.
_READ_OPTIONS = grain.ReadOptions(num_threads=0)


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


def _apply(spec: DatasetSpec, pp: Preprocess, stored: Mapping[str, Any],
           rng: Optional[np.random.Generator] = None) -> Dict[str, Any]:
  """A stored example -> the model's inputs and targets."""
  return pp(spec.select(stored), rng)


def _check_numeric(example: Mapping[str, Any], field: str) -> None:
  for key, value in example.items():
    if np.asarray(value).dtype.kind not in 'biuf':
      raise ValueError(
          f'{field}: after preprocessing, {key!r} holds '
          f'{type(value).__name__} values of dtype '
          f'{np.asarray(value).dtype}, which cannot be batched; add an op '
          "that turns it into numbers (decode_image, tokenize, ...) or drop "
          "it with keep(...).")


def _stack(examples: Sequence[Mapping[str, Any]], field: str
           ) -> Dict[str, np.ndarray]:
  """Stacks examples into a batch; names the key whose shapes differ."""
  batch = {}
  for key in examples[0]:
    values = [np.asarray(e[key]) for e in examples]
    shapes = sorted({v.shape for v in values})
    if len(shapes) > 1:
      raise ValueError(
          f'{field}: examples differ in the shape of {key!r} ({shapes[0]} vs '
          f'{shapes[-1]}); add an op that gives every example the same shape '
          '(resize, central_crop, pad_audio, tokenize).')
    batch[key] = np.stack(values)
  return batch


def example_spec(spec: DatasetSpec, pp: Preprocess
                 ) -> Dict[str, jax.ShapeDtypeStruct]:
  """Shape and dtype of every key of a preprocessed example (no batch axis).

  Preprocesses the first training example, so the dataset must be prepared.
  """
  example = _apply(spec, pp, spec.source(spec.train_split)[0],
                   np.random.default_rng(0))
  _check_numeric(example, pp.field)
  return {k: jax.ShapeDtypeStruct(np.shape(v), np.asarray(v).dtype)
          for k, v in example.items()}


class _HostRows(grain.MapDataset):
  """One host's rows of each global batch of an endless example stream.

  Element p of host i (of n, `batch_size` rows each) is stream element
  (p // batch_size * n + i) * batch_size + p % batch_size. Lazy: only this
  host's elements are read and preprocessed.
  """

  def __init__(self, parent: grain.MapDataset, batch_size: int,
               shard_index: int, shard_count: int):
    super().__init__(parent)
    self._rows, self._index, self._count = batch_size, shard_index, shard_count

  def __len__(self) -> int:
    return len(self._parent) // self._count

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    batch, row = divmod(index, self._rows)
    return self._parent[(batch * self._count + self._index) * self._rows + row]


class _Cached(grain.MapDataset):
  """`parent`'s elements, each computed on its first read and then kept in
  `store` (index -> element); its arrays are made read-only, so that no later
  op can change a kept one in place."""

  def __init__(self, parent: grain.MapDataset,
               store: MutableMapping[int, Dict[str, np.ndarray]]):
    super().__init__(parent)
    self._store = store

  def __len__(self) -> int:
    return len(self._parent)

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    # Later epochs ask for index + epoch * len (sources wrap them around).
    index %= len(self)
    if index not in self._store:
      element = self._parent[index]
      for value in element.values():
        if isinstance(value, np.ndarray):
          value.setflags(write=False)
      self._store[index] = element
    return self._store[index]


def _check_cache_fits(example: Mapping[str, Any], size: int) -> None:
  """Raises when `size` examples like `example` need over half this host's
  memory."""
  needed = size * sum(np.asarray(v).nbytes for v in example.values())
  memory = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  if needed > memory / 2:
    raise ConfigError(
        'input.cache', f'the training split\'s decoded examples need about '
        f'{needed / 2**30:.1f} GiB, over half of this host\'s '
        f'{memory / 2**30:.1f} GiB; set input.cache=False (or move the '
        'memory-heavy ops after the first random op).')


def train_iterator(spec: DatasetSpec, pp: Preprocess, *, batch_size: int,
                   seed: int, shard_index: int = 0, shard_count: int = 1,
                   num_workers: int = 0, prefetch: int = 0,
                   put: Optional[Callable[[Any], Any]] = None,
                   cache: Optional[MutableMapping[int, Any]] = None
                   ) -> grain.DatasetIterator:
  """An endless iterator of this host's rows of preprocessed, shuffled
  training batches.

  Each epoch of `spec.train_split` is shuffled differently (from `seed` and
  the epoch number); batches run across epoch boundaries, so none is partial.
  Random ops draw from a generator seeded by `seed` and the example's position
  in the endless stream, so augmentations differ between epochs and are
  reproducible. Host `shard_index` of `shard_count` reads rows
  [shard_index * batch_size, (shard_index + 1) * batch_size) of each global
  batch of `shard_count * batch_size` (`_HostRows`): stacked in host order,
  the hosts' batches are exactly one host's batches of that global size. The
  iterator's `get_state()` / `set_state()` let a checkpoint resume the exact
  sequence of batches.

  Args:
    spec: the dataset.
    pp: the training preprocessing.
    batch_size: examples per batch on this host.
    seed: shuffle seed.
    shard_index, shard_count: this host's index and the number of hosts.
    num_workers: Grain worker processes that preprocess in parallel; 0 reads
      in this process.
    prefetch: batches a background thread prepares ahead of the consumer
      (and, with `put`, moves to the devices), so that the next batches are
      ready while the current step runs; 0 prepares each on demand. The
      iterator's state stays that of the last batch consumed.
    put: host batch -> batch on the devices (the runner's `put`), applied in
      the background thread; None yields host batches.
    cache: where to keep each stored example's output of `pp`'s ops before
      its first random op (`Preprocess.split_deterministic`), so that later
      epochs read nothing and run only the random ops; the batches are the
      same as without it. Share one mapping between the iterators of one
      split and pipeline; None keeps nothing.
  Returns:
    A Grain DatasetIterator of dicts `key -> [batch_size, ...]` numpy arrays
    (the keys of `example_spec(spec, pp)`).
  """
  _check_batching(batch_size, shard_index, shard_count)
  split = spec.train_split
  size = spec.num_examples(split, 'dataset.train_split')
  if size < batch_size * shard_count:
    raise ValueError(
        f'split {split!r} has {size} examples, fewer than one global batch '
        f'of {batch_size} x {shard_count} hosts; use a smaller batch or a '
        'larger split.')
  stored = grain.MapDataset.source(
      spec.source(split, field='dataset.train_split'))
  if cache is None:
    apply = functools.partial(_apply, spec, pp)
  else:
    fixed, pp = pp.split_deterministic()
    stored = _Cached(stored.map(functools.partial(_apply, spec, fixed)), cache)
    _check_cache_fits(stored[0], size)
    apply = pp
  stream = stored.shuffle(seed).repeat().random_map(apply, seed=seed)
  ds = (_HostRows(stream, batch_size, shard_index, shard_count)
        .batch(batch_size, drop_remainder=True,
               batch_fn=functools.partial(_stack, field=pp.field))
        .to_iter_dataset(_READ_OPTIONS))
  if num_workers > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  if prefetch > 0:
    ds = grain.experimental.ThreadPrefetchIterDataset(
        ds, prefetch_buffer_size=prefetch)
  if put is not None:
    ds = ds.map(put)
    if prefetch > 0:  # A second stage holds batches already on the devices.
      ds = grain.experimental.ThreadPrefetchIterDataset(
          ds, prefetch_buffer_size=prefetch)
  return iter(ds)


def num_eval_batches(spec: DatasetSpec, batch_size: int,
                     shard_count: int = 1) -> int:
  """Batches `eval_iterator` yields on every host: enough for the largest shard."""
  largest = _shard_size(spec.num_examples(spec.eval_split,
                                          'dataset.eval_split'), 0,
                        shard_count)
  return math.ceil(largest / batch_size)


def _with_mask(spec, pp, stored):
  return {**_apply(spec, pp, stored), '_mask': np.float32(1.)}


def eval_iterator(spec: DatasetSpec, pp: Preprocess, *, batch_size: int,
                  shard_index: int = 0, shard_count: int = 1):
  """An iterator over this host's shard of `spec.eval_split`, each example
  once, in order; `pp` is the (deterministic) evaluation preprocessing.

  Every batch has `batch_size` rows: the last real examples are followed by
  rows of zeros, marked by `_mask` (float32 [batch_size], 1 real, 0 padding).
  Every host yields `num_eval_batches(...)` batches, also when shard sizes
  differ, so multi-host evaluation steps stay in lockstep.
  """
  _check_batching(batch_size, shard_index, shard_count)
  num_batches = num_eval_batches(spec, batch_size, shard_count)
  real = _shard(spec, spec.eval_split, shard_index, shard_count,
                'dataset.eval_split').map(
                    functools.partial(_with_mask, spec, pp))
  pad_row = {k: np.zeros(s.shape, s.dtype)
             for k, s in example_spec(spec, pp).items()}
  pad_row['_mask'] = np.float32(0.)
  padding = grain.MapDataset.source(
      [pad_row] * (num_batches * batch_size - len(real)))
  ds = grain.MapDataset.concatenate([real, padding]).batch(
      batch_size, batch_fn=functools.partial(_stack, field=pp.field))
  return iter(ds.to_iter_dataset(_READ_OPTIONS))


def preprocessing(input_cfg, spec: DatasetSpec):
  """(train, eval) preprocessing of `config.input` (`pp_train`, `pp_eval`)."""
  return (Preprocess.parse(input_cfg.pp_train, spec.meta, 'input.pp_train'),
          Preprocess.parse(input_cfg.pp_eval, spec.meta, 'input.pp_eval',
                           deterministic=True))


def prepare(config) -> None:
  """Generates the dataset of `config` if it is one of mmjax's own, then does
  the preprocessing's offline work (e.g. trains its SentencePiece model).

  Call on one process; the others wait (the train loop does this).
  """
  spec = DatasetSpec(config.dataset, config.model.modalities)
  spec.prepare()
  for pp in preprocessing(config.input, spec):
    pp.prepare()
