"""Fault injection against the real training script, run in subprocesses:
preemption by signal, SIGKILL during an asynchronous save, resume on another
mesh, corrupted checkpoints, bad data at run time and disk trouble.

The runs share one tiny config (image + text, 8 CPU devices, an fsdp mesh)
and a persistent compilation cache, so each subprocess compiles little.
"""
import functools
import glob
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow_datasets as tfds

from cpu_devices import subprocess_env
from mmjax.errors import (CheckpointCorrupt, CheckpointError,
                          CheckpointMismatch, WorkdirError)
from mmjax.train import preemption
from mmjax.train.checkpoint import (CORRUPT_PREFIX, FILES, TMP_MARKER,
                                    Checkpointer)
from mmjax.experiment import Experiment
from mmjax.train.warm_start import (merge_matching, warm_start,
                                    warm_start_sources)
from mmjax.train.workdir import LOCK_FILE, WorkdirLock
from mmjax.train.writers import read_metrics
from trees import assert_trees_equal

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
STEPS = 40  # Long enough to signal a run midway, short enough to be cheap.


@pytest.fixture(scope='module')
def cache_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('xla_cache'))


def _flags(data_dir, cache_dir, workdir, steps=STEPS, **overrides):
  """train.py flags of the tiny run; `overrides` are config fields ('__'
  nesting), e.g. checkpoint__fallback_on_corrupt=True."""
  config = dict(
      dataset__builder_config='tiny', dataset__data_dir=data_dir,
      input__global_batch_size=16, input__eval_batch_size=24,
      num_train_steps=steps, log_every_steps=1, eval_every_steps=1000,
      checkpoint_every_steps=STEPS // 2, optimizer__warmup_steps=2,
      parallel__mesh__data=1, parallel__mesh__fsdp=8,
      compilation_cache_dir=cache_dir)
  config.update(overrides)
  return ['--config=configs/default.py:fusion=concat', f'--workdir={workdir}'
          ] + [f'--config.{k.replace("__", ".")}={v}'
               for k, v in config.items()]


def _start(flags, devices=8, file_limit=None, phase=None):
  """Starts experiments/train.py with `flags` on `devices` CPU devices (with
  `phase`, through in_phase.py: e.g. SIGTERM as that phase starts).

  With `file_limit` (bytes), writing a larger file fails with EFBIG as on a
  full disk (SIGXFSZ, which a full disk does not send, is ignored); 0 only
  ignores SIGXFSZ, for a limit set later with `_fill_disk`.
  """

  def limit():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    if file_limit:
      resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

  script = ([os.path.join(REPO, 'experiments', 'train.py')] if phase is None
            else [os.path.join(REPO, 'tests', 'train', 'in_phase.py'),
                  phase])
  process = subprocess.Popen(
      [sys.executable, *script, *flags],
      cwd=REPO, env=subprocess_env(devices), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True, preexec_fn=None if file_limit is None else limit)
  _STARTED.append(process)
  return process


_STARTED = []  # Every training process a test starts.


@pytest.fixture(autouse=True)
def _kill_leftovers():
  """A failed or timed-out test leaves no training process behind."""
  yield
  while _STARTED:
    process = _STARTED.pop()
    if process.poll() is None:
      process.kill()
      process.communicate()


def _fill_disk(process, size):
  """From now on `process` cannot write a file larger than `size` bytes."""
  resource.prlimit(process.pid, resource.RLIMIT_FSIZE, (size, size))


def _run(flags, **kwargs):
  """Runs train.py to the end: (returncode, stderr)."""
  process = _start(flags, **kwargs)
  _, stderr = process.communicate(timeout=600)
  return process.returncode, stderr


def _train_steps(workdir):
  """step -> train record of the run in `workdir` (the last one written)."""
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return {}
  return {r['step']: r for r in read_metrics(workdir) if r['split'] == 'train'}


def _wait_for(predicate, process, timeout=300):
  start = time.time()
  while not predicate():
    assert process.poll() is None, process.communicate()[1][-3000:]
    assert time.time() - start < timeout
    time.sleep(0.005)


