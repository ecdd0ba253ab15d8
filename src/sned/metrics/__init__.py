"""Evaluation metrics: FVD / KVD (I3D features), caption accuracy.

- :mod:`.distances`: :func:`frechet_distance`, :func:`kernel_distance`, :class:`FeatureStats`.
- :mod:`.i3d`: :class:`InceptionI3d` and :func:`load_i3d` (the FVD detector).
- :mod:`.fvd`: :func:`compute_features`, :func:`fvd_kvd`, :func:`real_stats` (cached).
- :mod:`.caption` (loaded lazily): :func:`detect_attributes`, :func:`caption_accuracy`.
"""

from __future__ import annotations

import importlib
from typing import Any

from .distances import (FeatureStats, frechet_distance, frechet_distance_from_stats,
                        kernel_distance)
from .fvd import compute_features, describe, detector_identity, fvd_kvd, real_stats
from .i3d import (I3DFeatureExtractor, I3DWeightsMissing, InceptionI3d, load_i3d,
                  preprocess as i3d_preprocess)

_LAZY = {"detect_attributes": ".caption", "caption_accuracy": ".caption"}

__all__ = ["FeatureStats", "I3DFeatureExtractor", "I3DWeightsMissing", "InceptionI3d",
           "caption_accuracy", "compute_features", "describe", "detect_attributes",
           "detector_identity", "frechet_distance", "frechet_distance_from_stats", "fvd_kvd",
           "i3d_preprocess", "kernel_distance", "load_i3d", "real_stats"]


def __getattr__(name: str) -> Any:
    """Lazy re-exports (``caption`` is imported on first use only)."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
