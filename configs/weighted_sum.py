"""Weighted sum of modality vectors with learned softmax weights.

Same data, encoders and training as configs/default.py; only the fusion differs.
  python experiments/train.py --config=configs/weighted_sum.py --workdir=runs/weighted_sum
The variant string of configs/default.py applies too (e.g. ':text=lstm').
"""
from configs import default


def get_config(arg=None):
  return default.get_config(','.join(filter(None, ['fusion=weighted_sum', arg])))