def _params(workdir, step):
  """The parameters saved at `step`, as host arrays."""
  state = ocp.StandardCheckpointer().restore(
      os.path.join(workdir, 'checkpoints', str(step), 'state'))
  return jax.tree.map(np.asarray, state['params'])


@pytest.fixture(scope='module')
def reference(data_dir, cache_dir, tmp_path_factory):
  """An uninterrupted run of STEPS steps on 8 devices with an fsdp mesh."""
  workdir = str(tmp_path_factory.mktemp('reference'))
  code, stderr = _run(_flags(data_dir, cache_dir, workdir))
  assert code == 0, stderr[-3000:]
  return workdir


def test_preemption_saves_exits_75_and_resumes_bitwise(
    reference, data_dir, cache_dir, tmp_path):
  """SIGTERM, then SIGINT, each a few steps into a run: each run saves the
  step it reached and exits with code 75; the third run finishes. Every
  train record and the final parameters equal the uninterrupted run's."""
  workdir = str(tmp_path)
  flags = _flags(data_dir, cache_dir, workdir)
  stopped = []
  for sig in (signal.SIGTERM, signal.SIGINT):
    begin = max(_train_steps(workdir), default=0)
    process = _start(flags)
    _wait_for(lambda: max(_train_steps(workdir), default=0) >= begin + 3,
              process)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == preemption.EXIT_CODE, stderr[-3000:]
    step = max(int(s) for s in os.listdir(os.path.join(workdir,
                                                       'checkpoints')))
    assert begin + 3 <= step < STEPS
    assert (f'{sig.name} received: checkpointed step {step} and stopped; '
            'run the same command again to resume.') in stderr
    stopped.append(step)
  code, stderr = _run(flags)
  assert code == 0, stderr[-3000:]
  assert f'Resumed from step {stopped[-1]}' in stderr
  assert stopped[0] < stopped[1]
  # Records of steps trained twice (after the last save, before the
  # signal) are written twice; the last one is the resumed run's.
  assert _train_steps(workdir) == _train_steps(reference)
  assert_trees_equal(_params(workdir, STEPS), _params(reference, STEPS))


def _final_state_matches(workdir, reference):
  """Train records and final parameters equal the uninterrupted run's."""
  assert _train_steps(workdir) == _train_steps(reference)
  assert_trees_equal(_params(workdir, STEPS), _params(reference, STEPS))


def _eval_records(workdir):
  return [r for r in read_metrics(workdir) if r['split'] == 'eval']


def test_sigkill_during_async_save_resumes_bitwise(
    reference, data_dir, cache_dir, tmp_path):
  """A run saving every step is killed while a save is being written: the
  rerun of the same command removes the temporary directory, resumes from
  the latest visible step and ends bitwise equal to the uninterrupted run."""
  workdir = str(tmp_path)
  checkpoints = os.path.join(workdir, 'checkpoints')
  flags = _flags(data_dir, cache_dir, workdir, checkpoint_every_steps=1)

  def saving():
    names = os.listdir(checkpoints) if os.path.isdir(checkpoints) else []
    return (any(n.isdigit() for n in names) and
            any(TMP_MARKER in n for n in names))

  process = _start(flags)
  _wait_for(saving, process)
  process.kill()
  process.communicate()
  leftovers = glob.glob(os.path.join(checkpoints, f'*{TMP_MARKER}*'))
  assert leftovers  # The kill caught a save in the middle.
  latest = max(int(n) for n in os.listdir(checkpoints) if n.isdigit())
  assert latest < STEPS

  code, stderr = _run(flags)
  assert code == 0, stderr[-3000:]
  assert f'Resumed from step {latest}' in stderr
  assert 'left by a save that did not finish' in stderr
  assert f'Taking over {os.path.join(workdir, LOCK_FILE)}' in stderr
  assert not glob.glob(os.path.join(checkpoints, f'*{TMP_MARKER}*'))
  _final_state_matches(workdir, reference)


