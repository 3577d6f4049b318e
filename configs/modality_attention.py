"""Softmax weights over modalities computed from their content.

Same data, encoders and training as configs/default.py; only the fusion differs.
  python experiments/train.py --config=configs/modality_attention.py --workdir=runs/modality_attention
The variant string of configs/default.py applies too (e.g. ':text=lstm').
"""
from configs import default


def get_config(arg=None):
  return default.get_config(','.join(filter(None, ['fusion=modality_attention', arg])))
