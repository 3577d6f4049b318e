"""Errors raised for bad user input (configs, data files, checkpoints)."""


class ConfigError(ValueError):
  """A config field holds a value mmjax cannot run with.

  The message names the field (dotted path, e.g. ``model.fusion.name``), the
  offending value and what is allowed, so the user can fix the config or the
  ``--config.a.b=value`` override without reading a traceback.
  """

  def __init__(self, field: str, message: str):
    self.field = field
    super().__init__(f'config.{field}: {message}')


def check_fields(cfg, allowed, prefix: str, owner: str) -> None:
  """Raises ConfigError for the first key of `cfg` that is not in `allowed`.

  Args:
    cfg: a ConfigDict or mapping.
    allowed: the valid field names.
    prefix: the config path of `cfg`, e.g. 'optimizer'.
    owner: what the fields belong to, for the message, e.g. "fusion 'gated'".
  """
  for key in cfg:
    if key not in allowed:
      raise ConfigError(f'{prefix}.{key}', f'{owner} has no field {key!r}; '
                        f'valid fields are {", ".join(sorted(allowed))}.')


class CheckpointError(RuntimeError):
  """A checkpoint step cannot be saved or restored.

  The message names the step, the file or directory at fault and what to do.
  """

  def __init__(self, step: int, path: str, message: str):
    self.step, self.path = step, path
    super().__init__(f'checkpoint step {step}: {path}: {message}')


class CheckpointCorrupt(CheckpointError):
  """Storage damage: a file of the step is missing, truncated or unreadable.

  The only kind of step `checkpoint.fallback_on_corrupt` sets aside.
  """


class CheckpointMismatch(CheckpointError):
  """The step is intact, but its state does not fit the current model and
  optimizer (tree structure, shape or dtype): the config changed. Never a
  reason to set the step aside."""


class WorkdirError(RuntimeError):
  """The work directory cannot take this run: unwritable, full, held by
  another trainer, or holding a run of another config."""

  def __init__(self, path: str, message: str):
    self.path = path
    super().__init__(f'workdir {path}: {message}')