def test_step_of_a_killed_run_is_verified(reference, data_dir, cache_dir,
                                          tmp_path):
  """A run killed right after its first save committed has that step's size
  record (it commits with the step), so truncating the step's largest array
  file makes the next restore fail naming the file; with fallback, the run
  (every step corrupt) raises and leaves the step as it was."""
  workdir = str(tmp_path)
  step_dir = os.path.join(workdir, 'checkpoints', str(STEPS // 2))
  flags = _flags(data_dir, cache_dir, workdir)
  process = _start(flags)
  _wait_for(lambda: os.path.isdir(step_dir), process)
  process.kill()
  process.communicate()
  assert os.path.exists(os.path.join(step_dir, FILES))
  assert sorted(n for n in os.listdir(os.path.dirname(step_dir))
                if n.isdigit()) == [str(STEPS // 2)]
  path = max(glob.glob(os.path.join(step_dir, 'state', '*', 'd', '*')),
             key=os.path.getsize)
  with open(path, 'r+b') as f:
    f.truncate(os.path.getsize(path) // 2)
  before = _tree_digest(step_dir)

  with open(os.path.join(reference, 'config.json')) as f:
    experiment = _experiment(f.read(), 1, (('data', 1), ('fsdp', 1),
                                           ('tensor', 1)))
  checkpointer = experiment.make_checkpointer(workdir)
  with pytest.raises(CheckpointCorrupt) as error:
    checkpointer.restore_latest(experiment.runner.restore_target())
  checkpointer.close()
  assert (error.value.step, error.value.path) == (STEPS // 2, path)
  code, stderr = _run(flags + ['--config.checkpoint.fallback_on_corrupt=True'])
  assert code != 0
  assert (f'every checkpoint step ({STEPS // 2}) is corrupt, so there is '
          'nothing to resume from' in stderr), stderr[-3000:]
  assert f'checkpoint step {STEPS // 2}: {path}: has ' in stderr
  assert _tree_digest(step_dir) == before
  assert not os.path.exists(os.path.join(workdir, 'summary.json'))


def test_changed_config_fails_at_start_and_keeps_the_checkpoints(
    reference, data_dir, cache_dir, tmp_path):
  """Rerunning a workdir with another model.dim (and the fallback flag) fails
  in its first seconds naming the field; no step is renamed or touched."""
  workdir = str(tmp_path / 'run')
  shutil.copytree(reference, workdir)
  checkpoints = os.path.join(workdir, 'checkpoints')
  before = _tree_digest(checkpoints)
  with open(os.path.join(reference, 'config.json')) as f:
    dim = json.load(f)['model']['dim']
  start = time.time()
  code, stderr = _run(_flags(data_dir, cache_dir, workdir) + [
      f'--config.model.dim={dim // 2}',
      '--config.checkpoint.fallback_on_corrupt=True'])
  seconds = time.time() - start
  assert code != 0
  assert (f'WorkdirError: workdir {workdir}: holds the checkpoints of a run '
          'with another config' in stderr), stderr[-3000:]
  assert f'model.dim: {dim} (stored) -> {dim // 2} (now)' in stderr
  assert 'warm_start_from' in stderr
  assert _tree_digest(checkpoints) == before, f'{seconds:.1f} s'
  assert not os.path.exists(os.path.join(workdir, LOCK_FILE))


def test_state_that_does_not_fit_is_a_mismatch_never_set_aside(
    reference, tmp_path):
  """A checkpoint restored into another model raises CheckpointMismatch
  naming the differing leaf, even with fallback_on_corrupt."""
  workdir = str(tmp_path / 'run')
  shutil.copytree(reference, workdir)
  with open(os.path.join(reference, 'config.json')) as f:
    config = json.load(f)
  config['model']['dim'] //= 2
  experiment = _experiment(json.dumps(config), 1, (('data', 1), ('fsdp', 1),
                                                   ('tensor', 1)))
  checkpointer = Checkpointer(
      os.path.join(workdir, 'checkpoints'), keep_last=2, keep_best=0,
      best_metric='accuracy', best_mode='max', fallback_on_corrupt=True)
  with pytest.raises(CheckpointMismatch) as error:
    checkpointer.restore_latest(experiment.runner.restore_target())
  checkpointer.close()
  assert error.value.step == STEPS
  assert re.search(r'params/\S+: saved float32\[[^]]*\b64\b[^]]*\], this '
                   r'run float32\[[^]]*\b32\b', str(error.value)), str(
                       error.value)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == sorted(
      os.listdir(os.path.join(reference, 'checkpoints')))


def test_warm_start_loads_matching_arrays_and_lists_the_rest(reference):
  with open(os.path.join(reference, 'config.json')) as f:
    experiment = _experiment(f.read(), 1, (('data', 1), ('fsdp', 1),
                                           ('tensor', 1)))
  fresh = experiment.runner.init(experiment.init_rng)
  state = warm_start(fresh, [reference])
  assert_trees_equal(jax.tree.map(np.asarray, state.params),
                     _params(reference, STEPS))
  assert int(state.step) == 0  # A new run: step and optimizer start afresh.
  assert_trees_equal(state.opt_state, fresh.opt_state)
  # A leaf whose shape differs keeps its fresh value and is listed.
  tree = {'a': jnp.zeros((2,)), 'b': jnp.zeros((3,))}
  merged, kept = merge_matching(tree, {'a': np.ones(2, np.float32),
                                      'b': np.ones(4, np.float32)})
  assert kept == ['b']
  assert_trees_equal(merged, {'a': np.ones(2, np.float32),
                              'b': np.zeros(3, np.float32)})


def test_warm_start_from_several_runs_takes_each_array_from_the_first(
    reference, tmp_path):
  """Two runs that both hold every array: the one listed first gives them."""
  early = str(tmp_path / 'early')  # The same run, its step STEPS // 2.
  shutil.copytree(reference, early)
  shutil.rmtree(os.path.join(early, 'checkpoints', str(STEPS)))
  with open(os.path.join(reference, 'config.json')) as f:
    experiment = _experiment(f.read(), 1, (('data', 1), ('fsdp', 1),
                                           ('tensor', 1)))
  fresh = experiment.runner.init(experiment.init_rng)
  for runs, step in (([early, reference], STEPS // 2),
                     ([reference, early], STEPS)):
    state = warm_start(fresh, runs)
    assert_trees_equal(jax.tree.map(np.asarray, state.params),
                       _params(runs[0], step))
  assert not np.array_equal(*(jax.tree.leaves(_params(r, s))[0] for r, s in
                              ((early, STEPS // 2), (reference, STEPS))))
  assert warm_start_sources(f' {early}, {reference} ,') == [early, reference]


def test_sigterm_in_every_phase_exits_75_and_resumes_bitwise(
    reference, data_dir, cache_dir, tmp_path):
  """SIGTERM as the dataset preparation starts, during the evaluation of a
  step, as the restore starts, and (another workdir) during the final save:
  each run exits 75; the rerun ends bitwise equal to an uninterrupted run.
  While the last run trains, a second trainer on its workdir is refused
  within 5 s naming the holder's PID."""
  workdir = str(tmp_path / 'a')
  flags = _flags(data_dir, cache_dir, workdir, eval_every_steps=STEPS // 2)
  checkpoints = os.path.join(workdir, 'checkpoints')

  def stopped(phase, message):
    code, stderr = _run(flags, phase=phase)
    assert code == preemption.EXIT_CODE, stderr[-3000:]
    assert f'SIGTERM received: {message} and stopped; run the same command ' \
        'again to resume.' in stderr, stderr[-3000:]
    assert not os.path.exists(os.path.join(workdir, LOCK_FILE))
    return stderr

  stopped('prepare', 'nothing new to checkpoint during dataset preparation '
          '(no checkpoint yet)')
  assert not os.path.exists(checkpoints)
  stopped('evaluate', f'checkpointed step {STEPS // 2}')
  assert os.listdir(checkpoints) == [str(STEPS // 2)]
  assert not _eval_records(workdir)
  stopped('restore', 'nothing new to checkpoint during restore (the '
          f'checkpoint of step {STEPS // 2} holds the progress)')

  # The last run pauses after its restore, holding the workdir, while a
  # second trainer tries it; the same command without --workdir fails after
  # the same imports, the time every mmjax process pays before it can act.
  hold = tmp_path / 'hold'
  hold.mkdir()
  process = _start(flags, phase=f'pause:{hold}')
  _wait_for((hold / 'paused').exists, process)
  start = time.time()
  code, stderr = _run(flags)
  seconds = time.time() - start
  assert code != 0
  assert (f'is in use by another trainer: PID {process.pid} on host'
          in stderr), stderr[-3000:]
  start = time.time()
  _run(flags[:1])
  imports = time.time() - start
  # 5 s on an idle machine; a loaded one (the suite runs two workers on two
  # cores) slows the imports of both processes alike.
  assert seconds < max(5, 1.5 * imports + 1), (
      f'refused after {seconds:.1f} s; the imports alone take {imports:.1f} s')
  (hold / 'resume').touch()
  _, stderr = process.communicate(timeout=600)
  assert process.returncode == 0, stderr[-3000:]
  _final_state_matches(workdir, reference)
  # The interrupted evaluation ran once, on resume; the last equals the
  # uninterrupted run's.
  assert [r['step'] for r in _eval_records(workdir)] == [STEPS // 2, STEPS]
  assert _eval_records(workdir)[-1] == _eval_records(reference)[-1]

  workdir = str(tmp_path / 'b')
  flags = _flags(data_dir, cache_dir, workdir)
  stopped('final_save', f'checkpointed step {STEPS}')
  assert not os.path.exists(os.path.join(workdir, 'summary.json'))
  code, stderr = _run(flags)
  assert code == 0, stderr[-3000:]
  _final_state_matches(workdir, reference)
  with open(os.path.join(workdir, 'summary.json')) as f, open(
      os.path.join(reference, 'summary.json')) as g:
    assert json.load(f)['eval'] == json.load(g)['eval']


def test_second_signal_during_the_save_kills_at_once(data_dir, cache_dir,
                                                     tmp_path):
  """After the first SIGTERM the run saves; a second one, while that save is
  being written, terminates the process without waiting for it."""
  workdir = str(tmp_path)
  code, stderr = _run(_flags(data_dir, cache_dir, workdir, steps=4,
                             checkpoint_every_steps=2), phase='twice')
  assert code == -signal.SIGTERM, stderr[-3000:]
  assert 'checkpointed step' not in stderr
  assert 'Preempted' not in stderr


def test_stale_lock_is_taken_over_and_a_live_one_refused(tmp_path, caplog):
  path = tmp_path / LOCK_FILE
  dead = subprocess.Popen([sys.executable, '-c', 'pass'])
  dead.wait()
  path.write_text(json.dumps(dict(host=os.uname().nodename, pid=dead.pid,
                                  started='then')))
  with WorkdirLock(str(tmp_path)):
    assert json.loads(path.read_text())['pid'] == os.getpid()
    with pytest.raises(WorkdirError, match=f'PID {os.getpid()} on host'):
      WorkdirLock(str(tmp_path)).__enter__()
  assert f'PID {dead.pid} started then, is no longer running' in caplog.text
  assert not path.exists()  # Released on exit.


@functools.lru_cache(maxsize=None)
def _experiment(config_json, devices, mesh):
  import ml_collections  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict(json.loads(config_json))
  config.parallel.mesh = dict(mesh)
  return Experiment(config, devices=jax.devices()[:devices])


@pytest.mark.parametrize('devices,mesh', [
    (4, (('data', 2), ('fsdp', 2), ('tensor', 1))),
    (2, (('data', 2), ('fsdp', 1), ('tensor', 1))),
    (1, (('data', 1), ('fsdp', 1), ('tensor', 1))),
    (8, (('data', 2), ('fsdp', 1), ('tensor', 4))),
])
def test_checkpoint_restores_on_another_mesh(reference, devices, mesh):
  """The 8-device fsdp checkpoint restores into the shardings of 4, 2 and 1
  devices and of a data x tensor mesh, with equal values, and trains on."""
  with open(os.path.join(reference, 'config.json')) as f:
    experiment = _experiment(f.read(), devices, mesh)
  runner = experiment.runner
  checkpointer = experiment.make_checkpointer(reference, read_only=True)
  state = checkpointer.restore(STEPS, runner.restore_target())
  checkpointer.close()
  for x, sharding in zip(jax.tree.leaves(state),
                         jax.tree.leaves(runner.state_sharding)):
    assert x.sharding.is_equivalent_to(sharding, x.ndim)
  assert_trees_equal(jax.tree.map(np.asarray, state.params),
                     _params(reference, STEPS))
  state, metrics = runner.train_step(state, next(experiment.train_iterator()))
  assert int(state.step) == STEPS + 1
  assert np.isfinite(runner.fetch(metrics)['loss'])


def test_pmap_restores_a_checkpoint_of_other_devices(reference):
  """The 8-device fsdp checkpoint restores under pmap over 2 devices (and
  so does a pmap checkpoint: its state is saved from one device)."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  with open(os.path.join(reference, 'config.json')) as f:
    config = ml_collections.ConfigDict(json.load(f))
  config.parallel.mode = 'pmap'
  config.parallel.mesh = dict(data=-1, fsdp=1, tensor=1)
  experiment = Experiment(config, devices=jax.devices()[:2])
  runner = experiment.runner
  checkpointer = experiment.make_checkpointer(reference, read_only=True)
  state = runner.from_checkpoint(
      checkpointer.restore(STEPS, runner.restore_target()))
  checkpointer.close()
  assert_trees_equal(jax.tree.map(np.asarray,
                                  runner.to_checkpoint(state).params),
                     _params(reference, STEPS))
  state, metrics = runner.train_step(state, next(experiment.train_iterator()))
  assert np.isfinite(runner.fetch(metrics)['loss'])


def _corrupt_copy(reference, tmp_path, how):
  """A copy of the reference run whose step STEPS is damaged by `how` (step
  STEPS / 2 stays good); returns (workdir, the damaged path)."""
  workdir = str(tmp_path / how)
  shutil.copytree(reference, workdir)
  step_dir = os.path.join(workdir, 'checkpoints', str(STEPS))
  if how == 'truncated':
    path = max(glob.glob(os.path.join(step_dir, 'state', '*', 'd', '*')),
               key=os.path.getsize)
    with open(path, 'r+b') as f:
      f.truncate(os.path.getsize(path) // 2)
  elif how == 'deleted':
    path = max(glob.glob(os.path.join(step_dir, 'state', '*', 'd', '*')),
               key=os.path.getsize)
    os.remove(path)
  elif how == 'metadata':
    path = os.path.join(step_dir, 'state', '_METADATA')
    os.remove(path)
  else:  # A temporary item directory: the step's save never completed.
    path = os.path.join(step_dir, f'state{TMP_MARKER}-1234')
    os.makedirs(path)
  return workdir, path


@pytest.mark.parametrize('how', ['truncated', 'deleted', 'metadata', 'tmp'])
def test_corrupt_checkpoint_error_names_step_and_file(reference, tmp_path,
                                                      how):
  workdir, path = _corrupt_copy(reference, tmp_path, how)
  with open(os.path.join(reference, 'config.json')) as f:
    experiment = _experiment(f.read(), 1, (('data', 1), ('fsdp', 1),
                                           ('tensor', 1)))
  checkpointer = experiment.make_checkpointer(workdir)
  start = time.time()
  with pytest.raises(CheckpointError) as error:
    checkpointer.restore_latest(experiment.runner.restore_target())
  assert time.time() - start < 10
  assert error.value.step == STEPS and error.value.path == path
  assert f'checkpoint step {STEPS}: {path}: ' in str(error.value)
  assert 'fallback_on_corrupt' in str(error.value)
  checkpointer.close()


def test_training_falls_back_to_previous_step_when_asked(
    reference, data_dir, cache_dir, tmp_path):
  """Training from a corrupt latest step fails naming it; with the fallback
  flag it resumes from the previous step, here on 2 devices with a tensor
  mesh: the 8-device fsdp run goes on on another mesh."""
  workdir, path = _corrupt_copy(reference, tmp_path, 'truncated')
  flags = _flags(data_dir, cache_dir, workdir, steps=STEPS + 1,
                 parallel__mesh__fsdp=1, parallel__mesh__tensor=2)
  code, stderr = _run(flags, devices=2)
  assert code != 0
  assert f'CheckpointCorrupt: checkpoint step {STEPS}: {path}: has ' in stderr

  code, stderr = _run(flags + ['--config.checkpoint.fallback_on_corrupt=True'],
                      devices=2)
  assert code == 0, stderr[-3000:]
  assert 'Falling back to the previous step' in stderr
  assert f'Resumed from step {STEPS // 2}' in stderr
  names = os.listdir(os.path.join(workdir, 'checkpoints'))
  assert any(n.startswith(f'{CORRUPT_PREFIX}{STEPS}-') for n in names)
  assert str(STEPS + 1) in names
  # The first step after the restore: same state, same batch, another mesh.
  step = STEPS // 2 + 1
  np.testing.assert_allclose(_train_steps(workdir)[step]['loss'],
                             _train_steps(reference)[step]['loss'], rtol=1e-5)


def test_batch_of_wrong_shape_or_dtype_names_the_modality(reference):
  with open(os.path.join(reference, 'config.json')) as f:
    experiment = _experiment(f.read(), 1, (('data', 1), ('fsdp', 1),
                                           ('tensor', 1)))
  batch = next(experiment.train_iterator())
  state = experiment.runner.init(experiment.init_rng)
  image = batch['image']
  expected = f'float32[batch, {", ".join(map(str, image.shape[1:]))}]'
  for bad in (image[:, :-1], image.astype(np.float64)):
    with pytest.raises(ValueError) as error:
      experiment.runner.train_step(state, {**batch, 'image': bad})
    assert str(error.value).startswith(
        f"'image': a batch holds {bad.dtype}{list(bad.shape)}; the model "
        f'expects {expected}')


def test_workdir_that_cannot_be_written_fails_at_start(
    data_dir, cache_dir, tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('not a directory')
  code, stderr = _run(_flags(data_dir, cache_dir, str(blocker / 'run')))
  assert code != 0
  assert f'WorkdirError: workdir {blocker / "run"}: cannot be created' in (
      stderr)
  # A file-size limit below one checkpoint: the disk is "full" for it.
  workdir = tmp_path / 'full'
  code, stderr = _run(_flags(data_dir, cache_dir, str(workdir)),
                      file_limit=100_000)
  assert code != 0
  assert f'WorkdirError: workdir {workdir}: is not writable: writing a ' in (
      stderr)
  assert not (workdir / 'metrics.jsonl').exists()  # Before training.


def test_failed_save_stops_the_run_naming_the_step(data_dir, cache_dir,
                                                   tmp_path):
  """The disk fills while the run trains: the next asynchronous save fails in
  Orbax's thread, and the main thread raises it (at the first log step after
  the failure) instead of training on unsaved.

  Which save is the first to fail depends on how far the run got before the
  test set the limit (a loaded machine may let it pass a checkpoint step), so
  the test reads the step from the error and checks everything against it.
  """
  workdir = str(tmp_path)
  every = STEPS // 2
  # Far more steps than the run makes before the limit bites, so that a
  # slow poll cannot let it finish first.
  process = _start(_flags(data_dir, cache_dir, workdir, steps=50 * every,
                          checkpoint_every_steps=every), file_limit=0)
  _wait_for(lambda: max(_train_steps(workdir), default=0) >= 3, process)
  _fill_disk(process, 100_000)  # Below the largest checkpoint file.
  _, stderr = process.communicate(timeout=300)
  assert process.returncode != 0
  directory = os.path.join(workdir, 'checkpoints')
  error = re.search(rf'CheckpointError: checkpoint step (\d+): '
                    rf'{re.escape(directory)}/(\d+): saving failed: ', stderr)
  assert error and error[1] == error[2], stderr[-4000:]
  failed = int(error[1])
  assert failed % every == 0
  assert 'File too large' in stderr
  # Raised at a log step or, at the latest, before the next save starts.
  assert max(_train_steps(workdir)) <= failed + every
  assert not os.path.exists(os.path.join(workdir, 'summary.json'))
  assert all(int(n) < failed for n in os.listdir(directory) if n.isdigit())


def test_save_into_a_vanished_directory_raises(tmp_path):
  """Orbax would wait forever for the temporary directory it cannot make."""
  directory = tmp_path / 'checkpoints'
  checkpointer = Checkpointer(str(directory), keep_last=1, keep_best=0,
                              best_metric='accuracy', best_mode='max')
  directory.rmdir()
  directory.write_text('storage gone')
  data = iter(grain.MapDataset.range(3).to_iter_dataset())
  with pytest.raises(CheckpointError, match='checkpoint step 1: .*is gone'):
    checkpointer.save(1, {'w': np.zeros(2)}, data)


def _tree_digest(directory):
  """Relative path -> (size, mtime) of every file under `directory`."""
  return {os.path.relpath(os.path.join(root, n), directory):
          (os.path.getsize(os.path.join(root, n)),
           os.path.getmtime(os.path.join(root, n)))
          for root, _, names in os.walk(directory) for n in names}


def test_evaluate_script_any_step_any_modalities_read_only(reference,
                                                           tmp_path):
  checkpoints = os.path.join(reference, 'checkpoints')
  before = _tree_digest(checkpoints)
  output = tmp_path / 'eval.json'
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, 'experiments', 'evaluate.py'),
       f'--workdir={reference}', f'--output={output}',
       '--modalities=image,text', '--modalities=text'],
      cwd=REPO, env=subprocess_env(8), capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  results = json.loads(output.read_text())
  assert results['step'] == STEPS
  both, text = results['evaluations']
  assert both['modalities'] == ['image', 'text']
  assert text['modalities'] == ['text']
  trained = [r for r in read_metrics(reference) if r['split'] == 'eval'][-1]
  assert trained['step'] == STEPS
  for name, value in both['metrics'].items():
    assert value == pytest.approx(trained[name], rel=1e-6), name
  assert text['metrics']['num_examples'] == both['metrics']['num_examples']
  assert text['metrics'] != both['metrics']
  assert _tree_digest(checkpoints) == before  # Nothing written or removed.

  result = subprocess.run(
      [sys.executable, os.path.join(REPO, 'experiments', 'evaluate.py'),
       f'--workdir={reference}', '--step=7'],
      cwd=REPO, env=subprocess_env(8), capture_output=True, text=True, timeout=600)
  assert result.returncode != 0
  assert (f'has no checkpoint of step 7; saved steps: [{STEPS // 2}, '
          f'{STEPS}]') in result.stderr


class OddSizes(tfds.core.GeneratorBasedBuilder):
  """A catalog-style dataset whose test images are larger than its train
  images, as when a user forgets a resize op."""
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
        {'image': tfds.features.Tensor(shape=(None, 16, 3), dtype=np.uint8),
         'label': tfds.features.ClassLabel(num_classes=2)}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples(16, 16),
            'test': self._generate_examples(8, 20)}

  def _generate_examples(self, num, height):
    rng = np.random.default_rng(height)
    for i in range(num):
      yield i, {'image': rng.integers(0, 255, (height, 16, 3), np.uint8),
                'label': i % 2}


def test_batch_of_the_wrong_shape_stops_the_run_naming_the_modality(
    tmp_path, cache_dir):
  """The run trains on 16 x 16 images; the first evaluation meets 20 x 16
  ones and fails naming 'image' and the shape the model was built for."""
  data_dir = str(tmp_path / 'tfds')
  OddSizes(data_dir=data_dir, file_format='array_record').download_and_prepare()
  code, stderr = _run([
      '--config=configs/default.py:modalities=image,label=label,fusion=concat',
      f'--workdir={tmp_path / "run"}', '--config.dataset.name=odd_sizes',
      f'--config.dataset.data_dir={data_dir}',
      '--config.input.global_batch_size=8', '--config.input.eval_batch_size=8',
      '--config.num_train_steps=2', '--config.eval_every_steps=2',
      '--config.optimizer.warmup_steps=1',
      f'--config.compilation_cache_dir={cache_dir}'], devices=1)
  assert code != 0
  assert ("ValueError: 'image': a batch holds float32[8, 20, 16, 3]; the "
          'model expects float32[batch, 16, 16, 3]') in stderr
  assert max(_train_steps(str(tmp_path / 'run'))) == 2
