"""The `python experiments/<script>.py ...` commands in README.md and docs/
name flags their script defines, configs and variants that build, and config
fields that exist, so a page's commands stay runnable as written when a flag
or field is renamed."""
import glob
import os
import re
import shlex

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ['README.md'] + sorted(
    os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, 'docs',
                                                             '*.md')))
COMMAND = re.compile(r'(?:\.venv/bin/)?python (experiments/\w+\.py)(?=\s)(.*)')
# A flag definition: DEFINE_string('name', ...), DEFINE_config_file('config').
DEFINITION = re.compile(r"DEFINE_\w+\(\s*'(\w+)'")
FLAG_MODULES = re.compile(r'^import (\w+_flags)$', re.M)
# A fenced code block, indented (inside a list item) or not.
FENCED = re.compile(r'^[ \t]*```\w*\n(.*?)^[ \t]*```', re.S | re.M)


def commands(page):
  """(line, script, arguments) of every command in `page`'s code blocks and
  inline code; a code block's lines ending in a backslash continue."""
  with open(os.path.join(ROOT, page), encoding='utf-8') as f:
    text = f.read()
  found = []
  for block in re.finditer(FENCED, text):
    start = text.count('\n', 0, block.start(1)) + 1
    lines = block.group(1).split('\n')
    i = 0
    while i < len(lines):
      first, command = i, lines[i]
      while command.endswith('\\') and i + 1 < len(lines):
        i += 1
        command = command[:-1] + ' ' + lines[i].strip()
      i += 1
      match = COMMAND.search(command)
      if match and not command.lstrip().startswith('$'):
        found.append((start + first, match.group(1), match.group(2)))
  prose = FENCED.sub(lambda m: '\n' * m.group().count('\n'), text)
  for span in re.finditer(r'`([^`]+)`', prose):
    match = COMMAND.search(' '.join(span.group(1).split()))
    if match and '...' not in match.group(2):
      found.append((text.count('\n', 0, span.start()) + 1, match.group(1),
                    match.group(2)))
  return found


CASES = [(f'{page}:{line}', script, args) for page in PAGES
         for line, script, args in commands(page)]


def defined_flags(script):
  """The flags `script` and the shared flag modules it imports define."""
  with open(os.path.join(ROOT, script), encoding='utf-8') as f:
    source = f.read()
  names = set(DEFINITION.findall(source))
  for module in FLAG_MODULES.findall(source):
    with open(os.path.join(ROOT, 'experiments', f'{module}.py'),
              encoding='utf-8') as f:
      names |= set(DEFINITION.findall(f.read()))
  return names


def load_config(spec):
  """`configs/x.py:variant` -> the ConfigDict it builds."""
  import importlib  # pylint: disable=g-import-not-at-top
  path, _, variant = spec.partition(':')
  module = importlib.import_module(path[:-len('.py')].replace('/', '.'))
  return module.get_config(variant or None)


def test_the_pages_hold_commands():
  assert len(CASES) >= 20, CASES
  assert {script for _, script, _ in CASES} >= {
      'experiments/train.py', 'experiments/evaluate.py',
      'experiments/benchmark_fusion.py', 'experiments/ablate.py',
      'experiments/bench_input.py', 'experiments/prepare_dataset.py'}


@pytest.mark.parametrize('where,script,args', CASES,
                         ids=[c[0] for c in CASES])
def test_command_flags_and_config_fields_exist(where, script, args):
  assert os.path.exists(os.path.join(ROOT, script)), f'{where}: {script}'
  defined = defined_flags(script)
  config, overrides = None, []
  for arg in shlex.split(args):
    assert arg.startswith('--'), f'{where}: {arg!r} is no flag'
    name, _, value = arg[2:].partition('=')
    if name == 'config':
      config = load_config(value)
    elif name.startswith('config.'):
      overrides.append(name[len('config.'):])
    else:
      bare = name[2:] if name.startswith('no') else name
      assert name in defined or bare in defined, (
          f'{where}: {script} defines no flag --{name}')
  if overrides:
    assert config is not None or 'config' in defined, where
    config = config or load_config('configs/default.py')
    for field in overrides:
      node = config
      for key in field.split('.'):
        assert key in node, f'{where}: the config has no field {field}'
        node = node[key]
