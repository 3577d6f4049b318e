"""The cluster path under a real (local, one-node) SLURM: an ablation grid as
a job array, a 2-task `srun` run joined from SLURM's environment alone, and
preemption by `scancel --signal=TERM` with a requeue that resumes bitwise.

Marked `slurm`: `make test-slurm` runs them (`.ci/run` installs SLURM
first); `tests/slurm_cluster.py` starts the cluster."""
import json
import os
import re
import shlex
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import slurm_cluster
from cpu_devices import subprocess_env, xla_flags
from mmjax.train import preemption
from mmjax.train.writers import read_metrics
from trees import assert_trees_equal

pytestmark = pytest.mark.slurm
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 12
# The tiny default config on an 8-device data x fsdp mesh, as 1 process of 8
# devices or 2 SLURM tasks of 4.
TRAIN_FLAGS = (
    '--config=configs/default.py:modalities=image+text,label=label,'
    'fusion=concat', '--config.dataset.builder_config=tiny',
    '--config.input.global_batch_size=16', '--config.input.eval_batch_size=16',
    f'--config.num_train_steps={STEPS}', '--config.log_every_steps=1',
    f'--config.eval_every_steps={STEPS // 2}',
    '--config.checkpoint_every_steps=4', '--config.optimizer.warmup_steps=1',
    '--config.parallel.mesh.fsdp=2')


@pytest.fixture(scope='module')
def slurm(tmp_path_factory):
  reason = slurm_cluster.missing()
  if reason:
    pytest.skip(reason)
  cluster = slurm_cluster.LocalSlurm(str(tmp_path_factory.mktemp('slurm')))
  yield cluster.start()
  cluster.stop()


def _train_command(data_dir, workdir):
  return [sys.executable, os.path.join(REPO, 'experiments', 'train.py'),
          *TRAIN_FLAGS, f'--config.dataset.data_dir={data_dir}',
          f'--workdir={workdir}']


def _losses(workdir):
  return {r['step']: r['loss'] for r in read_metrics(workdir)
          if r['split'] == 'train'}


def _params(workdir, step=STEPS):
  """The parameters a (multi-process) run saved at `step`, on one device."""
  checkpointer = ocp.StandardCheckpointer()
  path = os.path.join(workdir, 'checkpoints', str(step), 'state')
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
      checkpointer.metadata(path).item_metadata.tree)
  return jax.tree.map(np.asarray,
                      checkpointer.restore(path, target)['params'])


def _submit_training(slurm, data_dir, directory):
  """A batch job of 2 tasks (`srun`), each train.py on 4 CPU devices,
  training into `<directory>/run`; its job id. Only SLURM's environment
  tells the tasks about each other: no coordinator flags."""
  script = os.path.join(directory, 'job.sh')
  with open(script, 'w') as f:
    f.write('#!/bin/bash\n'
            f'export XLA_FLAGS={shlex.quote(xla_flags(4))}\n'
            f'srun {shlex.join(_train_command(data_dir, f"{directory}/run"))}\n')
  return slurm.run('sbatch', '--parsable', '--ntasks=2', f'--chdir={REPO}',
                   f'--output={directory}/job.log', '--open-mode=append',
                   script).strip().split(';')[0]


def _log(directory):
  with open(os.path.join(directory, 'job.log')) as f:
    return f.read()


@pytest.fixture(scope='module')
def srun_reference(slurm, data_dir, tmp_path_factory):
  """The workdir of an uninterrupted 2-task run."""
  directory = str(tmp_path_factory.mktemp('srun_reference'))
  job = _submit_training(slurm, data_dir, directory)
  assert slurm.wait([job]) == {job: 'COMPLETED'}, _log(directory)[-3000:]
  return os.path.join(directory, 'run')


