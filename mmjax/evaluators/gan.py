"""How good a text-conditioned generator's images are, judged by models
mmjax trained on the real images (Inception weights cannot be downloaded
here, and a judge of the dataset's own content is the more telling one of
whether an image shows what its text asked for) and, on 'scenes', by the
pixels themselves.

The evaluator 'gan' (`config.evals`) takes one or more judges:

  config.evals = {'gan': dict(type='gan', classifier='runs/digits_classifier',
                              samples_per_class=8, every_steps=500)}
  config.evals = {'gan': dict(type='gan', retrieval='runs/scenes_retrieval',
                              pixels='scenes', samples_per_class=8)}

  classifier  the workdir of an image-only classification run on the same
              dataset and preprocessing (so its inputs are the generator's
              outputs: same size, channels and value range). Score
              'accuracy': generated images classified as their caption's
              class (the row's label). Features: its penultimate layer.
  retrieval   the workdir of an image-text 'two_tower' run with the same
              `input.pp_eval`. Score 'r_precision': the fraction of images
              whose own caption is the most similar among it and 99
              captions of the eval split that differ from it (R-precision
              with R = 1, as in AttnGAN). Features: its image embeddings.
  pixels      'scenes': colour and shape of the largest object read from
              the pixels (`scenes.read_objects`), against the caption's
              (the row's 'object' label). Scores 'colour_accuracy',
              'shape_accuracy'.

For every caption of the eval split the EMA generator draws one image (the
noise is the same at every evaluation, so evaluations differ only by the
weights). Each score S is reported as

  conditional_S   of the generated images;
  shuffled_S      of images generated from the captions shuffled among the
                  rows, still scored against the rows' own captions: the
                  floor a generator that ignores its text reaches;
  real_S          of the real eval images: the ceiling;

and with a judge that has features (the first of classifier, retrieval)

  fid             the Fréchet distance between the features of generated
                  and of real eval images;
  fid_untrained   the same for the untrained generator (the run's initial
                  weights), and fid_ratio = fid / fid_untrained.

`run` also writes a PNG grid (one row per class: `samples_per_class` images
from that class's eval captions) to `<workdir>/samples/step_<step>.png` and
returns it under `IMAGES` for TensorBoard.
"""
import os
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import jax
import ml_collections
import numpy as np

from mmjax import reporting
from mmjax.data.builders import scenes
from mmjax.errors import ConfigError
from mmjax.evaluators import embedding
from mmjax.metrics import fid
from mmjax.metrics import ranking
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


def _restore(workdir: str, experiment, field: str):
  """(experiment, variables) of the run in `workdir`; ConfigError naming
  `field` if it cannot be restored."""
  try:
    run, state, _ = experiment.restore_run(workdir)
  except (FileNotFoundError, ValueError) as e:
    raise ConfigError(field, f'cannot restore {workdir}: {e}') from e
  return run, _variables(run.runner.to_checkpoint(state))


def _chunked(fn, *arrays) -> Tuple[np.ndarray, ...]:
  """fn over `_CHUNK` rows of `arrays` at a time, outputs concatenated."""
  outs = [fn(*(a[i:i + _CHUNK] for a in arrays))
          for i in range(0, len(arrays[0]), _CHUNK)]
  return tuple(np.concatenate([np.asarray(o[k]) for o in outs])
               for k in range(len(outs[0])))


class _Classifier:
  """Accuracy and penultimate features of a restored classification run."""

  def __init__(self, workdir: str, experiment, field: str):
    run, self._variables = _restore(workdir, experiment, field)
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
    self._apply = jax.jit(lambda v, x: run.model.apply(
        v, {'image': x}, train=False, mutable=['intermediates']))

  def _logits_and_features(self, images: np.ndarray):
    """images [N, H, W, C] -> (logits [N, classes], features [N, D])."""
    def apply(x):
      out, inter = self._apply(self._variables, x)
      return out, inter['intermediates']['features'][0]
    return _chunked(apply, images)

  def scores(self, images, rows) -> Dict[str, float]:
    logits, _ = self._logits_and_features(images)
    return {'accuracy': float((logits.argmax(-1) == rows['label']).mean())}

  def features(self, images: np.ndarray) -> np.ndarray:
    return self._logits_and_features(images)[1]


