"""Benchmarks of configs and fusion methods.

  throughput: one config's training step (compile time, step time, FLOPs,
    MFU, memory).
  input: the input pipeline alone, the training step alone and the training
    loop that feeds one to the other.
  fusion: fusion variants x seeds trained as a sweep, with their metric,
    cost and robustness in one report.
"""
