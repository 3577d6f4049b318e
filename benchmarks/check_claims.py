"""Checks each figure quoted in the Markdown against its result file.

Run from anywhere: `python benchmarks/check_claims.py [REGISTRY]`. It exits
with status 1 and one line per problem,
`FILE:LINE: quoted X, source SOURCE[key] = Y`, when a quoted figure differs
from its source rounded to the printed number of decimals, when a registered
text or table no longer occurs in its file, or when a checked file quotes a
number with three or more decimals that no claim covers.

The registry (default `benchmarks/claims.json`, paths relative to the repository
root) is a JSON object:

  {"checked_files": ["README.md", "docs/*.md", "benchmarks/throughput.md", ...],
   "claims": [CLAIM, ...]}

`checked_files` are paths or glob patterns (`docs/*.md`, `**` for any depth),
so a new page under a pattern is checked without registering it; an entry
that matches no file is an error.

Every claim names its Markdown `file`, its result file `source` (JSON or CSV)
and one of:

- `text` and `values`: a fragment of the Markdown in which each `{}` stands for
  a quoted number and each run of spaces matches any whitespace (line breaks
  included). It must occur exactly once in `file`. The n-th number is compared
  with the n-th expression of `values`.

    {"file": "README.md", "source": "benchmarks/default/summary.json",
     "text": "eval accuracy {} on the 2,048 test examples",
     "values": ["eval.accuracy"]}

- `header`, `key` and `columns`: every Markdown table of `file` whose header
  line is `header` (at least one). A row's first cell names its source record:
  the one whose field `key` equals it (or `rows[cell]` if `rows` maps it to
  another name). `columns` maps every column name to an expression, to
  {"format": "{} ± {}", "values": [EXPR, EXPR]} for cells holding several
  numbers or a unit, or to null (not a figure). A cell "-" requires None.

An expression is Python over the source's fields. A JSON object's keys are
names, and nested objects read as attributes (`eval.accuracy`). A CSV file, or
a JSON list of records, or JSON lines, is `rows`: a dict from each record's
`key` field (the first CSV column, else `label`; `key` in the claim changes it,
and a list of fields makes tuple names, `rows['eval', 1000]`) to the record,
whose fields read as items or attributes (`rows['late'].num_params`); with
`"row": NAME` in a claim that record's fields are names too. CSV cells are
numbers where they parse as one. `min`, `max`, `abs`, `sum`, `len`, `float`,
`round` are available.

Numbers are compared as printed: "1,031" with 0 decimals, "0.7329" with 4;
a source value is formatted with the same number of decimals and the two
strings must be equal. `ignore` (optional, top level) lists
{"file", "text", "why"} for numbers of three or more decimals that are not
figures.
"""
import csv
import glob
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUMBER = r'-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?'
# One quoted number, not part of a longer one.
NUMBER_GROUP = rf'(?<![\d.])({NUMBER})(?![.,]?\d)'
# A number of three or more decimals: almost always a measured figure.
PRECISE_NUMBER = re.compile(r'(?<![\w.])\d+\.\d{3,}(?!\w|\.\d)')
BUILTINS = {f.__name__: f for f in (min, max, abs, sum, len, float, round)}


class Fields(dict):
  """A dict whose keys also read as attributes (`eval.accuracy`)."""

  def __getattr__(self, name):
    try:
      return self[name]
    except KeyError:
      raise AttributeError(name) from None


def _number(text):
  try:
    return float(text)
  except ValueError:
    return text


def load_source(path, key=None):
  """Returns the names an expression over the result file `path` may use."""
  with open(path, encoding='utf-8') as f:
    if path.endswith('.csv'):
      data = [Fields((k, _number(v)) for k, v in row.items())
              for row in csv.DictReader(f)]
      key = key or next(iter(data[0]))
    elif path.endswith('.jsonl'):
      data = [json.loads(line, object_hook=Fields) for line in f
              if line.strip()]
    else:
      data = json.load(f, object_hook=Fields)
  if not isinstance(data, list):
    return data
  key = key or 'label'
  if isinstance(key, list):  # A record's name is the tuple of these fields.
    return {'rows': {tuple(r[k] for k in key): r for r in data}}
  return {'rows': {r[key]: r for r in data}}


def pattern(fragment):
  """A regex for `fragment`: `{}` is a number, spaces any whitespace."""
  parts = [''.join(r'\s+' if t.isspace() else re.escape(t)
                   for t in re.split(r'(\s+)', part) if t)
           for part in fragment.split('{}')]
  return NUMBER_GROUP.join(parts)


def evaluate(expression, names):
  # The names are globals, not locals, so that generator expressions see them.
  scope = dict(names, __builtins__=BUILTINS)
  return eval(expression, scope)  # pylint: disable=eval-used


def compare(quoted, value):
  """Returns None if `value` prints as `quoted`, else the value as printed."""
  if value is None or isinstance(value, str):
    return repr(value)
  decimals = len(quoted.partition('.')[2])
  printed = f'{value:.{decimals}f}'
  return None if printed == quoted.replace(',', '') else printed


