"""Maps a checkpoint's tensors onto an mmjax tower's variables, strictly.

A family converter lists one `Rule` per mmjax variable: the source tensor
that fills it and the `Transform` between their layouts. `apply_rules` then
checks, before anything is built, that every rule's tensor is in the file
with the shape the variable needs, and that every tensor of the file is used
by exactly one rule (apart from PyTorch bookkeeping buffers); each failure
names the tensors at fault.
"""
import dataclasses
import fnmatch
from typing import Any, Callable, Dict, Mapping, Sequence, Tuple

import flax
import flax.linen as nn
import jax
import numpy as np
from einops import rearrange

from mmjax.convert.tensors import ConversionError

Shape = Tuple[int, ...]
# Buffers PyTorch modules keep beside their weights that hold no learned
# value: BatchNorm's update counter and the position-index ranges of
# Hugging Face embeddings. Never needed, so never reported as unused.
BOOKKEEPING = ('*num_batches_tracked', '*position_ids')
_SHOWN = 20  # Names listed per kind of failure.


@dataclasses.dataclass(frozen=True)
class Transform:
  """From a source layout to mmjax's: `fn` permutes the array's axes (the
  result is then reshaped to the target shape), `source_shape` gives the
  source shape a target shape needs (checked before `fn` runs)."""
  fn: Callable[[np.ndarray], np.ndarray]
  source_shape: Callable[[Shape], Shape]


IDENTITY = Transform(lambda x: x, lambda s: s)
# torch.nn.Linear weight [out, in] -> Dense kernel [in, out].
LINEAR = Transform(lambda x: rearrange(x, 'o i -> i o'), lambda s: s[::-1])
# torch.nn.Conv2d weight [out, in, kh, kw] -> Conv kernel [kh, kw, in, out].
CONV = Transform(lambda x: rearrange(x, 'o i h w -> h w i o'),
                 lambda s: (s[3], s[2], s[0], s[1]))
# Linear weight [heads * head_dim, in] -> DenseGeneral kernel [in, heads,
# head_dim] (query / key / value projections; the head is the outer factor,
# split by the reshape to the target shape).
HEADS_IN = Transform(lambda x: rearrange(x, 'hk i -> i hk'),
                     lambda s: (s[1] * s[2], s[0]))
# Linear bias [heads * head_dim] -> [heads, head_dim].
HEADS_BIAS = Transform(lambda x: x, lambda s: (s[0] * s[1],))
# Linear weight [out, heads * head_dim] -> kernel [heads, head_dim, out].
HEADS_OUT = Transform(lambda x: rearrange(x, 'o hk -> hk o'),
                      lambda s: (s[2], s[0] * s[1]))


def unsqueezed(n: int) -> Transform:
  """Drops `n` leading axes of size 1 (e.g. ViT's class token [1, 1, D])."""
  return Transform(lambda x: x, lambda s: (1,) * n + s)


@dataclasses.dataclass(frozen=True)
class Rule:
  """The mmjax variable at `target` ('params/stem_conv/kernel') is the
  tensor `source` of the checkpoint, through `transform`."""
  source: str
  target: str
  transform: Transform = IDENTITY


def dense(source: str, target: str, bias: bool = True) -> list:
  """Rules of a torch Linear `source`.{weight,bias} -> Dense `target`."""
  rules = [Rule(f'{source}.weight', f'{target}/kernel', LINEAR)]
  return rules + [Rule(f'{source}.bias', f'{target}/bias')] if bias else rules


def layer_norm(source: str, target: str) -> list:
  """Rules of a torch LayerNorm -> nn.LayerNorm (weight is the scale)."""
  return [Rule(f'{source}.weight', f'{target}/scale'),
          Rule(f'{source}.bias', f'{target}/bias')]


def attention(sources: Mapping[str, str], target: str) -> list:
  """Rules of a multi-head attention whose query, key, value and output
  Linear layers are `sources` ('query', 'key', 'value', 'out' -> torch
  module name) -> `layers.MultiHeadAttention` at `target`."""
  rules = []
  for part in ('query', 'key', 'value'):
    rules += [Rule(f'{sources[part]}.weight', f'{target}/{part}/kernel',
                   HEADS_IN),
              Rule(f'{sources[part]}.bias', f'{target}/{part}/bias',
                   HEADS_BIAS)]
  return rules + [Rule(f'{sources["out"]}.weight', f'{target}/out/kernel',
                       HEADS_OUT),
                  Rule(f'{sources["out"]}.bias', f'{target}/out/bias')]


