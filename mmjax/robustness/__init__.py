"""Robustness to missing and noisy modalities (the MultiBench protocol).

`corruptions` (the noises), `pipeline` (a noise as a step of the eval
preprocessing), `metrics` (relative and effective robustness), `protocol`
(every evaluation of a restored run) and `report` (JSON, tables, plots);
`experiments/robustness.py` runs them on a run's workdir.
"""
