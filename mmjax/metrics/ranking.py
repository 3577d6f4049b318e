"""R-precision: whether a generated image's own caption outranks others
(Xu et al. 2018, AttnGAN), with the embeddings of a retrieval model."""
import numpy as np


def r_precision(similarity: np.ndarray, own: np.ndarray,
                pool_ids: np.ndarray, caption_ids: np.ndarray,
                candidates: int = 100, seed: int = 0) -> float:
  """The fraction of images whose own caption is the most similar of
  `candidates`: it and `candidates - 1` pool captions drawn (with
  replacement) from those whose text differs from it. R-precision with
  R = 1; a tie counts as a miss.

  Args:
    similarity: [N, P] similarity of image i and pool caption j.
    own: [N] similarity of image i and its own caption.
    pool_ids: [P] the id of each pool caption's text (equal texts, equal ids).
    caption_ids: [N] the id of image i's caption's text, in the same ids.
  """
  rng = np.random.default_rng(seed)
  hits = []
  for i, caption in enumerate(caption_ids):
    others = np.flatnonzero(pool_ids != caption)
    picked = rng.choice(others, candidates - 1)
    hits.append(own[i] > similarity[i, picked].max())
  return float(np.mean(hits))
