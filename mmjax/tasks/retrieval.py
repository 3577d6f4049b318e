"""Contrastive retrieval between modalities (CLIP / SigLIP) on two towers.

Config (`config.task`, see `default_task_config`):
  name         'retrieval'
  pairs        modality pairs trained and evaluated, e.g. (('image', 'text'),)
               or (('image', 'text'), ('audio', 'text'), ('image', 'audio'));
               the loss is the mean over pairs.
  loss         'softmax' (CLIP: cross-entropy over the batch both ways) or
               'sigmoid' (SigLIP: a binary decision for every pair of rows).
  temperature  initial temperature T (logits are cosine / T); learnable.
  bias         initial logit bias (sigmoid only; learnable, SigLIP: -10).
The temperature and bias are parameters of the model (mmjax/models/
two_tower.py), which returns unit embeddings per modality plus
'logit_scale' (1 / T) and 'logit_bias'.

The loss couples the rows of a batch (every other row is a negative), so
`couples_examples` is True: the train step gathers the embeddings of the
whole global batch before the loss, and accumulates gradients exactly
(GradCache, `mmjax.train.steps.coupled_train_step`).

Eval metrics, over the whole eval split, for every pair (a, b) and both
directions a->b and b->a: `{a}_to_{b}_recall{1,5,10}`, `_mean_rank`,
`_median_rank` and `_chance_recall1` (the recall@1 of a random ranking), and
`mean_recall1` over all directions (the best-checkpoint metric). A query's
rank is 1 + the number of wrong items scoring above its best right item.
Duplicate texts: the right items of a query are those whose text (token
ids) equals the query's own text (for a text query) or the true text (for a
query of another modality), so retrieving another copy of the same caption
counts as a hit; without text in the pair, only the paired item is right.
"""
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mmjax.errors import ConfigError, check_fields
from mmjax.registry import TASKS
from mmjax.tasks import base

LOSSES = ('softmax', 'sigmoid')
RECALL_AT = (1, 5, 10)
# CLIP's prompt-ensembling idea: every class name in several sentences.
TEMPLATES = ('a {}', 'a photo of a {}', 'there is a {}')
_NEG = -1e9  # Logit of a padding row: never a negative.


def default_task_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      name='retrieval', pairs=(('image', 'text'),), loss='softmax',
      temperature=0.07, bias=0.0))


def _check_config(cfg: ml_collections.ConfigDict,
                  modalities: Sequence[str]) -> Tuple[Tuple[str, str], ...]:
  """Returns the pairs of `cfg`, or raises ConfigError."""
  check_fields(cfg, default_task_config(), 'task', 'retrieval')
  pairs = tuple(tuple(p) for p in cfg.get('pairs', ()))
  if not pairs or any(len(p) != 2 or p[0] == p[1] for p in pairs):
    raise ConfigError('task.pairs', 'must be a non-empty sequence of pairs '
                      f"of distinct modalities, e.g. (('image', 'text'),); "
                      f'got {pairs!r}.')
  for m in {m for p in pairs for m in p}:
    if m not in modalities:
      raise ConfigError('task.pairs', f'{m!r} is not one of the model '
                        f'modalities {tuple(modalities)}; add it to '
                        'model.modalities or drop the pair.')
  if cfg.get('loss', 'softmax') not in LOSSES:
    raise ConfigError('task.loss', f'got {cfg.get("loss")!r}; valid losses '
                      f'are {", ".join(LOSSES)}.')
  return pairs


def softmax_loss(logits: jax.Array, weights: jax.Array) -> jax.Array:
  """CLIP loss of logits [B, B] (row i's positive is column i): mean over
  real rows (weights [B] > 0) of the cross-entropies both ways."""
  valid = weights > 0

  def one_way(x):  # Padding columns are no negatives.
    x = jnp.where(valid[None, :], x, _NEG)
    return -jnp.diagonal(jax.nn.log_softmax(x, axis=1))

  return 0.5 * (base.weighted_mean(one_way(logits), weights) +
                base.weighted_mean(one_way(logits.T), weights))


def sigmoid_loss(logits: jax.Array, weights: jax.Array) -> jax.Array:
  """SigLIP loss of logits [B, B]: -log sigmoid(+-logit) summed over every
  pair of real rows (diagonal positive) and divided by the real rows."""
  signs = 2 * jnp.eye(logits.shape[0], dtype=logits.dtype) - 1
  pair_weights = weights[:, None] * weights[None, :]
  total = (-jax.nn.log_sigmoid(signs * logits) * pair_weights).sum()
  return total / jnp.maximum(weights.sum(), 1.0)


def ranks(queries: np.ndarray, items: np.ndarray,
          right: np.ndarray) -> np.ndarray:
  """1-based rank [N] of each query's best right item among `items`.

  Args:
    queries: [N, D] embeddings.
    items: [M, D] embeddings.
    right: [N, M] bool, the items that count as a hit for each query (at
      least one per query).
  Returns:
    1 + the number of wrong items that score strictly above the query's
    best-scoring right item (ties go to the query).
  """
  scores = queries.astype(np.float64) @ items.astype(np.float64).T
  best = np.where(right, scores, -np.inf).max(1)
  return 1 + (np.where(right, -np.inf, scores) > best[:, None]).sum(1)


def rank_metrics(prefix: str, query_ranks: np.ndarray,
                 right: np.ndarray) -> Dict[str, float]:
  """recall@k, mean / median rank and chance recall@1 of one direction."""
  metrics = {f'{prefix}_recall{k}': float((query_ranks <= k).mean())
             for k in RECALL_AT}
  metrics[f'{prefix}_mean_rank'] = float(query_ranks.mean())
  metrics[f'{prefix}_median_rank'] = float(np.median(query_ranks))
  metrics[f'{prefix}_chance_recall1'] = float(right.mean(1).mean())
  return metrics


