"""FVD / KVD plumbing: stream videos through a detector, cache real-data statistics.

A *detector* is any ``nn.Module`` mapping uint8 videos (N, T, H, W, 3) to features (N, d) —
normally :func:`sned.metrics.i3d.load_i3d` (d = 400). Optional detector attributes used here:
``detector_id`` (cache identity; otherwise a hash of its state dict), ``min_frames`` (default 9,
the I3D minimum), ``random_features`` (recorded in the cache metadata and in results).

FVD is biased in N: compare numbers only at equal N (and equal frames / resolution).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .distances import FeatureStats, frechet_distance, kernel_distance

DEFAULT_MIN_FRAMES = 9


def detector_identity(detector: nn.Module) -> str:
    """``detector.detector_id`` if set, else class name + SHA-256 (16 hex) of its state dict."""
    det_id = getattr(detector, "detector_id", None)
    if det_id:
        return str(det_id)
    h = hashlib.sha256(type(detector).__qualname__.encode())
    for k, v in sorted(detector.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return f"{type(detector).__name__}-sha256-{h.hexdigest()[:16]}"


def _as_video_batch(v: Any) -> Tensor:
    """One video (T, H, W, 3) or a batch (B, T, H, W, 3), numpy or torch → uint8 (B, T, H, W, 3)."""
    t = v if isinstance(v, Tensor) else torch.from_numpy(np.ascontiguousarray(v))
    if t.ndim == 4:
        t = t.unsqueeze(0)
    if t.ndim != 5 or t.shape[-1] != 3:
        raise ValueError(f"expected a video (T, H, W, 3) or batch (B, T, H, W, 3), got shape "
                         f"{tuple(t.shape)}")
    if t.dtype != torch.uint8:
        raise ValueError(f"expected uint8 videos in [0, 255], got dtype {t.dtype}; convert with "
                         "((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8) for [-1, 1] data")
    return t


@torch.no_grad()
def compute_features(videos_iter: Iterable[Any], detector: nn.Module, batch_size: int = 8,
                     device: str | torch.device = "cpu", keep_features: bool = False,
                     max_videos: int | None = None, min_frames: int | None = None,
                     expected_shape: tuple[int, int, int] | None = None) -> FeatureStats:
    """Stream videos through ``detector`` into a :class:`FeatureStats`.

    videos_iter yields single videos (T, H, W, 3) or batches (B, T, H, W, 3), uint8, numpy or
    torch; they are re-batched to ``batch_size`` and run on ``device`` under ``no_grad`` (the
    detector is put in eval mode). All videos of the set must share (T, H, W) (or match
    ``expected_shape`` = (T, H, W)) — else ValueError — and have at least ``min_frames``
    frames (default: ``detector.min_frames`` or 9). Stops after ``max_videos`` videos.
    ``keep_features=True`` also keeps the raw (n, d) features (for KVD).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    min_frames = int(min_frames if min_frames is not None
                     else getattr(detector, "min_frames", DEFAULT_MIN_FRAMES))
    detector.eval()
    stats = FeatureStats(keep_features=keep_features,
                         meta={"detector": detector_identity(detector),
                               "random_features": bool(getattr(detector, "random_features",
                                                               False))})
    shape: tuple[int, ...] | None = tuple(expected_shape) if expected_shape else None
    pending: list[Tensor] = []
    n_pending = 0
    seen = 0

    def flush(final: bool = False) -> None:
        nonlocal pending, n_pending
        while n_pending >= batch_size or (pending and final):
            batch = torch.cat(pending, 0)
            take, rest = batch[:batch_size], batch[batch_size:]
            feats = detector(take.to(device))
            if feats.ndim != 2 or feats.shape[0] != take.shape[0]:
                raise ValueError(f"detector returned shape {tuple(feats.shape)} for "
                                 f"{take.shape[0]} videos; expected (N, d)")
            stats.update(feats.float())
            pending, n_pending = ([rest] if len(rest) else []), len(rest)

    for item in videos_iter:
        vids = _as_video_batch(item)
        if max_videos is not None:
            vids = vids[: max(max_videos - seen, 0)]
        if len(vids) == 0:
            break
        vshape = tuple(vids.shape[1:4])
        if shape is None:
            shape = vshape
        elif vshape != shape:
            raise ValueError(f"mismatched video shapes within a set: expected (T, H, W) = "
                             f"{shape}, but video #{seen} has {vshape}")
        if vshape[0] < min_frames:
            raise ValueError(f"videos have {vshape[0]} frames; the detector needs at least "
                             f"{min_frames} (I3D/FVD: ≥ 9)")
        pending.append(vids)
        n_pending += len(vids)
        seen += len(vids)
        flush()
        if max_videos is not None and seen >= max_videos:
            break
    flush(final=True)
    stats.meta["shape"] = list(shape) if shape else None
    return stats


def _as_feats(x: FeatureStats | Any) -> tuple[FeatureStats | None, Any]:
    if isinstance(x, FeatureStats):
        return x, (x.features if x.keep_features else None)
    return None, x


