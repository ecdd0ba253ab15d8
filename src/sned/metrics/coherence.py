"""Temporal coherence from pixels: does the dominant object follow one steady track?

For the synthetic captioned-shapes videos (:mod:`sned.data.synthetic`), with the caption
detector's colour and coverage α of the dominant object (:func:`sned.metrics.caption.object_alpha`):

- **presence** — per frame, the object's mass Σα is at least :data:`PRESENCE` × its largest
  frame mass in the clip and at least :data:`MIN_PIXELS` pixels;
- **track** — the α-weighted circular centroid of every present frame (x right, y down, in
  fractions of the frame side, as the data's speeds are), unwrapped by minimal-image steps (an
  object that leaves the frame re-enters on the other side);
- **jump** — the length of each step between consecutive present frames, per frame (a gap of
  k frames divides its step by k); per clip its mean and its maximum;
- **line residual** — the RMS distance of the unwrapped track from its least-squares
  constant-velocity fit ``(x, y)(t) = p0 + v·t``: 0 for steady straight motion, large for an
  object that jumps around;
- **coherent** — present in every frame and no jump larger than the prompted speed allows
  (the caption's speed word, :data:`sned.data.synthetic.SPEED_VALUES`) plus
  :data:`JUMP_SLACK_PX` pixels of centroid noise.

Rendered ground truth scores coherent with jumps equal to the prompted speed and residuals near
0; the same clips with their frames shuffled do not (``tests/test_coherence_metric.py``).
:func:`coherence_summary` aggregates many clips with 95 % intervals.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..data.synthetic import SPEED_VALUES, SPEED_WORDS
from .caption import _iter_videos, _to_frames, circular_mean, object_alpha, wilson_interval

PRESENCE = 0.25
"""A frame shows the object when its mass is at least this share of the clip's largest."""
MIN_PIXELS = 0.5
"""... and at least this many pixels of full coverage."""
JUMP_SLACK_PX = 0.5
"""Centroid noise allowed on top of the prompted speed, in pixels per frame."""

_SPEED_OF_WORD = {word: SPEED_VALUES[speed] for speed, word in SPEED_WORDS.items()}
_WORD = re.compile(r"[a-z]+")


def caption_speed(caption: str) -> float | None:
    """The prompted speed (fraction of the frame per frame) of a caption's first object, from
    its speed word ("slowly" / "quickly"); None when it names none."""
    clause = re.split(r"\band\b", caption.lower(), maxsplit=1)[0]
    return next((_SPEED_OF_WORD[w] for w in _WORD.findall(clause) if w in _SPEED_OF_WORD), None)


def _unwrap(pos: Tensor) -> Tensor:
    """(K,) positions on the unit circle → unwrapped by minimal-image steps."""
    steps = torch.remainder(pos.diff() + 0.5, 1.0) - 0.5
    return torch.cat([pos[:1], pos[:1] + steps.cumsum(0)])


def _track_stats(present: Tensor, cx: Tensor, cy: Tensor) -> tuple[float, float, float]:
    """(mean jump, max jump, line residual) of one clip's present frames (NaN with < 2)."""
    idx = torch.nonzero(present).flatten()
    if idx.numel() < 2:
        return math.nan, math.nan, math.nan
    t = idx.to(torch.float64)
    x, y = _unwrap(cx[idx].double()), _unwrap(cy[idx].double())
    gap = t.diff()
    jumps = torch.sqrt(x.diff() ** 2 + y.diff() ** 2) / gap
    design = torch.stack([torch.ones_like(t), t], 1)                 # (K, 2)
    pts = torch.stack([x, y], 1)                                     # (K, 2)
    coef = torch.linalg.lstsq(design, pts).solution
    resid = pts - design @ coef
    residual = float(torch.sqrt((resid ** 2).sum(1).mean()))
    return float(jumps.mean()), float(jumps.max()), residual