@TASKS.register('retrieval')
class Retrieval:
  """Contrastive loss between modality pairs; retrieval metrics in eval.

  Attributes:
    pairs: the modality pairs.
    couples_examples: True: every row of the global batch is a negative of
      every other, so the train step gathers them all (see
      `mmjax.train.steps.coupled_train_step`).
    class_names: of the dataset's 'label' (for zero-shot prompts), or ().
  """
  num_outputs = 0  # No head: the model returns embeddings.
  best_metric = 'mean_recall1'
  best_mode = 'max'
  couples_examples = True

  def __init__(self, cfg: ml_collections.ConfigDict, spec, preprocess=None):
    """`cfg`: `config.task`; `spec`: the `DatasetSpec` (its modalities and
    its label's class names)."""
    del preprocess  # Nothing of the preprocessing is needed.
    self.pairs = _check_config(cfg, spec.modalities)
    self.loss_name = cfg.get('loss', 'softmax')
    self.class_names = tuple(spec.label_names)

  def _logits(self, outputs: Mapping[str, jax.Array], a: str,
              b: str) -> jax.Array:
    logits = outputs['logit_scale'] * outputs[a] @ outputs[b].T
    if self.loss_name == 'sigmoid':
      logits = logits + outputs['logit_bias']
    return logits

  def loss(self, outputs: Mapping[str, jax.Array],
           batch: base.Batch) -> Tuple[jax.Array, base.Metrics]:
    """Mean over pairs of the contrastive loss on all B rows of `outputs`
    (embeddings [B, D] per modality), and metrics: 'loss', 'temperature',
    'logit_bias' and in-batch top-1 accuracy of each direction."""
    size = outputs[self.pairs[0][0]].shape[0]
    weights = base.example_weights(batch, size)
    loss_fn = softmax_loss if self.loss_name == 'softmax' else sigmoid_loss
    metrics = {}
    losses = []
    for a, b in self.pairs:
      logits = self._logits(outputs, a, b)
      losses.append(loss_fn(logits, weights))
      diagonal = jnp.arange(size)
      for name, x in ((f'{a}_to_{b}', logits), (f'{b}_to_{a}', logits.T)):
        metrics[f'{name}_batch_accuracy'] = base.weighted_mean(
            (x.argmax(1) == diagonal).astype(jnp.float32), weights)
    loss = sum(losses) / len(losses)
    metrics.update(loss=loss, temperature=1 / outputs['logit_scale'],
                   logit_bias=outputs['logit_bias'])
    return loss, metrics

  def eval_stats(self, outputs: Mapping[str, jax.Array],
                 batch: base.Batch) -> base.Metrics:
    """The count of real rows; the metrics come from `eval_examples`."""
    size = outputs[self.pairs[0][0]].shape[0]
    valid = base.example_weights(batch, size) > 0
    return {'count': valid.sum(dtype=jnp.int32)}

  def eval_examples(self, outputs: Mapping[str, jax.Array],
                    batch: base.Batch) -> Dict[str, jax.Array]:
    """Per-example values gathered over the eval split: embeddings [B, D]
    of every paired modality, the text token ids [B, L] (to recognise
    duplicate texts) and the label [B] where the batch has them."""
    examples = {m: outputs[m] for p in self.pairs for m in p}
    for key in ('label', 'text'):
      if key in batch:
        examples[f'{key}_values'] = batch[key]
    return examples

  def _right(self, examples: Mapping[str, np.ndarray],
             a: str, b: str) -> np.ndarray:
    """[N, N] bool: item j of b counts as a hit for query i of a."""
    n = len(examples[a])
    if 'text' in (a, b) and 'text_values' in examples:
      ids = examples['text_values'].reshape(n, -1)
      return (ids[:, None, :] == ids[None, :, :]).all(-1)
    return np.eye(n, dtype=bool)

  def finalize(self, stats: Mapping[str, np.ndarray],
               examples: Mapping[str, np.ndarray]) -> Dict[str, float]:
    """Retrieval metrics (see the module docstring) over the eval split."""
    metrics = {'num_examples': int(stats['count'])}
    recalls = []
    for a, b in self.pairs:
      right = self._right(examples, a, b)  # Symmetric: same for b -> a.
      for q, t in ((a, b), (b, a)):
        prefix = f'{q}_to_{t}'
        metrics.update(rank_metrics(
            prefix, ranks(examples[q], examples[t], right), right))
        recalls.append(metrics[f'{prefix}_recall1'])
    metrics['mean_recall1'] = float(np.mean(recalls))
    return metrics


def zero_shot_classifier(embed_texts: Callable[[Sequence[str]], np.ndarray],
                         class_names: Sequence[str],
                         templates: Sequence[str] = TEMPLATES) -> np.ndarray:
  """[C, D] unit class embeddings: each class name put in every template,
  embedded by `embed_texts` (texts -> [N, D]), averaged, re-normalised."""
  texts = [t.format(name) for name in class_names for t in templates]
  embeddings = np.asarray(embed_texts(texts), np.float64).reshape(
      len(class_names), len(templates), -1).mean(1)
  return embeddings / np.maximum(
      np.linalg.norm(embeddings, axis=-1, keepdims=True), 1e-12)


def zero_shot_accuracy(classifier: np.ndarray, embeddings: np.ndarray,
                       labels: np.ndarray,
                       weights: Optional[np.ndarray] = None) -> float:
  """Accuracy of predicting labels [N] as the class of classifier [C, D]
  most similar to embeddings [N, D]."""
  correct = (embeddings @ classifier.T).argmax(-1) == labels
  return float(np.average(correct, weights=weights))
