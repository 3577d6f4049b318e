"""Tests of the Fréchet distance against closed forms and an independent
eigendecomposition."""
import numpy as np
import pytest

from mmjax.metrics import fid


def _psd_sqrt(matrix):
  values, vectors = np.linalg.eigh(matrix)
  return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def reference_distance(mu1, sigma1, mu2, sigma2):
  """FID without sqrtm of a non-symmetric product: Tr sqrtm(s1 s2) equals
  Tr sqrt(s1^1/2 s2 s1^1/2), a symmetric PSD matrix (eigh)."""
  root = _psd_sqrt(sigma1)
  middle = root @ sigma2 @ root
  values = np.linalg.eigvalsh((middle + middle.T) / 2)
  diff = mu1 - mu2
  return (diff @ diff + np.trace(sigma1) + np.trace(sigma2) -
          2 * np.sqrt(np.clip(values, 0, None)).sum())


def random_spd(rng, size):
  a = rng.normal(size=(size, size))
  return a @ a.T / size + 0.1 * np.eye(size)


def features(seed, n=200, f=8, scale=1.0):
  rng = np.random.default_rng(seed)
  mixing = rng.normal(size=(f, f)) * scale
  return rng.normal(size=(n, f)) @ mixing + rng.normal(size=f)


def test_gaussian_stats_are_mean_and_unbiased_covariance():
  x = features(0, n=50, f=4)
  mu, sigma = fid.gaussian_stats(x.astype(np.float32))
  assert mu.dtype == sigma.dtype == np.float64
  assert mu.shape == (4,) and sigma.shape == (4, 4)
  centred = x - x.mean(0)
  np.testing.assert_allclose(mu, x.mean(0), rtol=1e-6)
  np.testing.assert_allclose(sigma, centred.T @ centred / 49, rtol=1e-5)


def test_identical_sets_are_at_distance_zero():
  x = features(1)
  assert fid.feature_distance(x, x) == pytest.approx(0, abs=1e-8)


def test_diagonal_gaussians_match_the_closed_form():
  rng = np.random.default_rng(2)
  mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
  a, b = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
  expected = np.sum((mu1 - mu2)**2) + np.sum((np.sqrt(a) - np.sqrt(b))**2)
  assert fid.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == (
      pytest.approx(expected, rel=1e-10))


@pytest.mark.parametrize('diagonal', [True, False])
def test_matches_an_eigendecomposition(diagonal):
  rng = np.random.default_rng(3)
  size = 16
  if diagonal:  # Commuting covariances.
    sigma1, sigma2 = (np.diag(rng.uniform(0.1, 3, size)) for _ in range(2))
  else:
    sigma1, sigma2 = random_spd(rng, size), random_spd(rng, size)
    assert not np.allclose(sigma1 @ sigma2, sigma2 @ sigma1)
  mu1, mu2 = rng.normal(size=size), rng.normal(size=size)
  ours = fid.frechet_distance(mu1, sigma1, mu2, sigma2)
  assert ours > 1
  assert ours == pytest.approx(
      reference_distance(mu1, sigma1, mu2, sigma2), rel=1e-9)


def test_shifting_one_set_adds_the_squared_shift():
  x, y = features(4), features(5)
  c = np.linspace(-1, 2, x.shape[1])
  assert fid.feature_distance(x, x + c) == pytest.approx(c @ c, rel=1e-9)
  # In general the mean term becomes ||mu_y + c - mu_x||^2.
  gap = y.mean(0) - x.mean(0)
  assert fid.feature_distance(x, y + c) == pytest.approx(
      fid.feature_distance(x, y) + (gap + c) @ (gap + c) - gap @ gap,
      rel=1e-9)


def test_is_symmetric():
  x, y = features(6, n=300), features(7, n=100, scale=2)
  assert fid.feature_distance(x, y) == pytest.approx(
      fid.feature_distance(y, x), rel=1e-9)


def test_rank_deficient_covariances_stay_finite():
  # Fewer examples than features: both covariances (and their product) are
  # singular.
  x, y = features(8, n=10, f=64), features(9, n=12, f=64)
  ours = fid.feature_distance(x, y)
  assert np.isfinite(ours)
  (mu1, sigma1), (mu2, sigma2) = fid.gaussian_stats(x), fid.gaussian_stats(y)
  assert np.linalg.matrix_rank(sigma1 @ sigma2) < 64
  assert ours == pytest.approx(
      reference_distance(mu1, sigma1, mu2, sigma2), rel=1e-6)


def test_failed_sqrtm_falls_back_to_eps(monkeypatch):
  """A non-finite sqrtm of the product (what a singular product gives on
  some SciPy versions) is recomputed with eps * I on both covariances."""
  x, y = features(10, n=10, f=32), features(11, n=10, f=32)
  (mu1, sigma1), (mu2, sigma2) = fid.gaussian_stats(x), fid.gaussian_stats(y)
  sqrtm, calls = fid.linalg.sqrtm, []

  def failing_once(matrix):
    calls.append(matrix)
    return np.full_like(matrix, np.nan) if len(calls) == 1 else sqrtm(matrix)

  monkeypatch.setattr(fid.linalg, 'sqrtm', failing_once)
  eps = 1e-2
  ours = fid.frechet_distance(mu1, sigma1, mu2, sigma2, eps=eps)
  assert len(calls) == 2
  offset = eps * np.eye(32)
  np.testing.assert_allclose(calls[1], (sigma1 + offset) @ (sigma2 + offset))
  # The traces of sigma1, sigma2 stay those given; only the root has eps.
  root = sqrtm((sigma1 + offset) @ (sigma2 + offset)).real
  diff = mu1 - mu2
  expected = (diff @ diff + np.trace(sigma1) + np.trace(sigma2) -
              2 * np.trace(root))
  assert ours == pytest.approx(expected, rel=1e-9)


def test_large_imaginary_part_raises():
  # sqrtm(diag(-4, 1)) = diag(2i, 1): sigma1 is no covariance.
  with pytest.raises(ValueError, match='imaginary part.*max 2'):
    fid.frechet_distance(np.zeros(2), np.diag([-4., 1.]), np.zeros(2),
                         np.eye(2))


def test_bad_inputs_raise():
  with pytest.raises(ValueError, match=r'N >= 2.*\(1, 3\)'):
    fid.gaussian_stats(np.ones((1, 3)))
  with pytest.raises(ValueError, match=r'sigma2 \(2, 2\)'):
    fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(2))
  with pytest.raises(ValueError, match='mu2 has non-finite'):
    fid.frechet_distance(np.zeros(2), np.eye(2), np.array([0., np.nan]),
                         np.eye(2))