def track_coherence(videos: Any, captions: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Per-clip coherence of the dominant object's track (see the module docstring).

    Args:
        videos: (N, 3, T, H, W) float in [-1, 1], (N, T, H, W, 3) uint8, or a sequence of
            single videos in either layout.
        captions: N captions giving each clip's prompted speed (None: no speed check; then
            ``coherent`` only asks for presence in every frame and a straight track — a line
            residual of at most :data:`JUMP_SLACK_PX` pixels).
    Returns:
        N dicts: ``frames``, ``present`` (frames showing the object), ``presence`` (their
        share), ``mean_jump`` / ``max_jump`` / ``residual`` (fractions of the frame side; NaN
        with fewer than two present frames), ``speed`` (prompted, or None), ``jump_limit``
        and ``coherent`` (bool).
    """
    singles = [_to_frames(v) for v in _iter_videos(videos)]
    if captions is not None and len(captions) != len(singles):
        raise ValueError(f"got {len(singles)} videos but {len(captions)} captions")
    out = []
    for i, frames in enumerate(singles):
        t, h, w, _ = frames.shape
        _, has_color, alpha = object_alpha(frames.unsqueeze(0))
        alpha = alpha[0]                                             # (T, H, W)
        mass = alpha.sum((1, 2))
        present = (mass >= PRESENCE * mass.max()) & (mass >= MIN_PIXELS) & bool(has_color[0])
        cx, cy = circular_mean(alpha.sum(1)), circular_mean(alpha.sum(2))
        mean_jump, max_jump, residual = _track_stats(present, cx, cy)
        speed = caption_speed(captions[i]) if captions is not None else None
        slack = JUMP_SLACK_PX / max(h, w)
        limit = None if speed is None else speed + slack
        n_present = int(present.sum())
        steady = (max_jump <= limit) if limit is not None else (residual <= slack)
        out.append({"frames": t, "present": n_present, "presence": n_present / t,
                    "mean_jump": mean_jump, "max_jump": max_jump, "residual": residual,
                    "speed": speed, "jump_limit": limit,
                    "coherent": bool(n_present == t and t > 1 and steady)})
    return out


def _mean_ci(values: list[float]) -> tuple[float | None, list[float] | None]:
    """Mean and 95 % normal interval of the mean of the finite values (None when < 2)."""
    xs = np.array([v for v in values if math.isfinite(v)], dtype=np.float64)
    if xs.size == 0:
        return None, None
    if xs.size < 2:
        return float(xs.mean()), None
    half = 1.959964 * xs.std(ddof=1) / math.sqrt(xs.size)
    return float(xs.mean()), [float(xs.mean() - half), float(xs.mean() + half)]


def coherence_summary(videos: Any, captions: Sequence[str] | None = None) -> dict[str, Any]:
    """:func:`track_coherence` over many clips, aggregated.

    Returns:
        ``coherent`` (share of clips, with ``coherent_ci``: 95 % Wilson interval),
        ``present_all`` (share of clips showing the object in every frame, with its interval),
        ``presence`` (mean share of frames showing it), ``jump`` / ``residual`` (means of the
        per-clip mean jump and line residual, fractions of the frame side, with ``jump_ci`` /
        ``residual_ci``: 95 % intervals of the mean over clips), ``jump_ratio`` (mean of each
        clip's mean jump / its prompted speed; 1 = the prompted speed; None without captions)
        and ``n``.
    """
    clips = track_coherence(videos, captions)
    n = len(clips)
    k = sum(c["coherent"] for c in clips)
    full = sum(c["present"] == c["frames"] for c in clips)
    jump, jump_ci = _mean_ci([c["mean_jump"] for c in clips])
    residual, residual_ci = _mean_ci([c["residual"] for c in clips])
    ratios = [c["mean_jump"] / c["speed"] for c in clips if c["speed"]]
    ratio, ratio_ci = _mean_ci(ratios) if ratios else (None, None)
    return {"coherent": k / n if n else 0.0, "coherent_ci": list(wilson_interval(k, n)),
            "present_all": full / n if n else 0.0,
            "present_all_ci": list(wilson_interval(full, n)),
            "presence": float(np.mean([c["presence"] for c in clips])) if n else 0.0,
            "jump": jump, "jump_ci": jump_ci, "residual": residual, "residual_ci": residual_ci,
            "jump_ratio": ratio, "jump_ratio_ci": ratio_ci, "n": n}


def coherence_columns(videos: Any, captions: Sequence[str]) -> dict[str, Any]:
    """Report columns of :func:`coherence_summary`: ``coherent``, ``present_all``,
    ``jump_ratio`` and ``track_residual`` (fraction of the frame side), each with its
    ``<key>_ci`` 95 % interval, and ``coherence_n``."""
    s = coherence_summary(videos, captions)
    return {"coherent": s["coherent"], "coherent_ci": s["coherent_ci"],
            "present_all": s["present_all"], "present_all_ci": s["present_all_ci"],
            "jump_ratio": s["jump_ratio"], "jump_ratio_ci": s["jump_ratio_ci"],
            "track_residual": s["residual"], "track_residual_ci": s["residual_ci"],
            "coherence_n": s["n"]}