def fvd_kvd(real: FeatureStats | Any, fake: FeatureStats | Any,
            kvd_subset_size: int | None = None, kvd_num_subsets: int = 100,
            seed: int = 0) -> dict[str, Any]:
    """FVD and KVD between two feature sets.

    real / fake: raw features (N, d) (numpy / torch) or :class:`FeatureStats` (FVD from its
    moments; KVD only if it kept features). Returns ``{"fvd", "kvd", "kvd_std", "n_real",
    "n_fake", "kvd_subsets"}``; ``kvd`` is None when a side has no raw features; ``kvd_std`` is
    NaN without subsets (see :func:`kernel_distance`).
    """
    rs, rf = _as_feats(real)
    fs, ff = _as_feats(fake)
    if rs is not None or fs is not None:
        rs = rs if rs is not None else FeatureStats().update(rf)
        fs = fs if fs is not None else FeatureStats().update(ff)
        fvd = rs.frechet_distance(fs)
        n_real, n_fake = rs.n, fs.n
    else:
        fvd = frechet_distance(rf, ff)
        n_real, n_fake = len(rf), len(ff)
    kvd = kvd_std = None
    if rf is not None and ff is not None:
        kvd, kvd_std = kernel_distance(rf, ff, subset_size=kvd_subset_size,
                                       num_subsets=kvd_num_subsets, seed=seed, return_std=True)
    return {"fvd": fvd, "kvd": kvd, "kvd_std": kvd_std, "n_real": n_real, "n_fake": n_fake,
            "kvd_subsets": None if kvd_subset_size is None
            else {"size": kvd_subset_size, "num": kvd_num_subsets}}


def _res_str(resolution: int | tuple[int, int]) -> str:
    if isinstance(resolution, int):
        return str(resolution)
    return "x".join(str(int(r)) for r in resolution)


def stats_cache_path(cache_dir: str | Path, dataset_key: str, resolution: int | tuple[int, int],
                     frames: int, n: int, detector_id: str) -> Path:
    """``<cache_dir>/<dataset>_r<res>_f<frames>_n<n>_<detector>.npz`` (names sanitised)."""
    def clean(s: str) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "-", s).strip("-") or "x"
    name = f"{clean(dataset_key)}_r{_res_str(resolution)}_f{frames}_n{n}_{clean(detector_id)}"
    return Path(cache_dir) / f"{name}.npz"


def dataset_key(dataset: str | Mapping[str, Any]) -> str:
    """A name as is; a source record (dict) → ``<kind>-<16 hex of its sorted JSON>``, so every
    field of the record (seed, data options, file hash, …) is part of the key."""
    if isinstance(dataset, str):
        return dataset
    blob = json.dumps(dict(dataset), sort_keys=True, default=str)
    return f"{dataset.get('kind', 'data')}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def real_stats(dataset: str | Mapping[str, Any], resolution: int | tuple[int, int], frames: int,
               n: int, make_videos: Callable[[], Iterable[Any]], cache_dir: str | Path,
               detector: nn.Module, batch_size: int = 8, device: str | torch.device = "cpu",
               keep_features: bool = True, refresh: bool = False) -> FeatureStats:
    """Detector statistics of ``n`` real videos, cached on disk and reused.

    ``dataset``: a name, or — what evaluation passes — the held-out set's source record
    (:attr:`sned.heldout.HeldOutSet.source`: kind, root, split, per-run seed, data options, a
    hash of the held-out files, …), hashed into the key by :func:`dataset_key`. The cache file
    (see :func:`stats_cache_path`) is keyed by that, resolution (int = square H = W, or (H, W)),
    frames, n and the detector identity (random seed, or a hash of the weights file).
    ``make_videos()`` is only called on a cache miss (or ``refresh=True``) and must yield at
    least ``n`` uint8 videos (T=frames, H, W, 3) — else ValueError. Raw features are stored too
    (``keep_features``) so KVD works from the cache.
    """
    det_id = detector_identity(detector)
    key = dataset_key(dataset)
    path = stats_cache_path(cache_dir, key, resolution, frames, n, det_id)
    meta = {"dataset": key, "resolution": _res_str(resolution), "frames": int(frames),
            "n": int(n), "detector": det_id}
    if not isinstance(dataset, str):
        meta["source"] = json.loads(json.dumps(dict(dataset), default=str))
    if path.is_file() and not refresh:
        st = FeatureStats.load(path)
        if all(st.meta.get(k) == v for k, v in meta.items()) and st.n == n and \
                (st.keep_features or not keep_features):
            return st
    h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
    st = compute_features(make_videos(), detector, batch_size=batch_size, device=device,
                          keep_features=keep_features, max_videos=n,
                          expected_shape=(int(frames), int(h), int(w)))
    if st.n < n:
        raise ValueError(f"make_videos() yielded only {st.n} videos for {key!r}; "
                         f"n={n} were requested")
    st.meta.update(meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    st.save(path)
    return st


def real_set_stats(held: Any, cache_dir: str | Path, detector: nn.Module, batch_size: int = 8,
                   device: str | torch.device = "cpu") -> FeatureStats:
    """:func:`real_stats` of a :class:`sned.heldout.HeldOutSet` (keyed by its source record)."""
    return real_stats(held.source, held.resolution, held.frames, held.n,
                      lambda: held.uint8_batches(batch_size), cache_dir, detector,
                      batch_size=batch_size, device=device)


def describe(stats: FeatureStats) -> str:
    """One line for reports, e.g. ``n=512, detector=i3d-random-seed0 (RANDOM features)``."""
    label = " (RANDOM features: relative comparisons only)" if stats.meta.get(
        "random_features") else ""
    return f"n={stats.n}, detector={stats.meta.get('detector')}{label}"


__all__ = ["compute_features", "dataset_key", "describe", "detector_identity", "fvd_kvd",
           "real_set_stats", "real_stats", "stats_cache_path"]
