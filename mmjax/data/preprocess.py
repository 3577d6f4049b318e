"""Preprocessing strings -> a chain of registered ops applied to each example.

A config lists the ops of a pipeline as a string, big_vision style:

    config.input.pp_train = ('decode_image|random_crop(28)|flip_lr|'
                             'value_range(-1, 1)|decode_audio|pad_audio(24000)|'
                             'tokenize(16)')

Each op is `name` or `name(arg, ..., key=value)` with literal arguments; ops
are looked up in `mmjax.registry.OPS` (see `mmjax/data/ops/`). An op maps one
example (dict of NumPy arrays, no batch axis, keys named by modality:
'image', 'audio', 'text', 'video', 'label' and their '_mask' / '_present'
companions)
to a new one. Random ops draw from the per-example generator Grain passes in,
so augmentations are reproducible and resume exactly.
"""
import ast
import dataclasses
from typing import (Any, ClassVar, Dict, List, Mapping, Optional, Protocol,
                    Tuple)

import numpy as np

from mmjax.data.tokenizers import Tokenizer
from mmjax.errors import ConfigError
from mmjax.registry import OPS

Example = Dict[str, Any]


class TextTokenizer(Protocol):
  """How a pipeline tokenizes one text key, for tasks that turn ids back
  into text (`Preprocess.tokenizers`)."""

  @property
  def max_vocab_size(self) -> int:
    """An upper bound of the ids, known before a tokenizer is trained."""

  def get_tokenizer(self) -> Tokenizer:
    """The tokenizer (it may be trained by `Preprocess.prepare`)."""


class Op:
  """One preprocessing step; subclasses are dataclasses of the op's arguments.

  Attributes:
    random: whether the op draws from `rng` (not allowed in eval pipelines).
  """
  random: ClassVar[bool] = False

  def setup(self, meta: Dict[str, Any]) -> None:
    """Reads and updates the dataset metadata this op needs or changes.

    Called once, in pipeline order, when the pipeline is built: e.g. `resample`
    reads `meta['sample_rate']` and sets it to its target rate, `tokenize`
    sets `meta['vocab_size']`. Raises ValueError when the metadata lacks
    something the op needs.
    """

  def prepare(self, meta: Mapping[str, Any]) -> None:
    """Offline work stored next to the dataset (e.g. training a tokenizer).

    Runs once on process 0 after the dataset is prepared.
    """

  def tokenizers(self) -> Mapping[str, TextTokenizer]:
    """Example key -> how this op tokenizes it (after `setup`); {} for an
    op that tokenizes nothing."""
    return {}

  def __call__(self, example: Example, rng: np.random.Generator) -> Example:
    raise NotImplementedError


def _parse_op(text: str, field: str) -> Op:
  """'resize(32, key="image")' -> the registered op built with those arguments."""
  try:
    node = ast.parse(text.strip(), mode='eval').body
  except SyntaxError:
    raise ConfigError(field, f'cannot parse op {text!r}; write name or '
                      'name(arg, key=value) with literal arguments.') from None
  call = node if isinstance(node, ast.Call) else None
  name_node = call.func if call else node
  if not isinstance(name_node, ast.Name):
    raise ConfigError(field, f'cannot parse op {text!r}; write name or '
                      'name(arg, key=value) with literal arguments.')
  cls = OPS.get(name_node.id, field=field)
  try:
    args = [ast.literal_eval(a) for a in call.args] if call else []
    kwargs = ({k.arg: ast.literal_eval(k.value) for k in call.keywords}
              if call else {})
  except ValueError:
    raise ConfigError(field, f'op {text!r}: arguments must be literals '
                      '(numbers, strings, tuples, lists).') from None
  try:
    return cls(*args, **kwargs)
  except (TypeError, ValueError) as e:
    fields = ', '.join(f.name for f in dataclasses.fields(cls))
    raise ConfigError(field, f'op {text!r}: {e}. Its arguments are: '
                      f'{fields}.') from None


@dataclasses.dataclass
class Preprocess:
  """A parsed preprocessing string: ops applied in order.

  Attributes:
    ops: the ops.
    meta: the dataset metadata after every op's `setup` (e.g. 'sample_rate'
      of the audio the model receives, 'vocab_size' of the text ids).
    field: the config path of the preprocessing string, named in errors.
    tokenizers: example key -> how the pipeline tokenizes that text (the
      last op that tokenizes it), e.g. for a task that decodes generated ids.
  """
  ops: List[Op]
  meta: Dict[str, Any]
  field: str
  tokenizers: Dict[str, TextTokenizer] = dataclasses.field(
      default_factory=dict)

  @classmethod
  def parse(cls, text: str, meta: Mapping[str, Any], field: str,
            deterministic: bool = False) -> 'Preprocess':
    """Parses `text` for a dataset with metadata `meta`.

    Args:
      text: '|'-separated ops ('' for none).
      meta: the dataset's metadata (`DatasetSpec.meta`); not modified.
      field: the config path of `text`, named in errors.
      deterministic: reject random ops (eval pipelines).
    """
    ops = [_parse_op(t, field) for t in (text or '').split('|') if t.strip()]
    meta = dict(meta)
    tokenizers = {}
    for op in ops:
      name = type(op).__name__
      if deterministic and op.random:
        raise ConfigError(field, f'op {name} is random; evaluation '
                          'preprocessing must be deterministic.')
      try:
        op.setup(meta)
      except ValueError as e:
        raise ConfigError(field, f'op {name}: {e}') from None
      tokenizers.update(op.tokenizers())
    return cls(ops, meta, field, tokenizers)

  def split_deterministic(self) -> Tuple['Preprocess', 'Preprocess']:
    """(the ops before the first random one, the rest), so that the first
    part's output, which depends only on the stored example, can be kept
    (`input.cache`). Deterministic ops draw nothing from the generator, so
    the two applied in turn give exactly what the whole pipeline gives."""
    first_random = next((i for i, op in enumerate(self.ops) if op.random),
                        len(self.ops))
    return (dataclasses.replace(self, ops=self.ops[:first_random]),
            dataclasses.replace(self, ops=self.ops[first_random:]))

  def prepare(self) -> None:
    for op in self.ops:
      op.prepare(self.meta)

  def __call__(self, example: Example,
               rng: Optional[np.random.Generator] = None) -> Example:
    """Applies every op to a copy of `example`."""
    example = dict(example)
    for op in self.ops:
      example = op(example, rng)
    return example
