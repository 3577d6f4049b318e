"""mmjax input data: TFDS builders, dataset specs, preprocessing ops and Grain
pipelines.

Importing this package registers mmjax's datasets in `mmjax.registry.DATASETS`
and the preprocessing ops in `mmjax.registry.OPS`.
"""
from mmjax.data import builders  # noqa: F401  (registers the TFDS builders)
from mmjax.data import ops  # noqa: F401  (registers the preprocessing ops)
from mmjax.data.datasets import DatasetSpec
from mmjax.data.pipeline import eval_iterator
from mmjax.data.pipeline import example_spec
from mmjax.data.pipeline import num_eval_batches
from mmjax.data.pipeline import prepare
from mmjax.data.pipeline import preprocessing
from mmjax.data.pipeline import train_iterator
