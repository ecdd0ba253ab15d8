"""Fréchet / kernel distances against independent scipy / sklearn references."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.linalg
import torch
from sklearn.metrics.pairwise import polynomial_kernel

from sned.metrics.distances import (FeatureStats, frechet_distance, frechet_distance_from_stats,
                                    kernel_distance)


def _gauss(n: int, d: int, seed: int, shift: float = 0.0, scale: float = 1.0) -> np.ndarray:
    mix = np.random.default_rng(1000 + d).normal(size=(d, d)) / np.sqrt(d) + np.eye(d)
    rng = np.random.default_rng(seed)  # same correlated, well-conditioned law for every seed
    return (rng.normal(size=(n, d)) @ mix) * scale + shift


def _scipy_fd(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)  # unbiased (N - 1)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def _sklearn_mmd(a: np.ndarray, b: np.ndarray) -> float:
    d = a.shape[1]
    kw = dict(degree=3, gamma=1.0 / d, coef0=1)
    kxx, kyy, kxy = (polynomial_kernel(x, y, **kw) for x, y in ((a, a), (b, b), (a, b)))
    m, n = len(a), len(b)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1))
                 + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2 * kxy.mean())


@pytest.mark.parametrize("d", [8, 32])
def test_frechet_matches_scipy(d):
    a = _gauss(500, d, 0)
    b = _gauss(400, d, 1, shift=0.3, scale=1.5)
    ref = _scipy_fd(a, b)
    assert ref > 1.0
    assert frechet_distance(a, b) == pytest.approx(ref, rel=1e-6)


def test_frechet_torch_float32_input_and_symmetry():
    a, b = _gauss(300, 16, 2), _gauss(300, 16, 3, shift=-0.2)
    ta, tb = torch.from_numpy(a).float(), torch.from_numpy(b).float()
    ref = _scipy_fd(ta.double().numpy(), tb.double().numpy())  # same float32-rounded data
    assert frechet_distance(ta, tb) == pytest.approx(ref, rel=1e-6)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-10)


def _identical_sets_bound(a: np.ndarray, safety: float = 8.0) -> float:
    """Rounding bound for FD(a, a) = 2 tr Σ − 2 Σ √λ_i(A Σ A), which is 0 in exact arithmetic.

    In float64, eigh and the matmuls move each eigenvalue λ_i² of A Σ A = Σ² by up to
    δ = safety · d · eps · ‖Σ‖₂²; its square root then moves by at most min(√δ, δ / λ_i) — the
    √δ term dominates for near-zero eigenvalues (this test's Σ has one at ~3e-8, where FD(a, a)
    reached 3.6e-8 on some BLAS builds, over a fixed 1e-8 bound). The trace terms add
    d · eps · tr Σ. So the bound scales with the values and with float64 rounding."""
    d = a.shape[1]
    eps = np.finfo(np.float64).eps
    sigma = np.cov(a, rowvar=False)
    lam = np.clip(np.linalg.eigvalsh(sigma), 0.0, None)
    delta = safety * d * eps * np.linalg.norm(sigma, 2) ** 2
    per_eig = np.minimum(np.sqrt(delta), delta / np.maximum(lam, np.finfo(float).tiny))
    return float(2.0 * per_eig.sum() + 4.0 * d * eps * np.trace(sigma))


def test_frechet_identical_sets_is_zero():
    a = _gauss(200, 24, 4, shift=5.0)
    bound = _identical_sets_bound(a)
    assert bound < 1e-4 * frechet_distance(a, _gauss(200, 24, 5, shift=5.2))  # still a test
    assert abs(frechet_distance(a, a)) <= bound
    assert abs(frechet_distance(a, a.copy()[::-1])) <= bound  # order does not matter


def test_frechet_from_stats_known_value():
    # 1-D Gaussians: (m1 - m2)^2 + (s1 - s2)^2 with s = std
    fd = frechet_distance_from_stats(np.array([1.0]), np.array([[4.0]]),
                                     np.array([3.0]), np.array([[9.0]]))
    assert fd == pytest.approx(4.0 + 1.0, rel=1e-12)


def test_frechet_errors_and_rank_warning():
    a = _gauss(50, 8, 5)
    with pytest.raises(ValueError, match=r"\(50, 8\).*\(50, 6\)"):
        frechet_distance(a, a[:, :6])
    bad = a.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        frechet_distance(a, bad)
    bad[3, 2] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        kernel_distance(bad, a)
    with pytest.warns(UserWarning, match="rank-deficient"):
        frechet_distance(a[:5], a[5:10])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frechet_distance(a, a[::-1])  # 50 > 8: no warning


def test_kernel_distance_matches_sklearn():
    a, b = _gauss(120, 16, 6), _gauss(90, 16, 7, shift=0.5)
    ref = _sklearn_mmd(a, b)
    assert ref > 0
    assert kernel_distance(a, b) == pytest.approx(ref, rel=1e-9)
    assert kernel_distance(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(ref,
                                                                                      rel=1e-9)
    val, std = kernel_distance(a, b, return_std=True)
    assert val == pytest.approx(ref, rel=1e-9) and np.isnan(std)


def test_kernel_distance_subsets_scheme():
    a, b = _gauss(100, 8, 8), _gauss(80, 8, 9, shift=0.4)
    mean, std = kernel_distance(a, b, subset_size=30, num_subsets=7, seed=3, return_std=True)
    rng = np.random.default_rng(3)  # documented scheme: per subset, draw a's rows then b's
    refs = []
    for _ in range(7):
        ia = rng.choice(100, 30, replace=False)
        ib = rng.choice(80, 30, replace=False)
        refs.append(_sklearn_mmd(a[ia], b[ib]))
    assert mean == pytest.approx(np.mean(refs), rel=1e-9)
    assert std == pytest.approx(np.std(refs), rel=1e-9)
    with pytest.raises(ValueError, match="subset_size"):
        kernel_distance(a, b, subset_size=81)


def test_kernel_distance_same_distribution_near_zero():
    a, b = _gauss(400, 8, 10), _gauss(400, 8, 11)
    far = kernel_distance(a, _gauss(400, 8, 12, shift=1.0))
    assert abs(kernel_distance(a, b)) < 0.05 * far


def test_streaming_stats_equal_batch_stats(tmp_path):
    x = _gauss(257, 12, 13, shift=100.0)  # large mean: the shift keeps the covariance exact
    st = FeatureStats(keep_features=True)
    for i in range(0, len(x), 40):
        st.update(torch.from_numpy(x[i:i + 40]) if i % 80 else x[i:i + 40])
    assert st.n == 257
    np.testing.assert_allclose(st.mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(st.cov, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(st.features, x.astype(np.float32))
    # merge two halves accumulated separately
    s1, s2 = FeatureStats().update(x[:100]), FeatureStats().update(x[100:] * 1.0)
    s1.merge(s2)
    np.testing.assert_allclose(s1.cov, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-10)
    # save / load round trip, and FD from stats equals FD from features
    p = tmp_path / "stats.npz"
    st.meta["dataset"] = "x"
    st.save(p)
    ld = FeatureStats.load(p)
    assert ld.n == 257 and ld.meta == st.meta and ld.keep_features
    np.testing.assert_array_equal(ld.cov, st.cov)
    y = _gauss(150, 12, 14, shift=99.0)
    assert ld.frechet_distance(FeatureStats().update(y)) == pytest.approx(
        frechet_distance(x, y), rel=1e-8)
    with pytest.raises(ValueError, match="dimension"):
        st.update(np.zeros((2, 5)))
