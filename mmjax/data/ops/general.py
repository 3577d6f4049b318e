"""Ops that are not about one modality."""
import dataclasses
from typing import Tuple

from mmjax.data.preprocess import Op
from mmjax.registry import OPS


def get(example, key: str, op: Op):
  """example[key], or a KeyError naming the op and the keys there are."""
  if key not in example:
    raise KeyError(f'op {type(op).__name__}: the example has no key {key!r} '
                   f'(keys: {", ".join(sorted(example))}); map a dataset '
                   'feature to it in config.dataset.features or pass key=.')
  return example[key]


@OPS.register('keep')
@dataclasses.dataclass(init=False)
class Keep(Op):
  """Keeps only the named keys: `keep('image', 'label')`."""
  keys: Tuple[str, ...]

  def __init__(self, *keys: str):
    if not keys:
      raise ValueError('name at least one key to keep')
    self.keys = keys

  def __call__(self, example, rng):
    return {k: get(example, k, self) for k in self.keys}
