"""experiments/bench_throughput.py on the tiny triad data: a subprocess that
times 2 steps of the benchmark model and writes its JSON."""
import json
import os
import subprocess
import sys

import numpy as np

from cpu_devices import subprocess_env

REPO = os.path.join(os.path.dirname(__file__), '..')


def test_bench_throughput_writes_every_measurement(data_dir, tmp_path):
  out = tmp_path / 'throughput.json'
  small = ['--config.model.encoders.image.depth=1',
           '--config.model.encoders.audio.depth=1',
           '--config.model.encoders.text.depth=1']
  out.write_text(json.dumps([{'label': 'earlier'}]))  # A previous result.
  result = subprocess.run([
      sys.executable, os.path.join(REPO, 'experiments', 'bench_throughput.py'),
      '--config=configs/bench.py', '--config.dataset.builder_config=tiny',
      f'--config.dataset.data_dir={data_dir}',
      '--config.input.global_batch_size=4', *small,
      '--steps=2', '--warmup=1', '--peak_sizes=128,256', '--label=new',
      f'--out={out}',
  ], capture_output=True, text=True, timeout=600, env=subprocess_env(2),
      cwd=REPO)
  assert result.returncode == 0, result.stderr[-3000:]
  results = json.loads(out.read_text())
  assert [r['label'] for r in results] == ['earlier', 'new']  # Appended.
  r = results[-1]
  assert r['device'] == '2 x cpu' and r['batch_size'] == 4
  assert r['steps'] == 2 and len(r['step_seconds_all']) == 2
  assert r['step_seconds_median'] == np.median(r['step_seconds_all'])
  assert 0 < r['compile_seconds'] and 0 < r['step_seconds_median']
  assert r['examples_per_second'] == 4 / r['step_seconds_median']
  # Analytic (matmuls only) and XLA (everything, over both devices) FLOPs
  # agree roughly: the model's FLOPs are mostly matmuls.
  assert 0.5 < r['flops_per_step_analytic'] / r['flops_per_step_xla'] < 1.5
  assert r['peak_flops_per_second'] > 0
  assert r['mfu'] == (r['flops_per_step_analytic'] / r['step_seconds_median']
                      / r['peak_flops_per_second'])
  assert r['peak_memory_bytes'] > 0 and r['xla_temp_bytes'] > 0
  assert r['peak_memory_source'].startswith('getrusage')
  # The table has a row per result.
  assert result.stdout.count('| earlier |') == 1
  assert result.stdout.count('| new |') == 1
