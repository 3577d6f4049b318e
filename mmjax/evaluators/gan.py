"""How good a text-conditioned generator's images are, measured with a
classifier mmjax trained on the real images (Inception weights cannot be
downloaded here, and a classifier of the dataset's own classes is the more
telling judge of whether an image shows what its text asked for).

The evaluator 'gan' (`config.evals`):

  config.evals = {'gan': dict(type='gan', classifier='runs/digits_classifier',
                              samples_per_class=8, every_steps=500)}

`classifier`: the workdir of an image-only classification run on the same
dataset and preprocessing (so its inputs are the generator's outputs: same
size, channels and value range). For every caption of the eval split the
EMA generator draws one image (the noise is the same at every evaluation, so
evaluations differ only by the weights); the classifier then gives

  conditional_accuracy    generated images classified as their caption's
                          class (the caption's row label);
  shuffled_accuracy       the same with the captions shuffled among the rows,
                          still scored against the rows' own labels: the
                          floor a generator that ignores its text reaches;
  real_accuracy           the classifier on the real eval images: the ceiling;
  fid                     the Fréchet distance between the classifier's
                          features of generated and of real eval images;
  fid_untrained           the same for the untrained generator (the run's
                          initial weights), and fid_ratio = fid /
                          fid_untrained.

`run` also writes a PNG grid (one row per class: `samples_per_class` images
from that class's eval captions) to `<workdir>/samples/step_<step>.png` and
returns it under `IMAGES` for TensorBoard.
"""
import os
from typing import Any, Dict, Mapping, Optional, Sequence

import jax
import ml_collections
import numpy as np

from mmjax import reporting
from mmjax.errors import ConfigError
from mmjax.evaluators import embedding
from mmjax.metrics import fid
from mmjax.registry import EVALUATORS
from mmjax.train.loop import IMAGES
from mmjax.train.steps import model_variables

SAMPLES_DIR = 'samples'
_CHUNK = 256  # Rows generated / classified per call.


def _variables(state) -> Dict[str, Any]:
  return model_variables(state.params, state.batch_stats)


def eval_rows(experiment) -> Dict[str, np.ndarray]:
  """The real rows of the eval split after `input.pp_eval`: 'image',
  'text', 'text_mask' (where the pipeline gives one) and 'label'."""
  keys = ('image', 'text', 'text_mask', 'label')
  rows = {}
  for batch in experiment.eval_batches():
    real = batch['_mask'] > 0
    for key in keys:
      if key in batch:
        rows.setdefault(key, []).append(batch[key][real])
  return {k: np.concatenate(v) for k, v in rows.items()}


def sample(experiment, state, texts: Sequence[str], n: int,
           seed: int = 0) -> np.ndarray:
  """uint8 grid [rows, cols]: a row of `n` EMA-generator images per text."""
  rows = embedding.tokenize_texts(experiment,
                                 [t for t in texts for _ in range(n)])
  model = experiment.model
  images = jax.jit(lambda v, text, mask, key: model.apply(
      v, text, mask, rngs={'noise': key}, method=model.generate))(
          _variables(experiment.runner.to_checkpoint(state)), rows['text'],
          rows.get('text_mask'), jax.random.key(seed))
  return reporting.image_grid(np.asarray(images), len(texts))


class _Classifier:
  """Logits and penultimate features of a restored classification run."""

  def __init__(self, workdir: str, experiment, field: str):
    try:
      run, state, _ = experiment.restore_run(workdir)
    except (FileNotFoundError, ValueError) as e:
      raise ConfigError(field, f'cannot restore the classifier: {e}') from e
    if run.config.task.name != 'classification' or tuple(
        run.config.model.modalities) != ('image',):
      raise ConfigError(field, (
          f'{workdir} is a {run.config.task.name!r} run of '
          f'{tuple(run.config.model.modalities)}; the generator needs an '
          'image-only classification run on the same dataset.'))
    expected = tuple(run.example_spec['image'].shape)
    generated = tuple(experiment.example_spec['image'].shape)
    if expected != generated:
      raise ConfigError(field, (
          f'the classifier takes images {expected}, the generator makes '
          f'{generated}; train it with the same image preprocessing.'))
    self._variables = _variables(run.runner.to_checkpoint(state))
    self._apply = jax.jit(lambda v, x: run.model.apply(
        v, {'image': x}, train=False, mutable=['intermediates']))

  def __call__(self, images: np.ndarray):
    """images [N, H, W, C] -> (logits [N, classes], features [N, D])."""
    logits, features = [], []
    for start in range(0, len(images), _CHUNK):
      out, inter = self._apply(self._variables, images[start:start + _CHUNK])
      logits.append(np.asarray(out))
      features.append(np.asarray(inter['intermediates']['features'][0]))
    return np.concatenate(logits), np.concatenate(features)


