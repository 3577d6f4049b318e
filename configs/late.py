"""Late fusion: per-modality heads whose logits are averaged.

Same data, encoders and training as configs/default.py; only the fusion differs.
  python experiments/train.py --config=configs/late.py --workdir=runs/late
The variant string of configs/default.py applies too (e.g. ':text=lstm').
"""
from configs import default


def get_config(arg=None):
  return default.get_config(','.join(filter(None, ['fusion=late', arg])))
