"""Cross-modal attention: each modality's tokens attend to the others'.

Same data, encoders and training as configs/default.py; only the fusion differs.
  python experiments/train.py --config=configs/cross_attention.py --workdir=runs/cross_attention
The variant string of configs/default.py applies too (e.g. ':text=lstm').
"""
from configs import default


def get_config(arg=None):
  return default.get_config(','.join(filter(None, ['fusion=cross_attention', arg])))
