"""Gated multimodal unit (Arevalo et al., 2017).

Same data, encoders and training as configs/default.py; only the fusion differs.
  python experiments/train.py --config=configs/gated.py --workdir=runs/gated
The variant string of configs/default.py applies too (e.g. ':text=lstm').
"""
from configs import default


def get_config(arg=None):
  return default.get_config(','.join(filter(None, ['fusion=gated', arg])))
