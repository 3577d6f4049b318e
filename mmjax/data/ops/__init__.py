"""Preprocessing ops, registered by name in `mmjax.registry.OPS`.

Importing this package registers them; `mmjax.data.preprocess` parses the
config strings that chain them. Every op takes and returns one example (a dict
of NumPy arrays without a batch axis) and, by default, acts on the key named
for its modality ('image', 'audio', 'text', 'video'); `key=` points it elsewhere.
"""
from mmjax.data.ops import audio  # noqa: F401
from mmjax.data.ops import general  # noqa: F401
from mmjax.data.ops import image  # noqa: F401
from mmjax.data.ops import text  # noqa: F401
from mmjax.data.ops import video  # noqa: F401
from mmjax.data.ops import wordpiece  # noqa: F401