def expected_variables(module: nn.Module, *example: Any) -> Dict[str, Any]:
  """'collection/path/name' -> ShapeDtypeStruct of every variable that
  `module.init(rng, *example, train=False)` creates (nothing is computed)."""
  shapes = jax.eval_shape(
      lambda *x: nn.meta.unbox(module.init(jax.random.key(0), *x,
                                           train=False)), *example)
  return {'/'.join(path): leaf for path, leaf in
          flax.traverse_util.flatten_dict(shapes).items()}


def _listing(lines: Sequence[str]) -> str:
  more = len(lines) - _SHOWN
  return ''.join(f'\n  {line}' for line in lines[:_SHOWN]) + (
      f'\n  ... and {more} more' if more > 0 else '')


def apply_rules(tensors: Mapping[str, np.ndarray], rules: Sequence[Rule],
                expected: Mapping[str, Any], *, source: str
                ) -> Dict[str, Any]:
  """The variables of a tower, {collection: nested dict of arrays}.

  Args:
    tensors: name -> array of the checkpoint (`read_tensors`).
    rules: one per variable of `expected`.
    expected: `expected_variables` of the tower the rules describe.
    source: the checkpoint's file name, for error messages.

  Raises:
    ConversionError: listing, by name, the tensors the tower needs but the
      file lacks, the tensors whose shape differs from what the tower needs,
      and the tensors of the file no rule uses.
  """
  targets, sources = [r.target for r in rules], [r.source for r in rules]
  if (sorted(targets) != sorted(expected) or
      len(set(targets)) != len(targets) or len(set(sources)) != len(sources)):
    # A converter bug, not a bad file: its rules must pair tensors and
    # variables one to one.
    raise AssertionError(
        f'rules do not pair tensors and variables one to one: without a rule '
        f'{sorted(set(expected) - set(targets))}, not in the tower '
        f'{sorted(set(targets) - set(expected))}, tensors used twice '
        f'{sorted({s for s in sources if sources.count(s) > 1})}')
  missing, misshapen, variables = [], [], {}
  for rule in rules:
    target = expected[rule.target]
    if rule.source not in tensors:
      missing.append(f'{rule.source} (for {rule.target})')
      continue
    array = np.asarray(tensors[rule.source])
    want = tuple(rule.transform.source_shape(tuple(target.shape)))
    if array.shape != want:
      misshapen.append(f'{rule.source}: {list(array.shape)} in the file, '
                       f'{list(want)} needed for {rule.target}')
      continue
    variables[tuple(rule.target.split('/'))] = rule.transform.fn(
        array).reshape(target.shape).astype(target.dtype)
  used = {r.source for r in rules}
  unused = sorted(name for name in tensors if name not in used and not any(
      fnmatch.fnmatchcase(name, pattern) for pattern in BOOKKEEPING))
  problems = []
  if missing:
    problems.append(f'{len(missing)} tensor(s) the tower needs are not in '
                    f'the file:' + _listing(missing))
  if misshapen:
    problems.append(f'{len(misshapen)} tensor(s) have the wrong shape (a '
                    'config that does not match the checkpoint?):' +
                    _listing(misshapen))
  if unused:
    problems.append(
        f'{len(unused)} tensor(s) of the file are not used by the tower; if '
        'they belong to a part you do not convert (a classifier head, the '
        'other tower of a CLIP model), leave them out with ignore patterns '
        '(convert_weights.py --ignore):' + _listing(unused))
  if problems:
    raise ConversionError(f'{source}: cannot convert.\n' +
                          '\n'.join(problems))
  return flax.traverse_util.unflatten_dict(variables)


def find_prefix(tensors: Mapping[str, np.ndarray], probe: str,
                prefixes: Sequence[str], *, source: str, family: str,
                layout: str = 'Hugging Face') -> str:
  """The prefix in `prefixes` under which the file holds `probe` (a tensor
  every checkpoint of the family has), e.g. '' or 'vit.'; `layout` names
  the family's layout in the error."""
  for prefix in prefixes:
    if prefix + probe in tensors:
      return prefix
  names = ', '.join(repr(p + probe) for p in prefixes)
  raise ConversionError(
      f'{source}: has none of {names}; is it a {family} checkpoint in the '
      f'{layout} layout? First tensors: {sorted(tensors)[:5]}')
