"""TFDS builders of mmjax's embedded datasets.

Importing this package registers each builder class in
`mmjax.registry.DATASETS` under its TFDS name ('av_digits', 'digits',
'interaction', 'moving_digits', 'scenes', 'triad'), which is what
`config.dataset.name` selects.
"""
from mmjax.data.builders import av_digits
from mmjax.data.builders import digits
from mmjax.data.builders import interaction
from mmjax.data.builders import moving_digits
from mmjax.data.builders import scenes
from mmjax.data.builders import triad
from mmjax.registry import DATASETS

for _builder in (av_digits.AvDigits, digits.Digits, interaction.Interaction,
                 moving_digits.MovingDigits, scenes.Scenes, triad.Triad):
  DATASETS.register(_builder.name)(_builder)