def test_two_srun_tasks_train_like_one_process(slurm, srun_reference,
                                               data_dir, tmp_path):
  # The job's environment is SLURM's alone: no coordinator flags.
  single = str(tmp_path / 'single')
  done = subprocess.run(_train_command(data_dir, single), cwd=REPO,
                        env=subprocess_env(8), capture_output=True,
                        text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  multi, one = _losses(srun_reference), _losses(single)
  assert sorted(multi) == list(range(1, STEPS + 1))
  np.testing.assert_allclose([multi[s] for s in sorted(one)],
                             [one[s] for s in sorted(one)], rtol=1e-5)
  evals = [{r['step']: r for r in read_metrics(w) if r['split'] == 'eval'}
           for w in (srun_reference, single)]
  assert evals[0][STEPS]['num_examples'] == evals[1][STEPS]['num_examples']
  np.testing.assert_allclose(evals[0][STEPS]['loss'], evals[1][STEPS]['loss'],
                             rtol=1e-5)
  with open(os.path.join(srun_reference, 'summary.json')) as f:
    assert json.load(f)['devices'] == 8
  data = os.listdir(os.path.join(srun_reference, 'checkpoints', str(STEPS),
                                 'data'))
  assert {'process_0-of-2.json', 'process_1-of-2.json'} <= set(data)


def _tasks_exited(log, code):
  """The task ids that srun reports exited with `code` ('task 1: Exited
  with exit code 75', or together: 'tasks 0-1: ...')."""
  tasks = set()
  for spec in re.findall(rf'tasks? ([\d,-]+): Exited with exit code {code}\n',
                         log):
    for part in spec.split(','):
      first, _, last = part.partition('-')
      tasks.update(range(int(first), int(last or first) + 1))
  return tasks


def test_scancel_term_stops_both_tasks_at_one_step_and_requeue_resumes(
    slurm, srun_reference, data_dir, tmp_path):
  directory = str(tmp_path)
  workdir = os.path.join(directory, 'run')
  job = _submit_training(slurm, data_dir, directory)
  start = time.time()
  while max(_losses(workdir) if os.path.exists(
      os.path.join(workdir, 'metrics.jsonl')) else [], default=0) < 3:
    assert slurm.job(job)['JobState'] in ('PENDING', 'RUNNING'), _log(
        directory)[-3000:]
    assert time.time() - start < 300
    time.sleep(0.05)
  slurm.run('scancel', '--signal=TERM', job)
  assert slurm.wait([job]) == {job: 'FAILED'}
  assert slurm.job(job)['ExitCode'] == f'{preemption.EXIT_CODE}:0'
  log = _log(directory)
  # srun's own account: both tasks exited with 75.
  assert _tasks_exited(log, preemption.EXIT_CODE) == {0, 1}, log[-3000:]
  # Each task's own: the same step checkpointed.
  stops = re.findall(r'SIGTERM received: checkpointed step (\d+)', log)
  assert len(stops) == 2 and stops[0] == stops[1], log[-3000:]
  stopped = int(stops[0])
  assert 3 <= stopped < STEPS
  saved = os.listdir(os.path.join(workdir, 'checkpoints'))
  assert max(int(s) for s in saved if s.isdigit()) == stopped

  slurm.run('scontrol', 'requeue', job)
  # SLURM holds a requeued job back for two minutes; this one may start in
  # 5 s. Not at once: slurmd revokes the credentials of a job's first run,
  # and one issued in the same second would be refused with it.
  slurm.run('scontrol', 'update', f'JobId={job}', 'StartTime=now+5')
  start = time.time()
  while (state := slurm.job(job)['JobState']) != 'COMPLETED':
    assert state in ('PENDING', 'REQUEUED', 'RUNNING', 'COMPLETING'), (
        state, _log(directory)[-3000:])
    assert time.time() - start < 600
    time.sleep(0.2)
  assert f'Resumed from step {stopped}' in _log(directory)
  assert _losses(workdir) == _losses(srun_reference)
  assert_trees_equal(_params(workdir), _params(srun_reference))


def _ablate(slurm, data_dir, outdir, *flags):
  """experiments/ablate.py of 2-step runs on 1 CPU device each."""
  return subprocess.run(
      [sys.executable, os.path.join(REPO, 'experiments', 'ablate.py'),
       '--config=configs/default.py:modalities=text', f'--outdir={outdir}',
       '--config.dataset.builder_config=tiny',
       f'--config.dataset.data_dir={data_dir}',
       '--config.input.global_batch_size=8',
       '--config.input.eval_batch_size=32', '--config.num_train_steps=2',
       '--config.eval_every_steps=2', '--config.checkpoint_every_steps=2',
       '--config.optimizer.warmup_steps=1', *flags],
      capture_output=True, text=True, timeout=600, cwd=REPO,
      env={**subprocess_env(1), 'SLURM_CONF': slurm.conf})


def _submitted(slurm, done, runs):
  """Waits for the job array `done` (ablate.py's result) submitted; its
  tasks' job id -> final state."""
  assert done.returncode == 0, done.stderr[-3000:]
  job = re.search(r'Submitted SLURM job array (\d+)', done.stdout).group(1)
  return slurm.wait([f'{job}_{i}' for i in range(1, runs + 1)])


def test_ablation_grid_runs_as_a_job_array(slurm, data_dir, tmp_path):
  outdir = str(tmp_path / 'grid')
  grid = ('--grid=model.dim=16,32', '--grid=seed=0,1')
  states = _submitted(slurm, _ablate(slurm, data_dir, outdir, *grid,
                                     '--sbatch'), 4)
  assert set(states.values()) == {'COMPLETED'}
  done = _ablate(slurm, data_dir, outdir, *grid, '--report_only')
  assert done.returncode == 0, done.stderr[-3000:]
  with open(os.path.join(outdir, 'ablation.md')) as f:
    table = f.read()
  assert table.count('| finished |') == 4 and table.strip() in done.stdout
  for dim in (16, 32):
    for seed in (0, 1):
      assert os.path.exists(os.path.join(
          outdir, f'model.dim={dim},seed={seed}', 'summary.json'))
  # Every array task logged into the sweep's slurm/ directory.
  assert len([f for f in os.listdir(os.path.join(outdir, 'slurm'))
              if f.endswith('.log')]) == 4


def test_a_failed_array_task_is_named_with_its_job_id(slurm, data_dir,
                                                      tmp_path):
  outdir = str(tmp_path / 'failing')
  # A negative learning rate passes submission and fails in train.py.
  grid = ('--grid=optimizer.learning_rate=0.001,-1.0',)
  states = _submitted(slurm, _ablate(slurm, data_dir, outdir, *grid,
                                     '--sbatch'), 2)
  (good, _), (bad, bad_state) = sorted(states.items())
  assert states[good] == 'COMPLETED' and bad_state == 'FAILED'
  done = _ablate(slurm, data_dir, outdir, *grid, '--report_only')
  assert done.returncode != 0
  log = os.path.join(outdir, 'slurm', f'{bad}.log')
  assert (f'optimizer.learning_rate=-1.0 failed: SLURM job {bad} ended '
          f'FAILED without a summary. Its log: {log}') in done.stderr
  with open(log) as f:
    assert 'optimizer.learning_rate' in f.read()
  assert '1 run(s) failed: optimizer.learning_rate=-1.0' in done.stderr
