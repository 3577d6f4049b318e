"""Multi-host flags shared by the scripts that run on every host (train,
evaluate, robustness): --coordinator_address, --num_processes, --process_id.
Without them (and outside SLURM) a script runs as one process."""
from absl import flags

from mmjax.train import distributed

_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, 'Multi-host: HOST:PORT of process 0.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None,
                                      'Multi-host: number of processes.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None,
                                   'Multi-host: this process, 0-based.')


def initialize() -> None:
  """Joins the processes of the run (see mmjax.train.distributed)."""
  distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value,
                         _PROCESS_ID.value)
