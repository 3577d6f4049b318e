"""Fusion methods; importing this package registers every one in FUSIONS."""
from mmjax.models.fusion import bilinear  # noqa: F401
from mmjax.models.fusion import concat  # noqa: F401
from mmjax.models.fusion import cross_attention  # noqa: F401
from mmjax.models.fusion import early  # noqa: F401
from mmjax.models.fusion import film  # noqa: F401
from mmjax.models.fusion import gated  # noqa: F401
from mmjax.models.fusion import late  # noqa: F401
from mmjax.models.fusion import mbt  # noqa: F401
from mmjax.models.fusion import mult  # noqa: F401
from mmjax.models.fusion import nonlocal_gate  # noqa: F401
from mmjax.models.fusion import perceiver  # noqa: F401
from mmjax.models.fusion import tensor  # noqa: F401
from mmjax.models.fusion import weighted  # noqa: F401
from mmjax.models.fusion.base import FusionOutput  # noqa: F401
