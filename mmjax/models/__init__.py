"""Models: encoders per modality, fusion methods and the multimodal model.

Importing this package registers every encoder and fusion method.
"""
from mmjax.models import audio, image, text  # noqa: F401
from mmjax.models import fusion  # noqa: F401
