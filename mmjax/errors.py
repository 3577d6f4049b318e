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
