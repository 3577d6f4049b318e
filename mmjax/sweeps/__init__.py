"""Sweeps: many training runs of one config, each with its own overrides and
work directory.

  overrides: override dicts (`{'model.head_dropout': 0.1, 'seed': 0}`), grids,
    the command line's --grid / --list and sweep files, and the config they
    give.
  runs: the run model (`Run`, `make_runs`), run status and the summary
    tables.
  launch: running them in this process, as parallel subprocesses of
    experiments/train.py, or writing their commands for a scheduler.
"""
