"""Name -> constructor registries for encoders, fusion methods, models, tasks,
datasets and preprocessing ops.

Every component that a config selects by name registers itself here, so an
unknown name fails early with the list of valid names instead of a KeyError
deep inside model construction.
"""
from typing import Callable, Dict, Generic, Iterable, TypeVar

from mmjax.errors import ConfigError

T = TypeVar('T')


class Registry(Generic[T]):
  """A named collection of constructors.

  >>> FUSIONS = Registry('fusion method')
  >>> @FUSIONS.register('concat')
  ... class Concat(nn.Module): ...
  >>> FUSIONS.get('concat', field='model.fusion.name')
  """

  def __init__(self, kind: str):
    self.kind = kind
    self._entries: Dict[str, T] = {}

  def register(self, name: str) -> Callable[[T], T]:
    def decorator(obj: T) -> T:
      if name in self._entries:
        raise ValueError(f'{self.kind} {name!r} is registered twice.')
      self._entries[name] = obj
      return obj
    return decorator

  def get(self, name: str, field: str) -> T:
    """Returns the entry `name`; `field` is the config path used in errors."""
    if name not in self._entries:
      raise ConfigError(
          field, f'unknown {self.kind} {name!r}; valid names are: '
          f'{", ".join(sorted(self._entries))}.')
    return self._entries[name]

  def names(self) -> Iterable[str]:
    return sorted(self._entries)

  def __contains__(self, name: str) -> bool:
    return name in self._entries


MODALITIES = ('image', 'audio', 'text', 'video')

# Populated by the modules that define the entries (imported by
# `mmjax.models`, `mmjax.models.model`, `mmjax.tasks` and `mmjax.data`).
# A model is a Linen module class with `from_config(config, *, num_outputs,
# vocab_size, sample_rate, bn_axis_name)` and `check_config(config)`.
ENCODERS: Dict[str, Registry] = {
    m: Registry(f'{m} encoder') for m in MODALITIES}
FUSIONS: Registry = Registry('fusion method')
MODELS: Registry = Registry('model')
DECODERS: Registry = Registry('text decoder')
TASKS: Registry = Registry('task')
DATASETS: Registry = Registry('dataset')
OPS: Registry = Registry('preprocessing op')
# An evaluator: `cls(cfg, experiment, workdir)` with `run(state, step)`; see
# `mmjax.evaluators`.
EVALUATORS: Registry = Registry('evaluator')
