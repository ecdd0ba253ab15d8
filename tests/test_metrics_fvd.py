"""FVD plumbing with a tiny fake detector: streaming, validation, real-stats caching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import sned.metrics as M
from sned.metrics.distances import FeatureStats, frechet_distance, kernel_distance
from sned.metrics.fvd import (compute_features, detector_identity, fvd_kvd, real_stats,
                              stats_cache_path)


class FakeDetector(nn.Module):
    """uint8 (N, T, H, W, 3) → (N, 6): per-channel mean and std over T, H, W (in [0, 1])."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(6))
        self.calls: list[int] = []

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        self.calls.append(v.shape[0])
        x = v.float() / 255
        return torch.cat([x.mean(dim=(1, 2, 3)), x.std(dim=(1, 2, 3))], 1) * self.scale


def _videos(n: int, seed: int, t: int = 9, h: int = 8, w: int = 8, hi: int = 256) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, hi, (n, t, h, w, 3), dtype=np.uint8)


def test_streaming_matches_direct_and_rebatches():
    det = FakeDetector()
    vids = _videos(11, 0)
    ref = det(torch.from_numpy(vids)).detach().numpy()
    det.calls.clear()
    # a mix of single videos, batches, numpy and torch
    items = [vids[0], torch.from_numpy(vids[1:4]), vids[4:9], torch.from_numpy(vids[9])]
    st = compute_features(items + [vids[10:]], det, batch_size=4, keep_features=True)
    assert det.calls == [4, 4, 3]
    assert st.n == 11
    np.testing.assert_allclose(st.features, ref, rtol=1e-6)
    np.testing.assert_allclose(st.mean, ref.astype(np.float64).mean(0), rtol=1e-6)
    np.testing.assert_allclose(st.cov, np.cov(ref.astype(np.float64), rowvar=False),
                               rtol=1e-5, atol=1e-12)
    assert st.meta["detector"] == detector_identity(det) and st.meta["shape"] == [9, 8, 8]
    assert not det.training
    # max_videos stops early, also mid-batch
    assert compute_features(iter(vids), det, batch_size=3, max_videos=5).n == 5


def test_validation_errors():
    det = FakeDetector()
    with pytest.raises(ValueError, match=r"mismatched video shapes.*\(9, 8, 8\).*#3.*\(9, 8, 10\)"):
        compute_features([_videos(3, 0), _videos(2, 1, w=10)], det, batch_size=2)
    with pytest.raises(ValueError, match="mismatched"):
        compute_features([_videos(2, 0, t=12)], det, expected_shape=(9, 8, 8))
    with pytest.raises(ValueError, match="at least 9"):
        compute_features([_videos(2, 0, t=8)], det)
    assert compute_features([_videos(2, 0, t=4)], det, min_frames=4).n == 2
    det.min_frames = 16  # taken from the detector when present
    with pytest.raises(ValueError, match="at least 16"):
        compute_features([_videos(2, 0, t=9)], det)
    with pytest.raises(ValueError, match="uint8"):
        compute_features([np.zeros((1, 9, 8, 8, 3), np.float32)], FakeDetector())


def test_fvd_kvd_convenience():
    det = FakeDetector()
    real = compute_features([_videos(40, 1)], det, batch_size=16, keep_features=True)
    fake = compute_features([_videos(30, 2, hi=200)], det, batch_size=16, keep_features=True)
    out = fvd_kvd(real, fake)
    assert out["n_real"] == 40 and out["n_fake"] == 30
    assert out["fvd"] == pytest.approx(frechet_distance(real.features, fake.features), rel=1e-6)
    assert out["kvd"] == pytest.approx(kernel_distance(real.features, fake.features), rel=1e-9)
    assert out["fvd"] > 0 and out["kvd"] > 0
    raw = fvd_kvd(real.features, fake.features, kvd_subset_size=20, kvd_num_subsets=5)
    assert raw["fvd"] == pytest.approx(out["fvd"], rel=1e-6) and raw["kvd_std"] >= 0
    no_feats = compute_features([_videos(10, 3)], det)
    assert fvd_kvd(real, no_feats)["kvd"] is None


def test_real_stats_cache(tmp_path):
    det = FakeDetector()
    made = []

    def make_videos():
        made.append(1)
        return (_videos(1, i)[0] for i in range(100))  # more than needed: only n are used

    st = real_stats("synth/v1", 8, 9, 12, make_videos, tmp_path, det, batch_size=5)
    assert st.n == 12 and len(made) == 1
    path = stats_cache_path(tmp_path, "synth/v1", 8, 9, 12, detector_identity(det))
    assert path.is_file() and "synth-v1_r8_f9_n12_" in path.name
    again = real_stats("synth/v1", 8, 9, 12, make_videos, tmp_path, det)
    assert len(made) == 1  # reused from disk
    np.testing.assert_array_equal(again.cov, st.cov)
    np.testing.assert_array_equal(again.features, st.features)
    assert again.meta["dataset"] == "synth/v1" and again.meta["n"] == 12
    # any part of the key changing → recomputation into a different file
    real_stats("synth/v1", 8, 9, 10, make_videos, tmp_path, det)
    assert len(made) == 2
    det2 = FakeDetector()
    with torch.no_grad():
        det2.scale.mul_(2)  # different weights → different identity
    assert detector_identity(det2) != detector_identity(det)
    real_stats("synth/v1", 8, 9, 12, make_videos, tmp_path, det2)
    assert len(made) == 3
    det2.detector_id = "i3d-random-seed0"  # an explicit identity wins
    assert detector_identity(det2) == "i3d-random-seed0"
    assert len(list(tmp_path.glob("*.npz"))) == 3
    # wrong resolution / frames / too few videos are errors, and nothing is cached
    with pytest.raises(ValueError, match="mismatched"):
        real_stats("other", 16, 9, 4, make_videos, tmp_path, det)
    with pytest.raises(ValueError, match="only 3 videos"):
        real_stats("few", 8, 9, 4, lambda: iter(_videos(3, 0)), tmp_path, det)
    assert len(list(tmp_path.glob("*.npz"))) == 3


def test_package_exports():
    for name in ("frechet_distance", "kernel_distance", "FeatureStats", "load_i3d",
                 "InceptionI3d", "compute_features", "fvd_kvd", "real_stats"):
        assert hasattr(M, name)
    assert M.FeatureStats is FeatureStats
    assert callable(M.detect_attributes) and callable(M.caption_accuracy)  # lazy, from .caption
    with pytest.raises(AttributeError):
        M.no_such_metric  # noqa: B018
