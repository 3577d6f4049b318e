"""Sweeps (mmjax/sweeps/), experiments/ablate.py and the fusion benchmark
(mmjax/benchmarks/fusion.py): resumable runs, commands for schedulers, the
report's statistics and files."""
import csv
import json
import os
import shlex
import subprocess
import sys

from absl import flags
from ml_collections import config_flags
import numpy as np
from PIL import Image
import pytest

from cpu_devices import subprocess_env
from mmjax.benchmarks import fusion as fusion_benchmark
from mmjax.benchmarks import throughput
from mmjax.errors import ConfigError
from mmjax.models.fusion import base as fusion_base
from mmjax.sweeps import launch
from mmjax.sweeps import overrides
from mmjax.sweeps import runs as sweep_runs

REPO = os.path.join(os.path.dirname(__file__), '..')
# Text only: the cheapest model to compile; the benchmark's mechanics do not
# depend on the modalities.
CONFIG = os.path.join(REPO, 'configs', 'default.py') + ':modalities=text'


def tiny(data_dir):
  """Overrides of 2-step runs on the tiny 'scenes' data (make_config's)."""
  return {'dataset.builder_config': 'tiny', 'dataset.data_dir': data_dir,
          'input.global_batch_size': 8, 'input.eval_batch_size': 32,
          'num_train_steps': 2, 'log_every_steps': 2, 'eval_every_steps': 2,
          'checkpoint_every_steps': 2, 'optimizer.warmup_steps': 1}


