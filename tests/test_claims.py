"""Figures quoted in README.md, docs/ and benchmarks/*.md match their result files."""
import importlib.util
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'benchmarks', 'check_claims.py')


def _check_claims():
  spec = importlib.util.spec_from_file_location('check_claims', SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_quoted_figures_match_their_result_files():
  result = subprocess.run([sys.executable, SCRIPT], capture_output=True,
                          text=True, timeout=60, check=False)
  assert result.returncode == 0, result.stdout + result.stderr


def _run(tmp_path, markdown, claims):
  (tmp_path / 'summary.json').write_text(
      json.dumps({'eval': {'accuracy': 0.69189453125}}))
  (tmp_path / 'results.csv').write_text('variant,num_params\nlate,36578\n')
  (tmp_path / 'page.md').write_text(markdown)
  registry = {'checked_files': ['page.md'], 'claims': claims}
  return _check_claims().Checker(registry, root=str(tmp_path)).run()


TEXT_CLAIM = {'file': 'page.md', 'source': 'summary.json',
              'text': 'eval accuracy {} on the test split',
              'values': ['eval.accuracy']}
TABLE_CLAIM = {'file': 'page.md', 'source': 'results.csv',
               'header': '| variant | params |',
               'columns': {'variant': None, 'params': 'num_params'}}
TABLE = '| variant | params |\n|---|---|\n| late | {} |\n'


def test_figures_equal_at_the_printed_precision_pass(tmp_path):
  markdown = ('The run reached eval accuracy 0.6919 on the\ntest split.\n\n' +
              TABLE.format('36,578'))
  assert _run(tmp_path, markdown, [TEXT_CLAIM, TABLE_CLAIM]) == []


def test_a_figure_off_by_one_in_its_last_digit_fails_with_its_line(tmp_path):
  markdown = 'x\neval accuracy 0.6920 on the test split.\n\n' + TABLE.format(
      '36,579')
  assert _run(tmp_path, markdown, [TEXT_CLAIM, TABLE_CLAIM]) == [
      'page.md:2: quoted 0.6920, source summary.json[eval.accuracy] = 0.6919',
      'page.md:6: quoted 36,579, source results.csv[num_params] = 36578',
  ]


def test_a_registered_text_no_longer_in_the_page_fails(tmp_path):
  errors = _run(tmp_path, 'eval accuracy was 0.6919.\n', [TEXT_CLAIM])
  assert len(errors) == 2
  assert 'registered text found 0 times' in errors[0]
  assert errors[1] == 'page.md:1: 0.6919 is checked by no claim'


def test_a_glob_in_checked_files_checks_every_page_it_matches(tmp_path):
  (tmp_path / 'docs').mkdir()
  (tmp_path / 'docs' / 'a.md').write_text('fine\n')
  (tmp_path / 'docs' / 'b.md').write_text('x\naccuracy 0.6919\n')
  registry = {'checked_files': ['docs/*.md', 'notes/*.md'], 'claims': []}
  assert _check_claims().Checker(registry, root=str(tmp_path)).run() == [
      "checked_files: 'notes/*.md' matches no file",
      'docs/b.md:2: 0.6919 is checked by no claim',
  ]
