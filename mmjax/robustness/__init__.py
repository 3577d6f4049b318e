"""Robustness to missing and noisy modalities (the MultiBench protocol).

`corruptions` (the noises), `pipeline` (a noise as a step of the eval
preprocessing), `metrics` (relative and effective robustness) and `report`
(JSON, tables, plots); the protocol itself, every evaluation of a run, is the
evaluator `mmjax.evaluators.robustness`, which `experiments/robustness.py`
runs on a run's workdir.
"""
