"""Embeddings of a trained two-tower model: of a split, of free texts, and
zero-shot classification from class-name prompts; the evaluators 'embedding'
(export to a file) and 'zero_shot'.

`experiment` arguments are `mmjax.experiment.Experiment`s."""
import io
import os
from typing import Any, Dict, Mapping, Optional, Sequence

import jax
import ml_collections
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmjax.data.ops.text import Tokenize
from mmjax.fileio import atomic_write
from mmjax.registry import EVALUATORS
from mmjax.tasks import retrieval
from mmjax.train.steps import model_variables


def embed_split(experiment, state) -> Dict[str, np.ndarray]:
  """The task's `eval_examples` over the experiment's eval split
  (`config.dataset.eval_split`), real rows only, in eval order: embeddings
  [N, D] per modality, and 'label_values' [N] / 'text_values' [N, L] where
  the dataset has them."""
  _, examples = experiment.runner.collect(state, experiment.eval_batches())
  if examples is None:
    raise ValueError(f'task {experiment.config.task.name!r} gives no '
                     'per-example values to export; use a retrieval run.')
  return examples


def tokenize_texts(experiment, texts: Sequence[str]) -> Dict[str, np.ndarray]:
  """'text' ids [N, L] and 'text_mask' of free `texts`, by the run's own
  `tokenize` op of 'text' in `input.pp_eval` (ops before it, e.g.
  `class_text`, are skipped: the texts are given)."""
  ops = [op for op in experiment.pp_eval.ops
         if isinstance(op, Tokenize) and op.key == 'text']
  if not ops:
    raise ValueError('the run has no tokenize op for text in input.pp_eval.')
  tokenized = [ops[0]({'text': t}, None) for t in texts]
  return {k: np.stack([t[k] for t in tokenized])
          for k in ('text', 'text_mask')}


def embed_texts(experiment, state,
                texts: Sequence[str]) -> np.ndarray:
  """[len(texts), D] text-tower embeddings of `texts` (`tokenize_texts`)."""
  state = experiment.runner.to_checkpoint(state)
  outputs = jax.jit(lambda v, b: experiment.model.apply(v, b, train=False))(
      model_variables(state.params, state.batch_stats),
      tokenize_texts(experiment, texts))
  return np.asarray(jax.device_get(outputs['text']))


def zero_shot_accuracy(experiment, state,
                       embeddings: np.ndarray, labels: np.ndarray,
                       class_names: Sequence[str],
                       templates: Optional[Sequence[str]] = None) -> float:
  """Accuracy of classifying embeddings [N, D] of another tower (e.g. images
  from `embed_split`) with labels [N] as the class whose prompts (each class
  name in every template, text-tower embeddings averaged) are the most
  similar."""
  classifier = retrieval.zero_shot_classifier(
      lambda texts: embed_texts(experiment, state, texts), class_names,
      templates or retrieval.TEMPLATES)
  return retrieval.zero_shot_accuracy(classifier, embeddings, labels)


def export_columns(examples: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """`embed_split`'s values as named columns: one per modality's embeddings
  [N, D], 'label' [N] and 'text_ids' [N, L] where present."""
  names = {'label_values': 'label', 'text_values': 'text_ids'}
  return {names.get(k, k): np.asarray(v) for k, v in examples.items()}


def write_embeddings(columns: Mapping[str, np.ndarray], path: str) -> None:
  """Writes equal-length columns to `path`: '.npy' (a structured array, one
  field per column, loadable without pickle) or '.parquet' (one column per
  field; vectors as fixed-size lists)."""
  ext = os.path.splitext(path)[1]
  if ext not in ('.npy', '.parquet'):
    raise ValueError(f'{path}: expected a .npy or .parquet file name.')
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  if ext == '.npy':
    rows = len(next(iter(columns.values())))
    table = np.empty(rows, [(k, v.dtype, v.shape[1:])
                            for k, v in columns.items()])
    for key, value in columns.items():
      table[key] = value
    buffer = io.BytesIO()
    np.save(buffer, table, allow_pickle=False)
    atomic_write(path, buffer.getvalue())
    return

  def arrow(value):
    if value.ndim == 1:
      return pa.array(value)
    flat = pa.array(value.reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, value.shape[1])

  buffer = pa.BufferOutputStream()
  pq.write_table(pa.table({k: arrow(v.reshape(len(v), -1) if v.ndim > 1
                                    else v)
                           for k, v in columns.items()}), buffer)
  atomic_write(path, buffer.getvalue().to_pybytes())


@EVALUATORS.register('embedding')
class EmbeddingExport:
  """Writes the eval split's embeddings (`export_columns`) to
  `<workdir>/embeddings/step_<N>.<cfg.format>` ('parquet' or 'npy')."""

  def __init__(self, cfg: ml_collections.ConfigDict, experiment,
               workdir: Optional[str] = None):
    if not workdir:
      raise ValueError('the embedding evaluator writes into a workdir; '
                       'none was given.')
    self.experiment, self.workdir = experiment, workdir
    self.format = cfg.get('format', 'parquet')

  def run(self, state, step: int) -> Dict[str, Any]:
    columns = export_columns(embed_split(self.experiment, state))
    if jax.process_index() == 0:
      write_embeddings(columns, os.path.join(
          self.workdir, 'embeddings', f'step_{step}.{self.format}'))
    return {'rows': len(next(iter(columns.values())))}


@EVALUATORS.register('zero_shot')
class ZeroShot:
  """Zero-shot accuracy of the `cfg.tower` embeddings (default 'image') of
  the eval split, classified by prompts of the label's class names
  (`cfg.templates`: default `retrieval.TEMPLATES`)."""

  def __init__(self, cfg: ml_collections.ConfigDict, experiment,
               workdir: Optional[str] = None):
    del workdir
    self.experiment = experiment
    self.tower = cfg.get('tower', 'image')
    self.templates = cfg.get('templates')
    self.class_names = experiment.spec.label_names

  def run(self, state, step: int) -> Dict[str, Any]:
    del step
    examples = embed_split(self.experiment, state)
    return {'accuracy': zero_shot_accuracy(
        self.experiment, state, examples[self.tower],
        examples['label_values'], self.class_names, self.templates)}
