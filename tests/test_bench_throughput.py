"""experiments/bench_throughput.py on the tiny triad data: a subprocess that
times 2 steps of the benchmark model and writes its JSON; and
experiments/bench_input.py, which times the input pipeline, the step and the
loop on the tiny scenes data."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cpu_devices import subprocess_env
from mmjax.benchmarks import throughput

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
      '--profile_steps=1', f'--out={out}',
  ], capture_output=True, text=True, timeout=600, env=subprocess_env(2),
      cwd=REPO)
  assert result.returncode == 0, result.stderr[-3000:]
  results = json.loads(out.read_text())
  assert [r['label'] for r in results] == ['earlier', 'new']  # Appended.
  r = results[-1]
  assert r['device'] == '2 x cpu' and r['batch_size'] == 4
  assert r['steps'] == 2 and len(r['step_seconds_all']) == 2
  assert r['step_seconds_median'] == np.median(r['step_seconds_all'])
  assert 0 < r['lower_seconds'] < r['compile_seconds']
  assert 0 < r['step_seconds_median']
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
  # Where the step's time goes: every traced op counted once in each view,
  # the towers' forward and backward passes told apart.
  profile = r['op_profile']
  assert profile['total'] > 0
  for view in ('by_kind', 'by_part'):
    assert sum(profile[view].values()) == pytest.approx(profile['total'])
  for part in ('image_encoder', 'audio_encoder', 'text_encoder', 'fusion'):
    assert f'{part} (forward)' in profile['by_part']
    assert f'{part} (backward)' in profile['by_part']
  assert '| XLA op kind |' in result.stdout


def test_bench_input_times_pipeline_step_and_loop(data_dir, tmp_path):
  result = subprocess.run([
      sys.executable, os.path.join(REPO, 'experiments', 'bench_input.py'),
      '--config=configs/default.py:modalities=text',
      '--config.dataset.builder_config=tiny',
      f'--config.dataset.data_dir={data_dir}',
      '--config.input.global_batch_size=8', f'--workdir={tmp_path}',
      '--batches=4', '--steps=2', '--examples=8', '--rounds=3',
  ], capture_output=True, text=True, timeout=600, env=subprocess_env(1),
      cwd=REPO)
  assert result.returncode == 0, result.stderr[-3000:]
  r = json.loads((tmp_path / 'bench_input.json').read_text())
  assert r['dataset'] == 'scenes/tiny' and r['devices'] == '1 x cpu'
  assert r['pp_train'] == 'tokenize(16)' and r['num_workers'] == 0
  # The read, the feature selection and the one op of pp_train, each timed.
  per_op = r['op_microseconds_per_example']
  assert list(per_op) == ['read', 'select', '0:Tokenize']
  assert all(v > 0 for v in per_op.values())
  for key in ('pipeline_examples_per_s', 'step_examples_per_s',
              'loop_examples_per_s'):
    assert 0 < r[key] < float('inf'), key
  assert r['ratio'] == r['pipeline_examples_per_s'] / r['step_examples_per_s']
  # Step and loop alternate in rounds; the medians are reported.
  for key in ('step_examples_per_s', 'loop_examples_per_s'):
    assert len(r['rounds'][key]) == 3
    assert r[key] == np.median(r['rounds'][key])
  assert r['loop_fraction_of_bound'] == pytest.approx(
      r['loop_examples_per_s'] / min(r['pipeline_examples_per_s'],
                                     r['step_examples_per_s']))
  assert '| 0:Tokenize |' in result.stdout  # The table of ops is printed.
  assert 'training loop (pipeline feeding the step)' in result.stdout


@pytest.mark.parametrize('text,error', [('[{"label": "a"', 'not valid JSON'),
                                        ('{"label": "a"}', 'JSON dict')])
def test_append_result_names_a_bad_file_and_keeps_it(tmp_path, text, error):
  path = tmp_path / 'throughput.json'
  path.write_text(text)
  with pytest.raises(ValueError, match=error) as e:
    throughput.append_result(str(path), {'label': 'new'})
  assert str(path) in str(e.value)
  assert path.read_text() == text  # Earlier results are never overwritten.
