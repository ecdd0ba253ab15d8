"""Distances between feature sets: Fréchet distance (FVD/FID) and kernel distance (KVD/KID).

Features are arrays of shape ``(N, d)`` (numpy or torch, any float dtype, any device). All
statistics are computed in float64.

- :func:`frechet_distance` / :func:`frechet_distance_from_stats`:
  ``‖μ1 − μ2‖² + tr Σ1 + tr Σ2 − 2 tr √(Σ1 Σ2)`` with unbiased (N − 1) covariances. The trace
  term uses the symmetric form ``tr √(Σ1 Σ2) = Σ √max(eigvalsh(A Σ2 A), 0)`` with ``A = √Σ1``
  from ``eigh`` — ``A Σ2 A`` is similar to ``Σ1 Σ2`` but symmetric PSD, so this is stable, real,
  and runs on GPU through ``torch.linalg``.
- :func:`kernel_distance`: unbiased MMD² with the cubic polynomial kernel
  ``k(x, y) = (xᵀy / d + 1)³`` (as in KID / KVD).
- :class:`FeatureStats`: a streaming accumulator of the first two moments, saveable to ``.npz``.

FVD and KVD are biased in N (KVD only through subset sizes): compare only at equal N.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor

ArrayLike = Any  # numpy array or torch tensor


def _as_f64(x: ArrayLike, name: str, device: torch.device | str | None = None) -> Tensor:
    """Any array → float64 tensor (on ``device``, default: the input's own device)."""
    t = x.detach() if isinstance(x, Tensor) else torch.as_tensor(np.ascontiguousarray(x))
    t = t.to(dtype=torch.float64, device=device if device is not None else t.device)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or inf values")
    return t


def _features(a: ArrayLike, b: ArrayLike, min_n: int = 2) -> tuple[Tensor, Tensor]:
    """Validate two feature sets (N1, d) and (N2, d) and return them as float64 tensors."""
    ta = _as_f64(a, "features a")
    tb = _as_f64(b, "features b", device=ta.device)
    if ta.ndim != 2 or tb.ndim != 2:
        raise ValueError(f"features must be 2-D (N, d); got shapes {tuple(ta.shape)} and "
                         f"{tuple(tb.shape)}")
    if ta.shape[1] != tb.shape[1]:
        raise ValueError(f"feature dimensions differ: a has shape {tuple(ta.shape)}, "
                         f"b has shape {tuple(tb.shape)}")
    for name, t in (("a", ta), ("b", tb)):
        if t.shape[0] < min_n:
            raise ValueError(f"features {name} has {t.shape[0]} samples; need at least {min_n}")
    return ta, tb


def _warn_rank(n: int, d: int, name: str) -> None:
    if n <= d:
        warnings.warn(f"{name}: {n} samples for {d}-dimensional features: the covariance is "
                      f"rank-deficient (rank ≤ {n - 1} < {d}); the Fréchet distance is still "
                      "defined but strongly biased — use more samples than feature dimensions",
                      stacklevel=3)


def _mean_cov(x: Tensor) -> tuple[Tensor, Tensor]:
    """(N, d) float64 → mean (d,), unbiased covariance (d, d)."""
    mu = x.mean(0)
    xc = x - mu
    return mu, xc.T @ xc / (x.shape[0] - 1)


def _sqrt_psd(s: Tensor) -> Tensor:
    """Symmetric PSD square root via ``eigh`` (negative round-off eigenvalues clamped to 0)."""
    w, v = torch.linalg.eigh(0.5 * (s + s.T))
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_distance_from_stats(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike,
                                sigma2: ArrayLike) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    mu (d,), sigma (d, d); numpy or torch (computed in float64 on mu1's device). Returns
    ``max(‖μ1−μ2‖² + tr Σ1 + tr Σ2 − 2 Σ √max(eigvalsh(A Σ2 A), 0), 0)`` with ``A = √Σ1``.
    """
    m1 = _as_f64(mu1, "mu1")
    dev = m1.device
    m2, s1, s2 = (_as_f64(x, n, dev) for x, n in ((mu2, "mu2"), (sigma1, "sigma1"),
                                                  (sigma2, "sigma2")))
    d = m1.shape[-1]
    if m1.shape != (d,) or m2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"inconsistent statistics shapes: mu1 {tuple(m1.shape)}, mu2 "
                         f"{tuple(m2.shape)}, sigma1 {tuple(s1.shape)}, sigma2 {tuple(s2.shape)}")
    a = _sqrt_psd(s1)
    m = a @ s2 @ a
    ev = torch.linalg.eigvalsh(0.5 * (m + m.T))
    tr_covmean = ev.clamp_min(0).sqrt().sum()
    diff = m1 - m2
    dist = diff @ diff + torch.trace(s1) + torch.trace(s2) - 2.0 * tr_covmean
    return max(float(dist), 0.0)


def frechet_distance(a: ArrayLike, b: ArrayLike) -> float:
    """Fréchet distance (FVD / FID) between feature sets a (N1, d) and b (N2, d).

    Warns (does not fail) when a set has no more samples than feature dimensions.
    Raises ValueError for mismatched d, non-2-D input, fewer than 2 samples, NaN/inf.
    """
    ta, tb = _features(a, b)
    _warn_rank(ta.shape[0], ta.shape[1], "features a")
    _warn_rank(tb.shape[0], tb.shape[1], "features b")
    mu1, s1 = _mean_cov(ta)
    mu2, s2 = _mean_cov(tb)
    return frechet_distance_from_stats(mu1, s1, mu2, s2)


def _mmd2_unbiased(x: Tensor, y: Tensor) -> Tensor:
    """Unbiased MMD² with k(x, y) = (xᵀy/d + 1)³; x (m, d), y (n, d) float64 → scalar."""
    d = x.shape[1]
    m, n = x.shape[0], y.shape[0]
    kxx = (x @ x.T / d + 1.0) ** 3
    kyy = (y @ y.T / d + 1.0) ** 3
    kxy = (x @ y.T / d + 1.0) ** 3
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return sxx + syy - 2.0 * kxy.mean()


def kernel_distance(a: ArrayLike, b: ArrayLike, subset_size: int | None = None,
                    num_subsets: int = 100, seed: int = 0,
                    return_std: bool = False) -> float | tuple[float, float]:
    """Kernel distance (KVD / KID): unbiased MMD² with ``k(x, y) = (xᵀy / d + 1)³``.

    a (m, d), b (n, d). Schemes:

    - ``subset_size=None`` (default): one unbiased estimate over all m and n samples
      (U-statistic; diagonal kernel terms excluded). ``std`` is then NaN.
    - ``subset_size=s``: ``num_subsets`` times, draw s rows of a and s rows of b independently
      without replacement (``numpy.random.default_rng(seed)``), compute the unbiased MMD² of
      the pair; return the mean (and the population std over subsets) — the KID scheme of
      Bińkowski et al. / torch-fidelity. Requires ``2 ≤ s ≤ min(m, n)``.

    The estimate is unbiased, so it can be slightly negative for matching distributions.
    Returns a float, or ``(mean, std)`` with ``return_std=True``.
    """
    ta, tb = _features(a, b)
    if subset_size is None:
        val, std = float(_mmd2_unbiased(ta, tb)), math.nan
    else:
        s = int(subset_size)
        if not 2 <= s <= min(ta.shape[0], tb.shape[0]):
            raise ValueError(f"subset_size={s} must be in [2, min(N_a, N_b)] = "
                             f"[2, {min(ta.shape[0], tb.shape[0])}]")
        if num_subsets < 1:
            raise ValueError(f"num_subsets must be >= 1, got {num_subsets}")
        rng = np.random.default_rng(seed)
        vals = []
        for _ in range(num_subsets):
            ia = torch.as_tensor(rng.choice(ta.shape[0], s, replace=False), device=ta.device)
            ib = torch.as_tensor(rng.choice(tb.shape[0], s, replace=False), device=tb.device)
            vals.append(float(_mmd2_unbiased(ta[ia], tb[ib])))
        val, std = float(np.mean(vals)), float(np.std(vals))
    return (val, std) if return_std else val


class FeatureStats:
    """Streaming first and second moments of features, in float64.

    ``update(feats)`` with feats (B, d) adds ``Σ(x − c)`` and ``Σ(x − c)(x − c)ᵀ``, where the
    shift ``c`` is the mean of the first batch (an exact reparametrisation that avoids the
    cancellation of the raw sum-of-outer-products formula). ``mean`` (d,), ``cov`` (d, d,
    unbiased), ``n``. With ``keep_features=True`` the raw features are kept as well
    (``features`` (n, d) float32), e.g. for :func:`kernel_distance`.
    """

    def __init__(self, keep_features: bool = False, meta: dict[str, Any] | None = None) -> None:
        self.keep_features = keep_features
        self.meta: dict[str, Any] = dict(meta or {})
        self.n = 0
        self.shift: np.ndarray | None = None      # (d,)
        self.sum: np.ndarray | None = None        # (d,)   Σ(x − shift)
        self.sum_outer: np.ndarray | None = None  # (d, d) Σ(x − shift)(x − shift)ᵀ
        self._chunks: list[np.ndarray] = []

    @property
    def dim(self) -> int | None:
        return None if self.shift is None else int(self.shift.shape[0])

    def update(self, feats: ArrayLike) -> FeatureStats:
        """Add a batch of features (B, d) (numpy or torch; moments computed on its device)."""
        x = _as_f64(feats, "features")
        if x.ndim != 2:
            raise ValueError(f"features must be 2-D (B, d); got shape {tuple(x.shape)}")
        if x.shape[0] == 0:
            return self
        if self.shift is None:
            self.shift = x.mean(0).cpu().numpy()
            d = x.shape[1]
            self.sum, self.sum_outer = np.zeros(d), np.zeros((d, d))
        elif x.shape[1] != self.dim:
            raise ValueError(f"feature dimension changed: accumulated d={self.dim}, "
                             f"new batch has shape {tuple(x.shape)}")
        xc = x - torch.as_tensor(self.shift, device=x.device)
        self.sum += xc.sum(0).cpu().numpy()
        self.sum_outer += (xc.T @ xc).cpu().numpy()
        self.n += int(x.shape[0])
        if self.keep_features:
            self._chunks.append(x.float().cpu().numpy())
        return self

    def merge(self, other: FeatureStats) -> FeatureStats:
        """Add another accumulator's moments (and kept features) into this one."""
        if other.n == 0:
            return self
        if self.keep_features and not other.keep_features:
            raise ValueError("this FeatureStats keeps raw features but `other` did not")
        if self.n == 0:
            self.shift, self.n = other.shift.copy(), other.n
            self.sum, self.sum_outer = other.sum.copy(), other.sum_outer.copy()
        else:
            if other.dim != self.dim:
                raise ValueError(f"cannot merge d={other.dim} into d={self.dim}")
            delta = other.shift - self.shift  # re-centre other's moments on self.shift
            s = other.sum + other.n * delta
            self.sum_outer += (other.sum_outer + np.outer(delta, other.sum)
                               + np.outer(other.sum, delta) + other.n * np.outer(delta, delta))
            self.sum += s
            self.n += other.n
        if self.keep_features:
            self._chunks.append(other.features)
        return self

    @property
    def mean(self) -> np.ndarray:
        """(d,) float64."""
        if self.n < 1:
            raise ValueError("FeatureStats is empty")
        return self.shift + self.sum / self.n

    @property
    def cov(self) -> np.ndarray:
        """(d, d) float64 unbiased covariance."""
        if self.n < 2:
            raise ValueError(f"need at least 2 samples for a covariance, have {self.n}")
        m = self.sum / self.n
        c = (self.sum_outer - self.n * np.outer(m, m)) / (self.n - 1)
        return 0.5 * (c + c.T)

    @property
    def features(self) -> np.ndarray:
        """(n, d) float32 raw features (only with ``keep_features=True``)."""
        if not self.keep_features:
            raise ValueError("raw features were not kept (use keep_features=True)")
        if not self._chunks:
            return np.zeros((0, self.dim or 0), np.float32)
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks, 0)]
        return self._chunks[0]

    def save(self, path: str | os.PathLike) -> None:
        """Write to ``.npz`` (atomically: temp file then rename)."""
        if self.n == 0:
            raise ValueError("refusing to save an empty FeatureStats")
        arrays = dict(n=np.array(self.n), shift=self.shift, sum=self.sum,
                      sum_outer=self.sum_outer, meta=np.array(json.dumps(self.meta)))
        if self.keep_features:
            arrays["features"] = self.features
        path = os.fspath(path)
        tmp = f"{path}.tmp-{os.getpid()}.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> FeatureStats:
        with np.load(os.fspath(path), allow_pickle=False) as z:
            st = cls(keep_features="features" in z.files, meta=json.loads(str(z["meta"])))
            st.n = int(z["n"])
            st.shift, st.sum, st.sum_outer = z["shift"], z["sum"], z["sum_outer"]
            if st.keep_features:
                st._chunks = [z["features"]]
        return st

    def frechet_distance(self, other: FeatureStats) -> float:
        """Fréchet distance between this set's and ``other``'s Gaussian statistics."""
        if self.dim != other.dim:
            raise ValueError(f"feature dimensions differ: d={self.dim} vs d={other.dim}")
        for name, st in (("self", self), ("other", other)):
            if st.n <= (st.dim or 0):
                _warn_rank(st.n, st.dim, f"FeatureStats {name}")
        return frechet_distance_from_stats(self.mean, self.cov, other.mean, other.cov)

    def __repr__(self) -> str:
        return f"FeatureStats(n={self.n}, d={self.dim}, keep_features={self.keep_features})"