@EVALUATORS.register('gan')
class GANEvaluator:
  """Conditional accuracy and Fréchet distance of generated images, and a
  sample grid (see the module docstring)."""

  def __init__(self, cfg: ml_collections.ConfigDict, experiment,
               workdir: Optional[str] = None):
    if not cfg.get('classifier'):
      raise ConfigError('evals.gan.classifier', 'is missing: the workdir of '
                        'an image-only classification run on the dataset.')
    self.experiment, self.workdir = experiment, workdir
    self.samples_per_class = cfg.get('samples_per_class', 8)
    self.classifier = _Classifier(cfg.classifier, experiment,
                                  'evals.gan.classifier')
    self.rows = eval_rows(experiment)
    logits, self.real_features = self.classifier(self.rows['image'])
    self.real_accuracy = float(
        (logits.argmax(-1) == self.rows['label']).mean())
    self.real_stats = fid.gaussian_stats(self.real_features)
    model = experiment.model
    self._generate = jax.jit(
        lambda v, text, mask, key: model.apply(
            v, text, mask, rngs={'noise': key}, method=model.generate))
    untrained = experiment.runner.init(experiment.init_rng)
    self.fid_untrained = self._fid(self.generate(untrained, self.rows))

  def generate(self, state, rows: Mapping[str, np.ndarray]) -> np.ndarray:
    """EMA-generator images [N, H, W, C] for the captions of `rows`; the
    noise of row i is the same at every call."""
    variables = _variables(self.experiment.runner.to_checkpoint(state))
    images = []
    for start in range(0, len(rows['text']), _CHUNK):
      chunk = slice(start, start + _CHUNK)
      images.append(np.asarray(self._generate(
          variables, rows['text'][chunk],
          rows['text_mask'][chunk] if 'text_mask' in rows else None,
          jax.random.fold_in(jax.random.key(0), start))))
    return np.concatenate(images)

  def _fid(self, images: np.ndarray) -> float:
    _, features = self.classifier(images)
    return fid.frechet_distance(*fid.gaussian_stats(features),
                                *self.real_stats)

  def _accuracy(self, images: np.ndarray, labels: np.ndarray) -> float:
    logits, _ = self.classifier(images)
    return float((logits.argmax(-1) == labels).mean())

  def grid(self, state) -> np.ndarray:
    """uint8 grid: a row per class, `samples_per_class` images from that
    class's eval captions (fewer classes if some have no captions)."""
    labels = self.rows['label']
    picked = np.concatenate([
        np.flatnonzero(labels == c)[:self.samples_per_class]
        for c in np.unique(labels)
        if (labels == c).sum() >= self.samples_per_class])
    images = self.generate(state, {k: v[picked] for k, v in self.rows.items()})
    return reporting.image_grid(images, len(picked) // self.samples_per_class)

  def run(self, state, step: int) -> Dict[str, Any]:
    images = self.generate(state, self.rows)
    labels = self.rows['label']
    shuffle = np.random.default_rng(0).permutation(len(labels))
    shuffled = self.generate(state, {k: v[shuffle]
                                     for k, v in self.rows.items()})
    score = self._fid(images)
    grid = self.grid(state)
    if self.workdir and jax.process_index() == 0:
      os.makedirs(os.path.join(self.workdir, SAMPLES_DIR), exist_ok=True)
      reporting.write_png(os.path.join(self.workdir, SAMPLES_DIR,
                                       f'step_{step}.png'), grid)
    return {
        'conditional_accuracy': self._accuracy(images, labels),
        'shuffled_accuracy': self._accuracy(shuffled, labels),
        'real_accuracy': self.real_accuracy,
        'fid': score,
        'fid_untrained': self.fid_untrained,
        'fid_ratio': score / self.fid_untrained,
        IMAGES: {'samples': grid},
    }