class Checker:
  """Checks the claims of one registry; `errors` collects the problems."""

  def __init__(self, registry, root=ROOT):
    self.registry = registry
    self.root = root
    self.errors = []
    self.texts = {}
    self.covered = {}  # file -> set of character offsets of checked numbers

  def text(self, path):
    if path not in self.texts:
      with open(os.path.join(self.root, path), encoding='utf-8') as f:
        self.texts[path] = f.read()
      self.covered[path] = set()
    return self.texts[path]

  def line(self, path, offset):
    return self.text(path).count('\n', 0, offset) + 1

  def check_number(self, claim, offset, quoted, names, expression):
    path = claim['file']
    self.covered[path].update(range(offset, offset + len(quoted)))
    try:
      printed = compare(quoted, evaluate(expression, names))
    except Exception as e:  # pylint: disable=broad-except
      printed = f'{type(e).__name__}: {e}'
    if printed is not None:
      self.errors.append(f'{path}:{self.line(path, offset)}: quoted {quoted}, '
                         f'source {claim["source"]}[{expression}] = {printed}')

  def check_text(self, claim, names):
    path, fragment = claim['file'], claim['text']
    matches = list(re.finditer(pattern(fragment), self.text(path)))
    if len(matches) != 1:
      self.errors.append(f'{path}:1: registered text found {len(matches)} '
                         f'times (expected once): {fragment!r}')
      return
    match, values = matches[0], claim['values']
    if len(values) != match.re.groups:
      self.errors.append(f'{path}: {fragment!r}: {match.re.groups} numbers, '
                         f'{len(values)} values')
      return
    for i, expression in enumerate(values, 1):
      self.check_number(claim, match.start(i), match.group(i), names,
                        expression)

  def check_table(self, claim, names):
    path, header = claim['file'], claim['header'].strip()
    text = self.text(path)
    columns = [c.strip() for c in header.strip('|').split('|')]
    unknown = sorted(set(columns) ^ set(claim['columns']))
    if unknown:
      self.errors.append(f'{path}: table {header!r}: columns not both in the '
                         f'table and the claim: {unknown}')
      return
    tables, offset = 0, 0
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
      if line.strip() == header:
        tables += 1
        row_offset = offset + len(line) + len(lines[i + 1])
        for row in lines[i + 2:]:
          if not row.startswith('|'):
            break
          self.check_row(claim, names, columns, row, row_offset)
          row_offset += len(row)
      offset += len(line)
    if not tables:
      self.errors.append(f'{path}:1: registered table not found: {header!r}')

  def check_row(self, claim, names, columns, row, offset):
    path = claim['file']
    cells = re.split(r'(?<!\\)\|', row.rstrip('\n'))[1:-1]
    name = cells[0].strip()
    name = claim.get('rows', {}).get(name, name)
    if name not in names['rows']:
      self.errors.append(f'{path}:{self.line(path, offset)}: row {name!r} has '
                         f'no record in {claim["source"]}')
      return
    row_names = dict(names, **names['rows'][name])
    position = offset + 1
    for column, cell in zip(columns, cells):
      spec = claim['columns'][column]
      start = position + len(cell) - len(cell.lstrip())
      position += len(cell) + 1
      if spec is None:
        continue
      if isinstance(spec, str):
        spec = {'format': '{}', 'values': [spec]}
      if cell.strip() == '-':
        self.check_dash(claim, start, row_names, spec['values'][0])
        continue
      parts = [re.escape(p) for p in spec['format'].split('{}')]
      match = re.fullmatch(NUMBER_GROUP.join(parts), cell.strip())
      if not match:
        self.errors.append(f'{path}:{self.line(path, start)}: cell {cell!r} '
                           f'of column {column!r} is not {spec["format"]!r}')
        continue
      for j, expression in enumerate(spec['values'], 1):
        self.check_number(claim, start + match.start(j), match.group(j),
                          row_names, expression)

  def check_dash(self, claim, offset, names, expression):
    """A cell '-' stands for a missing value: None, or arithmetic on None."""
    try:
      value = evaluate(expression, names)
    except TypeError:
      value = None
    if value is not None:
      path = claim['file']
      self.errors.append(f'{path}:{self.line(path, offset)}: quoted -, source '
                         f'{claim["source"]}[{expression}] = {value!r}')

  def checked_files(self):
    """The files `checked_files` names: its paths and glob patterns expanded
    (relative to the root, sorted, each once)."""
    paths = []
    for entry in self.registry['checked_files']:
      matches = sorted(
          os.path.relpath(m, self.root).replace(os.sep, '/')
          for m in glob.glob(os.path.join(self.root, entry), recursive=True)
          if os.path.isfile(m))
      if not matches:
        self.errors.append(f'checked_files: {entry!r} matches no file')
      paths += [m for m in matches if m not in paths]
    return paths

  def check_uncovered(self):
    """Flags numbers of three or more decimals that no claim checks."""
    ignored = {(i['file'], i['text']) for i in self.registry.get('ignore', [])}
    for path in self.checked_files():
      text = self.text(path)
      allowed = set()
      for file, fragment in ignored:
        if file == path:
          for m in re.finditer(pattern(fragment), text):
            allowed.update(range(m.start(), m.end()))
      for m in PRECISE_NUMBER.finditer(text):
        if m.start() not in self.covered[path] and m.start() not in allowed:
          self.errors.append(f'{path}:{self.line(path, m.start())}: '
                             f'{m.group()} is checked by no claim')

  def run(self):
    for claim in self.registry['claims']:
      self.text(claim['file'])
      try:
        names = load_source(os.path.join(self.root, claim['source']),
                            claim.get('key'))
      except (OSError, ValueError, KeyError, StopIteration) as e:
        self.errors.append(f'{claim["file"]}: source {claim["source"]}: {e}')
        continue
      if 'row' in claim:
        row = claim['row']
        names = dict(names, **names['rows'][tuple(row) if isinstance(
            row, list) else row])
      if 'header' in claim:
        self.check_table(claim, names)
      else:
        self.check_text(claim, names)
    self.check_uncovered()
    return self.errors


def main(argv):
  path = argv[1] if len(argv) > 1 else os.path.join(ROOT, 'benchmarks',
                                                    'claims.json')
  with open(path, encoding='utf-8') as f:
    errors = Checker(json.load(f)).run()
  for error in errors:
    print(error)
  return 1 if errors else 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