def read_csv(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def test_mean_ci_hand_case():
  # mean 2.5, s = sqrt(5/3), t(0.975, 3 dof) = 3.18245 from a t table:
  # 3.18245 * sqrt(5/3) / sqrt(4) = 2.05426.
  mean, ci = fusion_benchmark.mean_ci([1.0, 2.0, 3.0, 4.0])
  assert mean == 2.5
  assert ci == pytest.approx(2.05426, rel=1e-5)
  assert fusion_benchmark.mean_ci([0.7]) == (0.7, None)  # No interval.


def test_bad_override_errors_before_anything_runs(tmp_path):
  outdir = str(tmp_path / 'out')
  with pytest.raises(ConfigError, match='learning_rate') as e:
    sweep_runs.make_runs(CONFIG, [{'seed': 0}, {'optimizer.learning_rat': 0.1}])
  assert e.value.field == 'optimizer.learning_rat'
  with pytest.raises(ConfigError, match='one') as e:
    sweep_runs.make_runs(CONFIG, [{'seed': 'one'}])  # An int field.
  assert e.value.field == 'seed'
  # The benchmark checks every run's config before training any.
  with pytest.raises(ConfigError) as e:
    fusion_benchmark.run_benchmark(
        CONFIG, fusion_benchmark.parse_variants('late,concat:no_knob=1'),
        [0], outdir, train_script='unused')
  assert e.value.field == 'model.fusion.no_knob'
  assert not os.path.exists(outdir)


def test_variants_parse_methods_and_knobs():
  variants = fusion_benchmark.parse_variants(
      'concat,mbt:fusion_layer=1,num_bottlenecks=4,gated:model.dim=8')
  assert [v.label for v in variants] == [
      'concat', 'mbt:fusion_layer=1,num_bottlenecks=4', 'gated:model.dim=8']
  assert variants[1].settings == {':fusion': 'mbt',
                                  'model.fusion.fusion_layer': '1',
                                  'model.fusion.num_bottlenecks': '4'}
  assert variants[2].settings == {':fusion': 'gated', 'model.dim': '8'}


def _parse_train_command(line):
  """experiments/train.py's flags of a command, parsed as train.py does."""
  argv = shlex.split(line)
  flag_values = flags.FlagValues()
  config = config_flags.DEFINE_config_file(
      'config', flag_values=flag_values, sys_argv=argv[1:], lock_config=True)
  workdir = flags.DEFINE_string('workdir', None, '', flag_values=flag_values)
  flag_values(argv[1:])
  return argv, config.value, workdir.value


def test_commands_job_array_and_report_only_run_nothing(tmp_path, capsys):
  outdir, job_array = str(tmp_path / 'out'), str(tmp_path / 'jobs.txt')
  settings = overrides.grid({'model.fusion.name': ['concat', 'gated'],
                         'seed': [0, 1]})
  runs = sweep_runs.make_runs(CONFIG, settings, {'num_train_steps': 7})
  result = launch.launch(runs, outdir, train_script='experiments/train.py',
                        print_commands=True, job_array=job_array,
                        python='python')
  assert result is None  # Nothing ran.
  printed = capsys.readouterr().out.splitlines()[:len(runs)]
  with open(job_array) as f:
    lines = f.read().splitlines()
  assert lines == printed and len(lines) == 4
  workdirs = set()
  for line, expected in zip(lines, settings):
    argv, config, workdir = _parse_train_command(line)
    assert argv[:2] == ['python', 'experiments/train.py']
    assert config.model.fusion.name == expected['model.fusion.name']
    assert config.seed == expected['seed'] and config.num_train_steps == 7
    assert os.path.dirname(workdir) == outdir
    workdirs.add(workdir)
  assert len(workdirs) == 4
  # Each run got its own method's knobs (through the config variant).
  for line, expected in zip(lines, settings):
    name = expected['model.fusion.name']
    assert set(_parse_train_command(line)[1].model.fusion) == set(
        fusion_base.default_config(name))
  assert not os.path.exists(outdir)
  # While a scheduler runs them, --report_only tables them as pending.
  statuses = launch.launch(runs, outdir, train_script='experiments/train.py',
                          report_only=True)
  assert statuses == {r.name: sweep_runs.PENDING for r in runs}
  assert sweep_runs.write_summary(runs, outdir, statuses).count(
      '| pending |') == 4
  assert sorted(os.listdir(outdir)) == ['ablation.csv', 'ablation.md']


def test_torn_summary_counts_as_pending_with_a_warning(tmp_path, caplog):
  outdir = str(tmp_path)
  finished, torn = sweep_runs.make_runs(CONFIG,
                                        overrides.grid({'seed': [0, 1]}))
  for run, text in ((finished, '{"final_step": 2, "eval": {}}'),
                    (torn, '{"final_step": 2, "ev')):  # Killed mid-write.
    os.makedirs(run.workdir(outdir))
    with open(os.path.join(run.workdir(outdir), sweep_runs.SUMMARY_FILE),
              'w') as f:
      f.write(text)
  with caplog.at_level('WARNING', logger='absl'):
    assert sweep_runs.pending([finished, torn], outdir) == [torn]
  assert 'summary.json is unreadable' in caplog.text


def test_fusion_benchmark_report_and_resume(data_dir, tmp_path, monkeypatch):
  outdir = str(tmp_path / 'bench')
  variants = fusion_benchmark.parse_variants('concat,late')
  # 'late' was measured before (its bench JSON is kept and reused); 'concat'
  # is measured now.
  os.makedirs(os.path.join(outdir, 'bench'))
  with open(os.path.join(outdir, 'bench', 'fusion=late.json'), 'w') as f:
    json.dump({'batch_size': 8, 'flops_per_step_xla': 800.0,
               'examples_per_second': 100.0, 'xla_argument_bytes': 1000,
               'xla_temp_bytes': 24, 'compile_seconds': 1.5}, f)
  kwargs = dict(base_overrides=tiny(data_dir), bench_steps=1, bench_warmup=0,
                train_script='unused', progress=False)
  rows, table, failed = fusion_benchmark.run_benchmark(
      CONFIG, variants, [0, 1], outdir, **kwargs)
  assert not failed
  results = read_csv(os.path.join(outdir, 'results.csv'))
  assert [r['variant'] for r in results] == ['concat', 'late']
  assert [float(results[1][k]) for k in (
      'flops_per_example', 'examples_per_second', 'step_memory_bytes',
      'compile_seconds')] == [100.0, 100.0, 1024, 1.5]
  # The XLA figures of a real measurement: FLOPs of the 8-example step.
  with open(os.path.join(outdir, 'bench', 'fusion=concat.json')) as f:
    measured = json.load(f)
  assert float(results[0]['flops_per_example']) == pytest.approx(
      measured['flops_per_step_xla'] / 8)
  for row, variant in zip(results, variants):
    accuracies = []
    for seed in (0, 1):
      name = sweep_runs.run_name({**variant.settings, 'seed': seed})
      with open(os.path.join(outdir, name, 'summary.json')) as f:
        summary = json.load(f)
      assert summary['final_step'] == 2
      accuracies.append(summary['eval']['accuracy'])  # The task's metric.
    mean, ci = fusion_benchmark.mean_ci(accuracies)
    assert row['seeds'] == '2'
    assert float(row['accuracy_mean']) == pytest.approx(mean)
    if ci is None:
      assert row['accuracy_ci95'] == ''
    else:
      assert float(row['accuracy_ci95']) == pytest.approx(ci)
    assert int(row['num_params']) == summary['num_params']
    for key in ('flops_per_example', 'examples_per_second',
                'step_memory_bytes', 'compile_seconds'):
      assert float(row[key]) > 0, key
  with open(os.path.join(outdir, 'results.md')) as f:
    markdown = f.read()
  assert markdown == table + '\n'
  assert 'accuracy (mean ± 95% CI)' in markdown
  assert '| concat | 2 |' in markdown and '| late | 2 |' in markdown
  for name in ('metric_vs_flops.png', 'metric_vs_params.png'):
    assert Image.open(os.path.join(outdir, name)).format == 'PNG'
  assert not os.path.exists(os.path.join(outdir, 'robustness_text.png'))

  # Robustness results appear in the runs' workdirs (the robustness
  # evaluation's format); a second invocation trains and measures nothing
  # and adds their plot and columns.
  for variant in variants:
    for seed in (0, 1):
      name = sweep_runs.run_name({**variant.settings, 'seed': seed})
      with open(os.path.join(outdir, name, 'robustness.json'), 'w') as f:
        json.dump({'noise': {'text': {'drop_tokens': [
            [0.0, 0.6], [0.5, 0.5 - 0.1 * seed]]}},
                   'missing': {'none': 0.25 + 0.1 * seed}}, f)

  def forbidden(*args, **kwargs):
    raise AssertionError('a finished benchmark ran something again')

  monkeypatch.setattr(launch, 'train_and_evaluate', forbidden)
  monkeypatch.setattr(throughput, 'benchmark', forbidden)
  rows_again, _, _ = fusion_benchmark.run_benchmark(
      CONFIG, variants, [0, 1], outdir, **kwargs)
  assert [r['accuracy_mean'] for r in rows_again] == [
      r['accuracy_mean'] for r in rows]
  assert Image.open(os.path.join(outdir, 'robustness_text.png')).format == 'PNG'
  results = read_csv(os.path.join(outdir, 'results.csv'))
  assert [float(r['missing[none]']) for r in results] == pytest.approx(
      [0.3, 0.3])


def test_ablate_runs_in_parallel_subprocesses_and_summarises(data_dir,
                                                             tmp_path):
  outdir = str(tmp_path / 'ablation')
  result = subprocess.run([
      sys.executable, os.path.join(REPO, 'experiments', 'ablate.py'),
      f'--config={CONFIG}', '--grid=seed=0,1', '--parallel=2',
      f'--outdir={outdir}',
      *[f'--config.{k}={v}' for k, v in tiny(data_dir).items()],
  ], capture_output=True, text=True, timeout=600,
      # One CPU device per run: two runs share the machine's cores.
      env=subprocess_env(1), cwd=REPO)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = read_csv(os.path.join(outdir, 'ablation.csv'))
  assert [(r['run'], r['seed'], r['status']) for r in rows] == [
      ('seed=0', '0', 'done'), ('seed=1', '1', 'done')]
  for row in rows:
    with open(os.path.join(outdir, row['run'], 'summary.json')) as f:
      summary = json.load(f)
    assert float(row['accuracy']) == summary['eval']['accuracy']
    assert int(row['num_params']) == summary['num_params']
    # Each subprocess logged into its own workdir.
    assert os.path.getsize(os.path.join(outdir, row['run'], 'train.log')) > 0
  with open(os.path.join(outdir, 'ablation.md')) as f:
    table = f.read()
  assert table.count('| done |') == 2
  assert table.strip() in result.stdout  # The table is printed too.
  assert np.isfinite([float(r['loss']) for r in rows]).all()


# experiments/train.py's stand-in for the test below: it fails unless its
# run's dataset was complete when it started, and otherwise finishes the run
# at once (the training itself is not what is tested).
_CHECK_DATASET = '''
import glob, json, os, sys
args = dict(a[2:].split('=', 1) for a in sys.argv[1:] if '=' in a)
pattern = os.path.join(args['config.dataset.data_dir'], 'scenes', 'tiny', '*',
                       'dataset_info.json')
if not glob.glob(pattern):
  sys.exit('the dataset was not prepared before this run started')
with open(os.path.join(args['workdir'], 'summary.json'), 'w') as f:
  json.dump({'eval': {}}, f)
'''


def test_parallel_runs_start_with_their_dataset_prepared(tmp_path):
  # Two runs that each found the dataset missing would both build it, and
  # one would fail renaming TFDS's temporary directory into place
  # (FileExistsError): the launcher prepares each dataset once first.
  data_dir = str(tmp_path / 'tfds')  # Nothing built there yet.
  script = tmp_path / 'check_dataset.py'
  script.write_text(_CHECK_DATASET)
  runs = sweep_runs.make_runs(CONFIG, overrides.grid({'seed': [0, 1]}), {
      'dataset.builder_config': 'tiny', 'dataset.data_dir': data_dir})
  statuses = launch.launch(runs, str(tmp_path / 'out'), parallel=2,
                           train_script=str(script), python=sys.executable)
  assert statuses == {r.name: sweep_runs.DONE for r in runs}


def test_sbatch_without_slurm_names_what_to_use_instead(data_dir, tmp_path,
                                                        monkeypatch):
  runs = sweep_runs.make_runs(CONFIG, [{'seed': 0}], tiny(data_dir))
  monkeypatch.setenv('PATH', str(tmp_path))  # No sbatch on it.
  with pytest.raises(RuntimeError, match='--sbatch needs SLURM.*--parallel'):
    launch.launch(runs, str(tmp_path / 'sweep'), train_script='train.py',
                  sbatch=True)


def test_sbatch_refusal_is_reported_with_its_message(data_dir, tmp_path,
                                                     monkeypatch):
  runs = sweep_runs.make_runs(CONFIG, [{'seed': 0}], tiny(data_dir))
  sbatch = tmp_path / 'sbatch'
  sbatch.write_text('#!/bin/sh\necho "invalid partition specified" >&2\n'
                    'exit 1\n')
  sbatch.chmod(0o755)
  monkeypatch.setenv('PATH', f'{tmp_path}:{os.environ["PATH"]}')
  with pytest.raises(RuntimeError, match='invalid partition specified'):
    launch.launch(runs, str(tmp_path / 'sweep'), train_script='train.py',
                  sbatch=True, sbatch_args=['--partition=nope'])
