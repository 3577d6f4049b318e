"""Hand cases of R-precision (mmjax/metrics/ranking.py)."""
import numpy as np
import pytest

from mmjax.metrics import ranking


def _unit_texts(num_texts=5, per_text=20, dim=8):
  """(similarity [N, N], own [N], ids [N]) of images that equal their
  caption's unit-norm embedding, `per_text` images per text."""
  rng = np.random.default_rng(0)
  texts = rng.standard_normal((num_texts, dim))
  texts /= np.linalg.norm(texts, axis=1, keepdims=True)
  ids = np.repeat(np.arange(num_texts), per_text)
  return texts[ids] @ texts[ids].T, np.ones(len(ids)), ids


def test_images_of_their_own_caption_score_one():
  similarity, own, ids = _unit_texts()
  assert ranking.r_precision(similarity, own, ids, ids) == 1.0


def test_ties_with_an_other_caption_are_misses():
  similarity, own, ids = _unit_texts()
  assert ranking.r_precision(np.ones_like(similarity), own, ids, ids) == 0.0


def test_images_that_ignore_their_caption_score_chance():
  # Images unrelated to the captions: the own caption is the most similar
  # of 100 only by chance, about 1 / 100.
  rng = np.random.default_rng(1)
  n = 4000
  ids = np.arange(n)  # Every caption distinct.
  similarity = rng.standard_normal((n, n))
  own = rng.standard_normal(n)
  assert ranking.r_precision(similarity, own, ids, ids) == pytest.approx(
      0.01, abs=0.005)


def test_only_captions_that_differ_are_candidates():
  # Pool captions equal to the image's own are never drawn: an image
  # scores 1 if it is most similar to its own text, however many copies of
  # that text the pool holds and however they score.
  ids = np.array([0, 0, 0, 1])
  similarity = np.array([[9., 9., 9., 1.]] * 3 + [[0., 0., 0., 1.]])
  own = np.array([2., 2., 2., 2.])
  assert ranking.r_precision(similarity, own, ids, ids, candidates=3) == 1.0
