"""Sweep: does dropout inside the fusion help, and does the answer depend on
the fusion method? 3 methods x 3 dropout rates x 2 seeds = 18 runs.

  python experiments/ablate.py --config=configs/digits.py \
      --sweep=configs/sweeps/fusion_dropout.py --outdir=runs/fusion_dropout \
      --parallel=2

Every key is a config field as in --config.a.b=value; 'model.fusion.name'
picks the method through the config variant, with its knobs at their
defaults, and 'model.fusion.dropout' is a knob every method has.
"""
from mmjax.sweeps import overrides


def get_sweep():
  return overrides.grid({
      'model.fusion.name': ['concat', 'gated', 'late'],
      'model.fusion.dropout': [0.0, 0.1, 0.3],
      'seed': [0, 1],
  })