class _Retrieval:
  """R-precision and image embeddings of a restored two-tower run."""
  CANDIDATES = 100  # The caption and 99 others, as in AttnGAN.

  def __init__(self, workdir: str, experiment, field: str,
               rows: Mapping[str, np.ndarray]):
    run, self._variables = _restore(workdir, experiment, field)
    if run.config.model.name != 'two_tower' or not {'image', 'text'} <= set(
        run.config.model.modalities):
      raise ConfigError(field, (
          f'{workdir} is a {run.config.model.name!r} model of '
          f'{tuple(run.config.model.modalities)}; R-precision needs an '
          "image-text 'two_tower' run on the same dataset."))
    if run.config.input.pp_eval != experiment.config.input.pp_eval:
      raise ConfigError(field, (
          f'{workdir} preprocesses with {run.config.input.pp_eval!r}, the '
          f'generator with {experiment.config.input.pp_eval!r}; train it '
          'with the same input.pp_eval, so both read the same images and '
          'caption ids.'))
    self._apply = jax.jit(lambda v, b: run.model.apply(v, b, train=False))
    # The pool of other captions: the eval split's, each with the id of its
    # distinct caption.
    self._pool, self._pool_ids = np.unique(rows['text'], axis=0,
                                           return_inverse=True)
    self._pool_ids = self._pool_ids.reshape(-1)
    self._pool_embeddings = self._embed_texts(rows)

  def _embed(self, modality: str, **arrays: np.ndarray) -> np.ndarray:
    """[N, D] embeddings of `modality` from its batch `arrays` [N, ...]."""
    def apply(*chunk):
      batch = dict(zip(arrays, chunk))
      return (self._apply(self._variables, batch)[modality],)
    return _chunked(apply, *arrays.values())[0]

  def _embed_texts(self, rows) -> np.ndarray:
    return self._embed('text', **{k: rows[k] for k in ('text', 'text_mask')
                                  if k in rows})

  def scores(self, images, rows) -> Dict[str, float]:
    """'r_precision' of images [N, H, W, C] and their captions (`rows`)."""
    image = self.features(images)
    distinct = {tuple(t): k for k, t in enumerate(self._pool)}
    return {'r_precision': ranking.r_precision(
        image @ self._pool_embeddings.T,
        np.einsum('nd,nd->n', image, self._embed_texts(rows)),
        self._pool_ids,
        np.array([distinct[tuple(t)] for t in rows['text']]),
        self.CANDIDATES)}

  def features(self, images: np.ndarray) -> np.ndarray:
    return self._embed('image', image=images)


class _ScenesPixels:
  """Colour and shape of generated single-object 'scenes' images, read from
  their pixels (`scenes.read_objects`)."""

  def __init__(self, experiment, field: str):
    c = experiment.config
    if (c.dataset.name, c.dataset.features.label) != ('scenes', 'object'):
      raise ConfigError(field, (
          "'scenes' reads images of the 'scenes' dataset against their "
          f"label 'object'; got dataset {c.dataset.name!r}, label "
          f'{c.dataset.features.label!r}.'))

  def scores(self, images, rows) -> Dict[str, float]:
    # value_range(-1, 1) back to the builder's 0..255.
    pixels = (np.asarray(images, np.float32) + 1) * 127.5
    read = [(scenes.read_objects(x) or [(-1, -1, None)])[0] for x in pixels]
    colour, shape = np.divmod(rows['label'], len(scenes.SHAPES))
    return {
        'colour_accuracy': float(np.mean([r[0] for r in read] == colour)),
        'shape_accuracy': float(np.mean([r[1] for r in read] == shape)),
    }

  features = None


@EVALUATORS.register('gan')
class GANEvaluator:
  """Generated images scored by judges, their Fréchet distance, and a sample
  grid (see the module docstring)."""
  JUDGES = ('classifier', 'retrieval', 'pixels')

  def __init__(self, cfg: ml_collections.ConfigDict, experiment,
               workdir: Optional[str] = None):
    if not any(cfg.get(j) for j in self.JUDGES):
      raise ConfigError('evals.gan', (
          'has no judge: give classifier= (an image-only classification '
          'run), retrieval= (an image-text two_tower run) or '
          "pixels='scenes'."))
    self.experiment, self.workdir = experiment, workdir
    self.samples_per_class = cfg.get('samples_per_class', 8)
    self.rows = eval_rows(experiment)
    self.judges = []
    if cfg.get('classifier'):
      self.judges.append(_Classifier(cfg.classifier, experiment,
                                     'evals.gan.classifier'))
    if cfg.get('retrieval'):
      self.judges.append(_Retrieval(cfg.retrieval, experiment,
                                    'evals.gan.retrieval', self.rows))
    if cfg.get('pixels'):
      if cfg.pixels != 'scenes':
        raise ConfigError('evals.gan.pixels', f"{cfg.pixels!r}: the pixels "
                          "of 'scenes' are the only ones read.")
      self.judges.append(_ScenesPixels(experiment, 'evals.gan.pixels'))
    self.real_scores = self._scores('real', self.rows['image'], self.rows)
    self._features = next((j.features for j in self.judges if j.features),
                          None)
    model = experiment.model
    self._generate = jax.jit(
        lambda v, text, mask, key: model.apply(
            v, text, mask, rngs={'noise': key}, method=model.generate))
    if self._features:
      self.real_stats = fid.gaussian_stats(self._features(self.rows['image']))
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

  def _scores(self, prefix: str, images: np.ndarray,
              rows: Mapping[str, np.ndarray]) -> Dict[str, float]:
    """Every judge's scores of `images` against the captions of `rows`."""
    return {f'{prefix}_{k}': v for judge in self.judges
            for k, v in judge.scores(images, rows).items()}

  def _fid(self, images: np.ndarray) -> float:
    return fid.frechet_distance(*fid.gaussian_stats(self._features(images)),
                                *self.real_stats)

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
    shuffle = np.random.default_rng(0).permutation(len(self.rows['label']))
    shuffled = self.generate(state, {k: v[shuffle]
                                     for k, v in self.rows.items()})
    grid = self.grid(state)
    if self.workdir and jax.process_index() == 0:
      os.makedirs(os.path.join(self.workdir, SAMPLES_DIR), exist_ok=True)
      reporting.write_png(os.path.join(self.workdir, SAMPLES_DIR,
                                       f'step_{step}.png'), grid)
    results = {**self._scores('conditional', images, self.rows),
               **self._scores('shuffled', shuffled, self.rows),
               **self.real_scores, IMAGES: {'samples': grid}}
    if self._features:
      score = self._fid(images)
      results.update(fid=score, fid_untrained=self.fid_untrained,
                     fid_ratio=score / self.fid_untrained)
    return results
