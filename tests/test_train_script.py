"""experiments/train.py as a user runs it: a subprocess with flag overrides,
on each kind of dataset (scenes, digits, a manifest dataset)."""
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import soundfile

from cpu_devices import subprocess_env

REPO = os.path.join(os.path.dirname(__file__), '..')
# Two CPU devices: the sharded path, without 8 devices' worth of threads.
ENV = subprocess_env(2)


def _run(args, env=None, script='train.py'):
  return subprocess.run(
      [sys.executable, os.path.join(REPO, 'experiments', script), *args],
      capture_output=True, text=True, timeout=600, env=env, cwd=REPO)


def _summary(workdir):
  with open(os.path.join(workdir, 'summary.json')) as f:
    return json.load(f)


def test_train_script_trains_with_overrides_and_variant(data_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  result = _run([
      '--config=configs/default.py:fusion=gated,text=lstm',
      f'--workdir={workdir}',
      '--config.dataset.builder_config=tiny',
      f'--config.dataset.data_dir={data_dir}',
      '--config.input.global_batch_size=8',
      '--config.input.eval_batch_size=16',
      '--config.num_train_steps=3', '--config.eval_every_steps=3',
      '--config.log_every_steps=1', '--config.optimizer.warmup_steps=1',
  ], env=ENV)
  assert result.returncode == 0, result.stderr[-3000:]
  summary = _summary(workdir)
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


def test_digits_config_trains(data_dir, tmp_path):
  """configs/digits.py generates 'digits' into data_dir and trains on it."""
  workdir = str(tmp_path / 'run')
  result = _run([
      '--config=configs/digits.py', f'--workdir={workdir}',
      f'--config.dataset.data_dir={data_dir}',
      '--config.num_train_steps=3', '--config.eval_every_steps=3',
      '--config.optimizer.warmup_steps=1',
  ], env=ENV)
  assert result.returncode == 0, result.stderr[-3000:]
  summary = _summary(workdir)
  assert summary['final_step'] == 3
  # The whole 'digits' test split (359 examples), each counted once.
  assert summary['eval']['num_examples'] == 359


def _write_manifest(root, rng):
  """A two-class manifest ('red' / 'blue') of real PNG, WAV and text files,
  each class told apart by every modality; some rows lack a modality."""
  os.makedirs(root / 'media')
  rows = []
  for i in range(48):
    label = ('red', 'blue')[i % 2]
    row = dict(split='train' if i < 32 else 'test', label=label,
               text=f'a {label} thing number {i}')
    pixels = np.full((20, 24, 3), 40, np.uint8)
    pixels[..., 0 if label == 'red' else 2] = 220
    noise = rng.integers(0, 30, pixels.shape, dtype=np.uint8)
    Image.fromarray(pixels + noise).save(root / f'media/{i}.png')
    tone = 300 if label == 'red' else 1200  # Hz, 0.3 s at 8 kHz.
    wave = 0.5 * np.sin(2 * np.pi * tone * np.arange(2400) / 8000)
    soundfile.write(root / f'media/{i}.wav', wave, 8000)
    row.update(image=f'media/{i}.png', audio=f'media/{i}.wav')
    row.pop(('image', 'audio', 'text', None)[i % 4], None)
    rows.append(row)
  with open(root / 'manifest.jsonl', 'w') as f:
    f.writelines(json.dumps(row) + '\n' for row in rows)


def test_manifest_dataset_prepared_by_the_script_trains(tmp_path):
  _write_manifest(tmp_path, np.random.default_rng(0))
  data_dir, workdir = str(tmp_path / 'tfds'), str(tmp_path / 'run')
  result = _run([f'--manifest={tmp_path}/manifest.jsonl', '--name=colours',
                 f'--data_dir={data_dir}', '--sample_rate=8000'],
                script='prepare_dataset.py')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'train: 32, test: 16' in result.stdout
  result = _run([
      '--config=configs/manifest.py:name=colours,image_size=16,'
      'sample_rate=8000,audio_seconds=0.25,text_length=8',
      f'--workdir={workdir}', f'--config.dataset.data_dir={data_dir}',
      '--config.input.global_batch_size=8', '--config.num_train_steps=40',
      '--config.eval_every_steps=40', '--config.optimizer.warmup_steps=5',
  ], env=ENV)
  assert result.returncode == 0, result.stderr[-3000:]
  summary = _summary(workdir)
  assert summary['final_step'] == 40
  assert summary['eval']['num_examples'] == 16
  # Every modality alone tells the classes apart: the model must learn.
  assert summary['eval']['accuracy'] >= 0.9, summary['eval']
  # The SentencePiece model was trained on the train split's text and
  # stored with the dataset.
  assert any(f.startswith('sentencepiece_text_')
             for f in os.listdir(os.path.join(data_dir, 'colours', '1.0.0')))
