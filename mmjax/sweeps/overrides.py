"""Override dicts and the configs they give.

A sweep is a list of override dicts, `{'model.head_dropout': 0.1, 'seed': 0}`,
with the keys and values of `--config.a.b=value` flags: each value becomes the
text of that flag (`format_value`) and is parsed by ml_collections' config
flag, so a run in this process and its printed command get the same config,
and an unknown field or a value of the wrong type is a ConfigError naming the
field before any run starts. Two kinds of key change the config argument
instead (`file.py:variant`, see configs/default.py): ':key' sets the variant's
`key=value` (':modalities' also sets the preprocessing for those modalities),
and 'model.fusion.name' is taken as ':fusion' (`mmjax.sweeps.runs`), so that
the run gets that method's knobs at their defaults rather than the config's
method's knobs.
"""
import importlib.util
import itertools
import os
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from absl import flags
import ml_collections
from ml_collections import config_flags

from mmjax.errors import ConfigError


def format_value(value: Any) -> str:
  """The `--config.a.b=` text of an override value: strings as they are
  (the flag parser reads them by the field's type), anything else as its
  Python literal, which the parsers of bool, number, tuple and dict fields
  read back."""
  return value if isinstance(value, str) else repr(value)


def config_flags_of(config: str, overrides: Mapping[str, Any]) -> List[str]:
  """The flags `--config=<config> --config.<key>=<value> ...` (--config
  first, as absl needs)."""
  return [f'--config={config}'] + [
      f'--config.{key}={format_value(value)}'
      for key, value in overrides.items()]


def _parse(config: str, overrides: Mapping[str, Any]
           ) -> ml_collections.ConfigDict:
  """Loads `config` ('file.py:variant') with `--config.<key>=<value>` flags
  parsed exactly as experiments/train.py parses them (a private FlagValues,
  not absl's global FLAGS)."""
  argv = ['sweep', *config_flags_of(config, overrides)]
  flag_values = flags.FlagValues()
  holder = config_flags.DEFINE_config_file(
      'config', flag_values=flag_values, sys_argv=argv, lock_config=True)
  flag_values(argv)
  return holder.value


def _check_field(config: ml_collections.ConfigDict, path: str) -> None:
  """Raises ConfigError(path) unless `path` names a field of `config`."""
  node = config
  parts = path.split('.')
  for i, part in enumerate(parts):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      parent = '.'.join(parts[:i])
      valid = (f'valid fields are {", ".join(sorted(node.keys()))}'
               if isinstance(node, ml_collections.ConfigDict) else
               f'{parent} is a {type(node).__name__}, not a group of fields')
      raise ConfigError(path, f'no such field ({parent or "the config"} '
                        f'has no {part!r}; {valid}); fix the override\'s '
                        'key.')
    node = node[part]


def load_config(config: str, overrides: Mapping[str, Any]
                ) -> ml_collections.ConfigDict:
  """The config `config` ('file.py:variant') with `overrides` applied.

  Raises:
    ConfigError naming the first override whose field does not exist or
    whose value does not parse as the field's type.
  """
  base = _parse(config, {})
  for key in overrides:
    _check_field(base, key)
  try:
    return _parse(config, overrides)
  except flags.Error:
    # absl stops at the first bad flag; find its field by parsing each alone.
    for key, value in overrides.items():
      try:
        _parse(config, {key: value})
      except flags.Error as e:
        raise ConfigError(key, f'cannot take {format_value(value)!r}: {e}'
                          ) from None
    raise


def with_variant(config: str, variant: Mapping[str, str]) -> str:
  """'file.py:a=1' + {'b': '2'} -> 'file.py:a=1,b=2' (configs read the
  variant left to right, so later keys win)."""
  if not variant:
    return config
  path, _, current = config.partition(':')
  items = [current] if current else []
  items += [f'{key}={value}' for key, value in variant.items()]
  return f'{path}:{",".join(items)}'


def grid(axes: Mapping[str, Sequence[Any]]) -> List[Dict[str, Any]]:
  """Every combination of the values of `axes` (the first key varies
  slowest): grid({'a': [1, 2], 'seed': [0, 1]}) -> 4 override dicts."""
  keys = list(axes)
  return [dict(zip(keys, values))
          for values in itertools.product(*(axes[k] for k in keys))]


def cross(left: Sequence[Mapping[str, Any]],
          right: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
  """Each dict of `left` merged with each of `right` (keys must differ)."""
  out = []
  for a in left:
    for b in right:
      shared = set(a) & set(b)
      if shared:
        raise ValueError(f'{", ".join(sorted(shared))} is set twice in one '
                         'run; give each field in one place.')
      out.append({**a, **b})
  return out


def parse_axis(text: str) -> Tuple[str, List[str]]:
  """A --grid axis: 'key=v1,v2,v3' -> (key, [v1, v2, v3]). Values stay
  strings (the field's type parses them); one holding a comma needs a sweep
  file."""
  key, sep, values = text.partition('=')
  if not sep or not key.strip() or not values:
    raise ValueError(f'{text!r}: expected key=value1,value2,...')
  return key.strip(), values.split(',')


def parse_settings(text: str) -> Dict[str, str]:
  """One --list run: 'k1=v1,k2=v2' -> {k1: v1, k2: v2}."""
  out = {}
  for item in text.split(','):
    key, sep, value = item.partition('=')
    if not sep or not key.strip():
      raise ValueError(f'{text!r}: expected key1=value1,key2=value2,...')
    out[key.strip()] = value
  return out


def load_sweep_file(path: str) -> List[Dict[str, Any]]:
  """The override dicts of a sweep file: a Python file whose `get_sweep()`
  returns a list of them (e.g. built with `grid`)."""
  spec = importlib.util.spec_from_file_location('mmjax_sweep_file', path)
  if spec is None or not os.path.exists(path):
    raise ValueError(f'sweep file {path!r} not found.')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, 'get_sweep'):
    raise ValueError(f'sweep file {path} has no get_sweep() function.')
  sweep = module.get_sweep()
  if not isinstance(sweep, (list, tuple)) or not all(
      isinstance(s, Mapping) for s in sweep):
    raise ValueError(f'get_sweep() of {path} must return a list of '
                     f'{{field: value}} dicts, got {type(sweep).__name__}.')
  return [dict(s) for s in sweep]


def sweep_settings(sweep_file: str | None, lists: Sequence[str],
                   grids: Sequence[str]) -> List[Dict[str, Any]]:
  """The runs of experiments/ablate.py's --sweep, --list and --grid: the
  sweep file's and the --list runs (or one empty run), each crossed with
  the product of the --grid axes.

  Raises:
    ValueError for a malformed item or a --grid key given twice.
  """
  explicit = load_sweep_file(sweep_file) if sweep_file else []
  explicit += [parse_settings(text) for text in lists]
  axes = {}
  for text in grids:
    key, values = parse_axis(text)
    if key in axes:
      raise ValueError(f'--grid gives {key} twice; list its values in one '
                       '--grid.')
    axes[key] = values
  return cross(explicit or [{}], grid(axes))
