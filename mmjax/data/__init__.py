"""mmjax input data: TFDS builders, dataset specs and Grain pipelines.

Importing this package registers the datasets in `mmjax.registry.DATASETS`.
"""
from mmjax.data import builders  # noqa: F401  (registers the TFDS builders)
from mmjax.data import datasets  # noqa: F401  (registers the dataset specs)
from mmjax.data.pipeline import eval_iterator
from mmjax.data.pipeline import num_eval_batches
from mmjax.data.pipeline import train_iterator
