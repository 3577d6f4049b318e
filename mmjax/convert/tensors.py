"""Reads the named tensors of a PyTorch checkpoint file a user already has.

Safetensors files (`.safetensors`, what Hugging Face `save_pretrained`
writes) are read with the `safetensors` package (bfloat16 tensors too); PyTorch pickles (`.pth`,
`.pt`, `.bin`) need PyTorch, imported only here and only when such a file
is read: mmjax itself never requires it.
"""
import os
from typing import Dict, Mapping

import jax
import numpy as np
import safetensors.flax
import safetensors.numpy

PICKLE_SUFFIXES = ('.pth', '.pt', '.bin')


class ConversionError(ValueError):
  """A checkpoint that cannot be converted; the message names the file or
  tensors at fault and how to fix it."""


def _from_torch(path: str) -> Dict[str, np.ndarray]:
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ConversionError(
        f'{path}: reading a PyTorch pickle needs PyTorch, which mmjax does not '
        'install. Install it for the conversion only (pip install torch), or '
        'save the weights as safetensors (safetensors.torch.save_file) '
        'where PyTorch is installed.') from e
  # weights_only: a pickle from elsewhere must not run code when loaded.
  state = torch.load(path, map_location='cpu', weights_only=True)
  if isinstance(state, Mapping) and 'state_dict' in state:
    state = state['state_dict']  # Lightning-style and some training scripts.
  if not isinstance(state, Mapping) or not all(
      isinstance(v, torch.Tensor) for v in state.values()):
    raise ConversionError(
        f'{path}: not a state dict (a mapping of names to tensors). Save '
        'model.state_dict(), not the model or a training checkpoint.')
  # bfloat16 has no NumPy dtype; float32 holds it exactly.
  return {name: (t.float() if t.dtype == torch.bfloat16 else t).numpy()
          for name, t in state.items()}


def read_tensors(path: str) -> Dict[str, np.ndarray]:
  """name -> array of every tensor in the checkpoint at `path`.

  Raises:
    ConversionError: the file is missing, of an unknown kind, or a pickle
      without PyTorch installed.
  """
  if not os.path.isfile(path):
    raise ConversionError(f'{path}: no such file.')
  if path.endswith('.safetensors'):
    try:
      return safetensors.numpy.load_file(path)
    except TypeError:
      # bfloat16, which NumPy lacks; JAX's arrays have it (ml_dtypes). Read
      # on the CPU: a checkpoint need not fit an accelerator.
      with jax.default_device(jax.devices('cpu')[0]):
        return {name: np.asarray(x) for name, x in
                safetensors.flax.load_file(path).items()}
  if path.endswith(PICKLE_SUFFIXES):
    return _from_torch(path)
  raise ConversionError(
      f'{path}: unknown checkpoint kind; expected a .safetensors file or a '
      f'PyTorch state dict ({", ".join(PICKLE_SUFFIXES)}).')
