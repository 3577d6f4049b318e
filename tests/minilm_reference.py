"""The reference all-MiniLM-L6-v2 outputs the BERT and WordPiece tests compare
with: computed live by PyTorch `transformers` when torch and transformers are
importable, otherwise the golden arrays tests/golden/minilm.npz that
tests/golden/make_minilm_golden.py produced with them (see its doc)."""
import contextlib
import functools
import importlib.util
import json
import os
import socket

import numpy as np

GOLDEN_DIR = os.path.join(os.path.dirname(__file__), 'golden')


@functools.lru_cache(maxsize=None)
def golden_script():
  """tests/golden/make_minilm_golden.py as a module."""
  spec = importlib.util.spec_from_file_location(
      'make_minilm_golden',
      os.path.join(GOLDEN_DIR, 'make_minilm_golden.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def texts() -> dict:
  """{'captions': [...], 'edge_cases': [...]} of the comparison."""
  with open(golden_script().TEXTS_FILE, encoding='utf-8') as f:
    return json.load(f)


def live() -> bool:
  """Whether the reference runs live (torch and transformers importable)."""
  return all(importlib.util.find_spec(m) is not None
             for m in ('torch', 'transformers'))


@functools.lru_cache(maxsize=None)
def reference() -> dict:
  """The reference arrays (names in make_minilm_golden.py's doc)."""
  if live():
    return golden_script().reference_outputs(texts())
  with np.load(golden_script().GOLDEN_FILE) as golden:
    return dict(golden)


@contextlib.contextmanager
def sockets_blocked():
  """Any attempt to open a network socket raises, as on an offline host."""
  original = socket.socket

  class NoNetwork(socket.socket):
    def __init__(self, *args, **kwargs):
      raise OSError('network access attempted in an offline test')

  socket.socket = NoNetwork
  try:
    yield
  finally:
    socket.socket = original
