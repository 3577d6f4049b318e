"""Result tables and image grids: the one Markdown table writer, the one CSV
writer and the one image-grid PNG writer of mmjax (benchmarks, sweeps, the
robustness report, TensorBoard prediction tables, generated samples).

A table is a list of row dicts and a list of columns; a column is
`(key, header, format)`, where `format` turns the row's value (None when the
row lacks the key) into the cell's text.
"""
import csv
import io
import os
from typing import Any, Callable, Mapping, Sequence, Tuple

import numpy as np
from PIL import Image

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


def image_grid(images: np.ndarray, rows: int, pad: int = 1) -> np.ndarray:
  """Tiles images into one uint8 image, e.g. generated samples for a report.

  Args:
    images: [N, H, W, C] with C 1 or 3, uint8 or float in [-1, 1] (a
      generator's output range; mapped linearly to [0, 255], clipped, and
      rounded).
    rows: number of rows; N must be a multiple of it. Image i goes to row
      i // cols, column i % cols, with cols = N // rows.
    pad: pixels of black between images and around the grid.

  Returns:
    uint8 [rows * (H + pad) + pad, cols * (W + pad) + pad, C].
  """
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError('images must be [N, H, W, C] with C 1 or 3, got shape '
                     f'{images.shape}.')
  n, height, width, channels = images.shape
  if rows <= 0 or n % rows:
    raise ValueError(f'the number of images N={n} must be a positive '
                     f'multiple of rows={rows}.')
  if pad < 0:
    raise ValueError(f'pad must be >= 0, got {pad}.')
  if images.dtype != np.uint8:
    if not np.issubdtype(images.dtype, np.floating):
      raise ValueError('images must be uint8 or float in [-1, 1], got '
                       f'{images.dtype}.')
    images = np.rint(np.clip((images.astype(np.float64) + 1) * 127.5, 0,
                             255)).astype(np.uint8)
  cols = n // rows
  grid = np.zeros((rows * (height + pad) + pad, cols * (width + pad) + pad,
                   channels), np.uint8)
  for i, image in enumerate(images):
    top = pad + (i // cols) * (height + pad)
    left = pad + (i % cols) * (width + pad)
    grid[top:top + height, left:left + width] = image
  return grid


def write_png(path: str, grid: np.ndarray) -> None:
  """Writes a uint8 image [H, W, C] (C 1: greyscale, 3: RGB), e.g. an
  `image_grid`, to `path` as PNG (atomically)."""
  grid = np.asarray(grid)
  if grid.dtype != np.uint8 or grid.ndim != 3 or grid.shape[-1] not in (1, 3):
    raise ValueError('write_png needs uint8 [H, W, C] with C 1 or 3, got '
                     f'{grid.dtype} {grid.shape}; see image_grid.')
  out = io.BytesIO()
  Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(
      out, format='PNG')
  fileio.atomic_write(path, out.getvalue())
