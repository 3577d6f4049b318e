"""Multi-host training on localhost: 2 processes x 4 CPU devices, each a real
`experiments/train.py` joined by `jax.distributed` (Gloo collectives), train
like 1 process x 8 devices."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from cpu_devices import subprocess_env
from mmjax.train import distributed

REPO = os.path.join(os.path.dirname(__file__), '..', '..')
STEPS = 6


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _start(workdir, data_dir, devices, *extra):
  return subprocess.Popen(
      [sys.executable, os.path.join(REPO, 'experiments', 'train.py'),
       '--config=configs/default.py:modalities=image+text,label=label,'
       'fusion=concat', f'--workdir={workdir}',
       '--config.dataset.builder_config=tiny',
       f'--config.dataset.data_dir={data_dir}',
       '--config.input.global_batch_size=16',
       '--config.input.eval_batch_size=16',
       f'--config.num_train_steps={STEPS}', '--config.log_every_steps=1',
       f'--config.eval_every_steps={STEPS // 2}',
       f'--config.checkpoint_every_steps={STEPS // 2}',
       '--config.optimizer.warmup_steps=1',
       '--config.parallel.mesh.fsdp=2', *extra],
      env=subprocess_env(devices), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True)


def _finish(process):
  output, _ = process.communicate(timeout=600)
  assert process.returncode == 0, output[-3000:]
  return output


def _metrics(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  return ({r['step']: r['loss'] for r in records if r['split'] == 'train'},
          {r['step']: r for r in records if r['split'] == 'eval'})


def test_two_processes_train_like_one(data_dir, tmp_path):
  single = str(tmp_path / 'single')
  _finish(_start(single, data_dir, 8))
  multi = str(tmp_path / 'multi')
  address = f'localhost:{_free_port()}'
  processes = [_start(multi, data_dir, 4, f'--coordinator_address={address}',
                      '--num_processes=2', f'--process_id={i}')
               for i in range(2)]
  outputs = [_finish(p) for p in processes]

  single_loss, single_eval = _metrics(single)
  multi_loss, multi_eval = _metrics(multi)
  assert sorted(multi_loss) == list(range(1, STEPS + 1))
  # The same global batches on the same 8-device mesh: the same losses, up
  # to the summation order of cross-process reductions.
  np.testing.assert_allclose([multi_loss[s] for s in sorted(single_loss)],
                             [single_loss[s] for s in sorted(single_loss)],
                             rtol=1e-5)
  for step, record in single_eval.items():
    assert multi_eval[step]['num_examples'] == record['num_examples'] == 100
    np.testing.assert_allclose(multi_eval[step]['loss'], record['loss'],
                               rtol=1e-5)
  with open(os.path.join(multi, 'summary.json')) as f:
    assert json.load(f)['devices'] == 8
  # Process 0 logs for the run; process 1 stays quiet.
  assert 'Model:' in outputs[0] and 'Model:' not in outputs[1]
  # Both processes wrote their input iterator's state into the checkpoint.
  data_files = os.listdir(os.path.join(multi, 'checkpoints', str(STEPS),
                                       'data'))
  assert {'process_0-of-2.json', 'process_1-of-2.json'} <= set(data_files)


@pytest.mark.parametrize('environ,count', [
    ({}, 1),
    ({'SLURM_JOB_ID': '7', 'SLURM_NTASKS': '4'}, 4),
    ({'SLURM_JOB_ID': '7', 'SLURM_NTASKS': '4', 'SLURM_STEP_NUM_TASKS': '2'},
     2),
    ({'SLURM_JOB_ID': '7'}, 1),
])
def test_cluster_process_count_reads_slurm(environ, count):
  assert distributed.cluster_process_count(environ) == count


def test_partial_distributed_flags_are_an_error():
  with pytest.raises(ValueError, match='give all three or none'):
    distributed.initialize('localhost:1234', None, 0)
