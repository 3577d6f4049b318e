"""TFDS builders of mmjax's embedded datasets (importing registers them)."""
from mmjax.data.builders import triad  # noqa: F401
