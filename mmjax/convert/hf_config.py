"""Reading the Hugging Face `config.json` that describes a checkpoint."""
import json
import os
from typing import Any, Mapping, Optional

from mmjax.convert.tensors import ConversionError

_REQUIRED = object()
# Hugging Face `hidden_act` -> key of mmjax.models.layers.ACTIVATIONS.
ACTIVATIONS = {'gelu': 'gelu', 'quick_gelu': 'quick_gelu',
               'gelu_new': 'gelu_tanh', 'gelu_pytorch_tanh': 'gelu_tanh'}


def read_config(path: str) -> dict:
  """The dict in a `config.json` file."""
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise ConversionError(f'{path}: cannot read the model config ({e}); give '
                          'the config.json saved with the weights.') from e


def default_config_path(weights: str) -> Optional[str]:
  """`config.json` beside the weights file, if there is one."""
  path = os.path.join(os.path.dirname(os.path.abspath(weights)),
                      'config.json')
  return path if os.path.isfile(path) else None


def field(config: Mapping[str, Any], key: str, default: Any = _REQUIRED):
  """config[key]; without a default, a missing key is a ConversionError."""
  if key in config:
    return config[key]
  if default is _REQUIRED:
    raise ConversionError(f'the model config has no {key!r}; give the '
                          'config.json saved with the weights.')
  return default


def activation(config: Mapping[str, Any]) -> str:
  """mmjax's name of the config's `hidden_act`."""
  act = field(config, 'hidden_act')
  if act not in ACTIVATIONS:
    raise ConversionError(f'hidden_act {act!r} has no mmjax equivalent; '
                          f'convertible: {", ".join(ACTIVATIONS)}.')
  return ACTIVATIONS[act]


def require(config: Mapping[str, Any], key: str, value: Any,
            default: Any) -> None:
  """Raises unless config[key] (or `default`) is `value`: an architecture
  variant mmjax does not implement."""
  given = field(config, key, default)
  if given != value:
    raise ConversionError(f'{key}={given!r} is not supported: mmjax '
                          f'implements {key}={value!r} only.')
