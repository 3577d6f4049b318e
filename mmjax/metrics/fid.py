"""Fréchet distance between two sets of feature vectors (FID, Heusel et al.,
2017), on the host.

FID fits a Gaussian to each set's features and returns the Fréchet (2-
Wasserstein) distance between the two Gaussians:

    ||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 sqrtm(sigma1 sigma2)).

The formula, the eps fallback and the imaginary-part check follow the
reference pytorch-fid implementation (`calculate_frechet_distance`), so that
numbers are comparable. The features can be any vectors: mmjax's GAN
evaluation uses the penultimate features of a classifier mmjax trains itself,
since Inception weights cannot be downloaded, so its numbers are comparable
with each other but not with published Inception FIDs.
"""
from typing import Tuple

import numpy as np
from scipy import linalg

# Above this relative residual ||X X - A||_F / ||A||_F, the square root X of
# A = sigma1 sigma2 is taken as failed (as a non-finite one is) and recomputed
# with eps added to both covariances.
_SQRTM_TOLERANCE = 1e-3
# The largest imaginary part on the diagonal of sqrtm that counts as
# round-off (pytorch-fid's).
_IMAGINARY_TOLERANCE = 1e-3


def gaussian_stats(features: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """Mean [F] and covariance [F, F] (float64, unbiased) of features [N, F]."""
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or features.shape[0] < 2:
    raise ValueError('features must be [N, F] with N >= 2 examples, got '
                     f'shape {features.shape}.')
  return features.mean(axis=0), np.cov(features, rowvar=False)


def _sqrtm_residual(root: np.ndarray, product: np.ndarray) -> float:
  scale = np.linalg.norm(product)
  return float(np.linalg.norm(root @ root - product) / scale) if scale else 0.


def _product_sqrtm(sigma1: np.ndarray, sigma2: np.ndarray):
  """sqrtm(sigma1 sigma2), or None when it fails (non-finite or inaccurate,
  e.g. on a singular product)."""
  product = sigma1 @ sigma2
  root = linalg.sqrtm(product)
  if (not np.isfinite(root).all() or
      _sqrtm_residual(root, product) > _SQRTM_TOLERANCE):
    return None
  return root


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray, eps: float = 1e-6) -> float:
  """The Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

  Args:
    mu1, mu2: means [F].
    sigma1, sigma2: covariances [F, F] (symmetric positive semi-definite).
    eps: when sqrtm(sigma1 sigma2) is non-finite or inaccurate (a singular
      product, e.g. covariances of fewer than F examples), it is recomputed
      with eps * I added to both covariances.

  Returns:
    ||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 sqrtm(sigma1 sigma2)); it can
    be a round-off below 0 for identical statistics.

  Raises:
    ValueError: on mismatched shapes or non-finite statistics, or when sqrtm has an imaginary part
      too large to be round-off (the statistics are not covariances).
  """
  mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(
      mu2).astype(np.float64)
  sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(
      sigma2).astype(np.float64)
  size = mu1.shape[0]
  if (mu1.shape != (size,) or mu2.shape != (size,) or
      sigma1.shape != (size, size) or sigma2.shape != (size, size)):
    raise ValueError(
        'frechet_distance needs means [F] and covariances [F, F] of one F; '
        f'got mu1 {mu1.shape}, sigma1 {sigma1.shape}, mu2 {mu2.shape}, '
        f'sigma2 {sigma2.shape}.')
  for name, value in (('mu1', mu1), ('sigma1', sigma1), ('mu2', mu2),
                      ('sigma2', sigma2)):
    if not np.isfinite(value).all():
      raise ValueError(f'frechet_distance: {name} has non-finite values.')
  root = _product_sqrtm(sigma1, sigma2)
  if root is None:
    offset = np.eye(size) * eps
    root = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
  if np.iscomplexobj(root):
    if not np.allclose(np.diagonal(root).imag, 0,
                       atol=_IMAGINARY_TOLERANCE):
      raise ValueError(
          'sqrtm(sigma1 sigma2) has a large imaginary part (max '
          f'{np.max(np.abs(root.imag)):.3g}); are sigma1 and sigma2 '
          'covariance matrices?')
    root = root.real
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) -
               2 * np.trace(root))


def feature_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
  """FID between two sets of features, [N_a, F] and [N_b, F]."""
  return frechet_distance(*gaussian_stats(features_a),
                          *gaussian_stats(features_b))
