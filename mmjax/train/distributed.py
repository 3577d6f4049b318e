"""Multi-host start-up: joins this process to a multi-process JAX run.

Call `initialize` first thing, before any other JAX call. The coordinator
address, process count and process id come from flags, or from the cluster
environment (SLURM: one task per process, e.g. `srun python
experiments/train.py ...`); with neither, the run is single-process.
"""
import os
from typing import Mapping, Optional

import jax


def cluster_process_count(environ: Mapping[str, str] = os.environ) -> int:
  """Processes of the SLURM job step this process belongs to (1 outside one)."""
  if 'SLURM_JOB_ID' not in environ:
    return 1
  return int(environ.get('SLURM_STEP_NUM_TASKS') or
             environ.get('SLURM_NTASKS') or 1)


def initialize(coordinator_address: Optional[str] = None,
               num_processes: Optional[int] = None,
               process_id: Optional[int] = None) -> None:
  """Joins the run described by the arguments (all three or none) or, without
  them, by the cluster environment; does nothing for a single process.

  Raises:
    ValueError: when only some of the three arguments are given.
  """
  given = [v is not None for v in (coordinator_address, num_processes,
                                   process_id)]
  if any(given) and not all(given):
    raise ValueError('--coordinator_address, --num_processes and '
                     '--process_id go together: give all three or none.')
  if (num_processes if all(given) else cluster_process_count()) < 2:
    return
  # Cross-process collectives of CPU devices (tests, CPU clusters); GPUs
  # and TPUs use their own.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  # Without arguments JAX reads the coordinator, count and id from SLURM.
  jax.distributed.initialize(coordinator_address, num_processes, process_id)
