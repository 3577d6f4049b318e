"""Metric writers: TensorBoard event files and a JSONL file in the workdir.

Only process 0 writes (other processes get a writer that does nothing), so
multi-host runs produce one set of logs. Events are written and flushed in
the caller's thread: tensorboardX's own writer queues them for a background
thread, and when that thread dies (a full disk) the queue fills and the
training loop blocks forever instead of failing. A run killed mid-append
leaves a torn last line in the JSONL file; the next writer cuts it off before
appending and readers skip it (see `mmjax.fileio`).
"""
import json
import logging as std_logging
import os
import time
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from absl import logging
from tensorboardX import summary as tb_summary
from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto import event_pb2

from mmjax import fileio
from mmjax import reporting

METRICS_FILE = 'metrics.jsonl'
PREDICTIONS_DIR = 'predictions'
# Predictions shown in TensorBoard per evaluation (the JSONL file has all).
TENSORBOARD_PREDICTIONS = 8


class MetricWriter:
  """Writes scalar metrics, keyed by step and prefixed by split ('train',
  'eval'), generated-text predictions and images."""

  def __init__(self, workdir: str):
    self._active = jax.process_index() == 0
    self._workdir = workdir
    if self._active:
      logdir = os.path.join(workdir, 'tensorboard')
      os.makedirs(logdir, exist_ok=True)
      self._tb = EventsWriter(os.path.join(logdir, 'events'))
      metrics_path = os.path.join(workdir, METRICS_FILE)
      fileio.repair_jsonl(metrics_path)  # Never append after a torn line.
      self._jsonl = open(metrics_path, 'a')

  def write(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
    if not self._active:
      return
    scalars = {k: float(np.asarray(v)) for k, v in metrics.items()}
    for name, value in scalars.items():
      self._tb.write_event(event_pb2.Event(
          wall_time=time.time(), step=step,
          summary=tb_summary.scalar(f'{split}/{name}', value)))
    self._tb.flush()
    self._jsonl.write(json.dumps({'step': step, 'split': split, **scalars}) +
                      '\n')
    self._jsonl.flush()

  def write_predictions(self, step: int, split: str,
                        records: Sequence[Mapping[str, Any]]) -> None:
    """Writes `records` (JSON-able dicts: a prediction next to its
    reference) to <workdir>/predictions/<split>_step_<step>.jsonl, and the
    first few to TensorBoard as a text table under '<split>/predictions'."""
    if not self._active or not records:
      return
    path = os.path.join(self._workdir, PREDICTIONS_DIR,
                        f'{split}_step_{step}.jsonl')
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fileio.atomic_write(path, ''.join(json.dumps(r) + '\n' for r in records))
    table = reporting.markdown_table(
        records[:TENSORBOARD_PREDICTIONS],
        [(k, k, reporting.text) for k in records[0]])
    self._tb.write_event(event_pb2.Event(
        wall_time=time.time(), step=step,
        summary=tb_summary.text(f'{split}/predictions', table)))
    self._tb.flush()

  def write_images(self, step: int, split: str,
                   images: Mapping[str, np.ndarray]) -> None:
    """Writes uint8 images [H, W, C] to TensorBoard as '<split>/<tag>'."""
    if not self._active or not images:
      return
    for tag, image in images.items():
      # tensorboardX scales uint8 by 1/255 before encoding; floats in [0, 1]
      # come out as the same bytes.
      self._tb.write_event(event_pb2.Event(
          wall_time=time.time(), step=step,
          summary=tb_summary.image(f'{split}/{tag}',
                                   np.asarray(image, np.float32) / 255.,
                                   dataformats='HWC')))
    self._tb.flush()

  def close(self) -> None:
    if self._active:
      self._tb.close()
      self._jsonl.close()


def read_metrics(workdir: str):
  """The records of a run's JSONL metrics file, in order (a torn last line,
  from a run killed mid-append, is skipped with a warning)."""
  return fileio.read_jsonl(os.path.join(workdir, METRICS_FILE))


def quiet_library_logs() -> None:
  """Keeps mmjax's INFO logs and only warnings and errors from other libraries.

  Orbax, TFDS and JAX log every checkpoint phase and file at INFO through
  absl; at that level the run's own messages drown.
  """
  package_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  logging.get_absl_handler().addFilter(
      lambda record: (record.levelno >= std_logging.WARNING or
                      record.pathname.startswith(package_dir)))
