"""Tasks: the loss, metrics and eval procedure of one training objective.

Importing this package registers every task in `mmjax.registry.TASKS`.
"""
from mmjax.tasks import classification  # noqa: F401
from mmjax.tasks import gan  # noqa: F401
from mmjax.tasks import retrieval  # noqa: F401
from mmjax.tasks import seq2seq  # noqa: F401
