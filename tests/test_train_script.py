"""experiments/train.py as a user runs it: a subprocess with flag overrides."""
import json
import os
import subprocess
import sys

REPO = os.path.join(os.path.dirname(__file__), '..')


def _run(args, env=None):
  return subprocess.run(
      [sys.executable, os.path.join(REPO, 'experiments', 'train.py'), *args],
      capture_output=True, text=True, timeout=600, env=env, cwd=REPO)


def test_train_script_trains_with_overrides_and_variant(data_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=2'}
  result = _run([
      '--config=configs/default.py:fusion=gated,text=lstm',
      f'--workdir={workdir}',
      '--config.dataset.builder_config=tiny',
      f'--config.dataset.data_dir={data_dir}',
      '--config.input.global_batch_size=8',
      '--config.input.eval_batch_size=16',
      '--config.num_train_steps=3', '--config.eval_every_steps=3',
      '--config.log_every_steps=1', '--config.optimizer.warmup_steps=1',
  ], env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(os.path.join(workdir, 'summary.json')) as f:
    summary = json.load(f)
  assert summary['final_step'] == 3 and summary['devices'] == 2
  with open(os.path.join(workdir, 'config.json')) as f:
    config = json.load(f)
  assert config['model']['fusion']['name'] == 'gated'
  assert config['model']['encoders']['text']['name'] == 'lstm'
  assert 'Model:' in result.stderr  # mmjax's own INFO log is kept.


def test_train_script_rejects_unknown_field_and_bad_value(tmp_path):
  workdir = str(tmp_path / 'run')
  result = _run(['--config=configs/default.py', f'--workdir={workdir}',
                 '--config.optimizer.learning_rat=0.1'])
  assert result.returncode != 0
  assert 'learning_rat' in result.stderr
  result = _run(['--config=configs/default.py', f'--workdir={workdir}',
                 '--config.model.fusion.name=magic'])
  assert result.returncode != 0
  assert 'config.model.fusion.name' in result.stderr
  assert 'cross_attention' in result.stderr
  assert not os.path.exists(workdir)
