"""Result tables: the one Markdown table writer and the one CSV writer of
mmjax (benchmarks, sweeps, the robustness report, TensorBoard prediction
tables).

A table is a list of row dicts and a list of columns; a column is
`(key, header, format)`, where `format` turns the row's value (None when the
row lacks the key) into the cell's text.
"""
import csv
import io
import os
from typing import Any, Callable, Mapping, Sequence, Tuple

from mmjax import fileio

Column = Tuple[Any, str, Callable[[Any], str]]  # (key, header, format)


def text(value: Any) -> str:
  """Cell text of any value: '-' for None, else `str(value)`."""
  return '-' if value is None else str(value)


def format_number(value: Any) -> str:
  """Cell text of a figure: '-' for None, ints with thousands separators,
  floats to 4 significant digits, anything else as `str`."""
  if value is None:
    return '-'
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return str(value)
  if isinstance(value, int):
    return f'{value:,}'
  return f'{value:.4g}'


def fixed(fmt: str, scale: float = 1) -> Callable[[Any], str]:
  """A cell format: `fmt.format(value * scale)`, '-' for None.
  E.g. fixed('{:.1f}', 2**-20) shows bytes as MiB with one decimal."""
  return lambda value: '-' if value is None else fmt.format(value * scale)


def _cell(value: str) -> str:
  # A '|' would end the cell and a line break the row (generated text has
  # both).
  return value.replace('|', r'\|').replace('\n', ' ')


def markdown_table(rows: Sequence[Mapping[Any, Any]],
                   columns: Sequence[Column]) -> str:
  """A Markdown table (no trailing newline), one line per row dict."""
  lines = ['| ' + ' | '.join(_cell(header) for _, header, _ in columns) +
           ' |', '|' + '---|' * len(columns)]
  lines += ['| ' + ' | '.join(_cell(fmt(row.get(key)))
                              for key, _, fmt in columns) + ' |'
            for row in rows]
  return '\n'.join(lines)


def write_csv(rows: Sequence[Mapping[str, Any]], keys: Sequence[str],
              path: str) -> None:
  """Writes `rows` to `path` (atomically) as CSV with the columns `keys`; a
  missing value is an empty cell, keys outside `keys` are left out."""
  out = io.StringIO()
  writer = csv.DictWriter(out, fieldnames=list(keys), extrasaction='ignore')
  writer.writeheader()
  writer.writerows(rows)
  fileio.atomic_write(path, out.getvalue())


def write_tables(rows: Sequence[Mapping[str, Any]], keys: Sequence[str],
                 columns: Sequence[Column], stem: str) -> str:
  """Writes `<stem>.csv` (the columns `keys`, raw values) and `<stem>.md`
  (the Markdown table of `columns`), creating their directory; returns the
  Markdown table."""
  os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
  write_csv(rows, keys, f'{stem}.csv')
  table = markdown_table(rows, columns)
  fileio.atomic_write(f'{stem}.md', table + '\n')
  return table
