"""Caption accuracy: does a (generated) video show what its synthetic-vocabulary caption says?

:func:`detect_attributes` recovers colour, shape and motion direction of the dominant object
analytically, assuming the synthetic setting (:mod:`sned.data.synthetic`): saturated palette
objects over an achromatic background.

- Colour: every pixel's chroma is measured in the opponent plane
  ``(r - (g + b) / 2, √3/2 · (g - b))``, where greys sit at the origin and the six palette colours
  at unit distance, 60° apart. Strongly chromatic pixels vote (weighted by chroma) for the
  nearest palette hue; the colour with most weight wins (the largest object).
- Object alpha: the projection of each pixel's chroma on the winning hue's unit vector is exactly
  the coverage α of an antialiased object over any grey background (pixel = α·colour +
  (1-α)·grey), clipped to [0, 1]; pixels of other hues are zeroed.
- Direction: per frame, the α-weighted circular mean position (correct even for objects that
  wrap around the border); the summed, minimal-image frame-to-frame steps give the dominant axis
  and sign (y grows downwards: negative y is "up").
- Shape: per frame, a template of each shape with the object's area (Σα) and centroid is
  rendered with the same antialiased renderer; the shape with the smallest total L1 error
  against α over the frames wins.

:func:`detect_attributes_batch` runs the same computation vectorised over many videos.
On rendered ground truth this is essentially exact; for noise or unrelated content it returns
arbitrary (but valid) attributes, so accuracy against captions falls to chance.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..data.synthetic import (COLORS, DIRECTIONS, PALETTE, SHAPE_AREA, SHAPE_CENTROID_DY, SHAPES,
                              shape_coverage)

_FOREGROUND_CHROMA = 0.3   # chroma above which a pixel votes for a colour
_MIN_ALPHA = 0.1           # alpha below this is treated as background noise
_HUE_TOLERANCE = math.radians(30.0)
_MAX_BATCH_PIXELS = 2**21   # bounds the memory of one vectorised detection batch
_MIN_MOTION = 0.01         # net displacement (fraction of the frame) below which: no direction


def _opponent(rgb: Tensor) -> tuple[Tensor, Tensor]:
    """rgb (..., 3) in [0, 1] → opponent chroma coordinates (a, b), each (...)."""
    r, g, b = rgb.unbind(-1)
    return r - 0.5 * (g + b), (math.sqrt(3.0) / 2.0) * (g - b)


_PALETTE_AB = torch.stack([torch.stack(_opponent(torch.tensor(PALETTE[c]))) for c in COLORS])
_PALETTE_HUE = torch.atan2(_PALETTE_AB[:, 1], _PALETTE_AB[:, 0])   # (6,)


def _to_frames(video: Any) -> Tensor:
    """Accept uint8 (T, H, W, 3) or float (3, T, H, W) in [-1, 1] → float (T, H, W, 3) in [0, 1]."""
    x = torch.as_tensor(np.asarray(video) if not isinstance(video, Tensor) else video)
    x = x.detach().cpu()
    if x.dtype == torch.uint8:
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"uint8 video must be (T, H, W, 3), got {tuple(x.shape)}")
        return x.to(torch.float32) / 255.0
    if not x.is_floating_point():
        raise TypeError(f"video must be uint8 or floating point, got {x.dtype}")
    if x.ndim != 4 or x.shape[0] != 3:
        raise ValueError(f"float video must be (3, T, H, W) in [-1, 1], got {tuple(x.shape)}")
    return ((x.to(torch.float32).clamp(-1, 1) + 1.0) / 2.0).permute(1, 2, 3, 0)


def circular_mean(weights: Tensor) -> Tensor:
    """Weighted circular mean position along the last axis: (..., L) → (...) in [0, 1)."""
    n = weights.shape[-1]
    theta = 2 * math.pi * (torch.arange(n, dtype=torch.float32) + 0.5) / n
    c = (weights * torch.cos(theta)).sum(-1)
    s = (weights * torch.sin(theta)).sum(-1)
    return torch.remainder(torch.atan2(s, c) / (2 * math.pi), 1.0)


def _net_motion(pos: Tensor, valid: Tensor) -> Tensor:
    """Sum of minimal-image steps between consecutive valid frames. pos, valid: (N, T) → (N,)."""
    t = pos.shape[1]
    idx = torch.where(valid, torch.arange(t), torch.full_like(valid, -1, dtype=torch.long))
    idx = torch.cummax(idx, dim=1).values                      # last valid frame so far
    first = valid.to(torch.long).argmax(1, keepdim=True)       # leading gaps: first valid
    idx = torch.where(idx < 0, first, idx)
    filled = pos.gather(1, idx)
    return (torch.remainder(filled.diff(dim=1) + 0.5, 1.0) - 0.5).sum(1)


def object_alpha(frames: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The dominant object's colour and coverage, from pixels.

    Args:
        frames: (N, T, H, W, 3) float in [0, 1].
    Returns:
        ``(color, has_color, alpha)``: (N,) palette index of the colour with most chroma
        votes, (N,) bool whether any pixel is chromatic enough to vote, and (N, T, H, W)
        coverage α in [0, 1] of that colour (other hues and α < 0.1 zeroed).
    """
    n = frames.shape[0]
    a, b = _opponent(frames)                                       # (N, T, H, W) each
    chroma = torch.sqrt(a * a + b * b)
    hue = torch.atan2(b, a)
    hue_dist = torch.remainder(hue.unsqueeze(-1) - _PALETTE_HUE + math.pi,
                               2 * math.pi) - math.pi              # (N, T, H, W, 6)
    nearest = hue_dist.abs().argmin(-1)
    fg = chroma > _FOREGROUND_CHROMA
    k = len(COLORS)
    bins = (torch.arange(n).reshape(n, 1, 1, 1) * k + nearest)[fg]
    votes = torch.zeros(n * k).index_add_(0, bins, chroma[fg]).reshape(n, k)
    ci = votes.argmax(1)                                           # (N,)
    has_color = votes.amax(1) > 0

    u = _PALETTE_AB[ci].reshape(n, 1, 1, 1, 2)
    alpha = (a * u[..., 0] + b * u[..., 1]).clamp(0.0, 1.0)
    chosen = torch.remainder(hue - _PALETTE_HUE[ci].reshape(n, 1, 1, 1) + math.pi,
                             2 * math.pi) - math.pi
    drop = ((chosen.abs() > _HUE_TOLERANCE) & fg) | (alpha < _MIN_ALPHA)
    return ci, has_color, alpha.masked_fill(drop, 0.0)


def _detect_batch(frames: Tensor) -> list[dict[str, Any]]:
    """Batched detector. frames: (N, T, H, W, 3) float in [0, 1] → N attribute dicts."""
    n, t, h, w, _ = frames.shape
    ci, has_color, alpha = object_alpha(frames)

    mass = alpha.sum((2, 3))                                       # (N, T) in pixels
    valid = (mass >= 0.25 * mass.amax(1, keepdim=True)) & (mass > 0)
    has_object = valid.any(1)
    cx = circular_mean(alpha.sum(2))                              # (N, T) normalised
    cy = circular_mean(alpha.sum(3))
    dx, dy = _net_motion(cx, valid), _net_motion(cy, valid)

    # shape: L1 error of per-frame same-area, same-centroid templates
    area = mass / (h * w)                                          # normalised (frame = 1)
    vmask = valid.to(torch.float32)
    denom = (mass * vmask).sum(1).clamp_min(1e-6)
    errors = []
    for shape in SHAPES:
        size = torch.sqrt(area / SHAPE_AREA[shape])
        anchor_y = cy - SHAPE_CENTROID_DY[shape] * size
        template = shape_coverage(shape, cx.flatten(), anchor_y.flatten(), size.flatten(),
                                  h, w).reshape(n, t, h, w)
        err = (template - alpha).abs().sum((2, 3))                 # (N, T)
        errors.append((err * vmask).sum(1) / denom)
    best = torch.stack(errors, 1).argmin(1)                        # (N,)
    mean_area = (area * vmask).sum(1) / vmask.sum(1).clamp_min(1)

    out = []
    for i in range(n):
        if not bool(has_color[i]):
            out.append({"color": None, "shape": None, "direction": None, "area": 0.0})
            continue
        if not bool(has_object[i]):
            out.append({"color": COLORS[int(ci[i])], "shape": None, "direction": None,
                        "area": 0.0})
            continue
        ddx, ddy = float(dx[i]), float(dy[i])
        if max(abs(ddx), abs(ddy)) < _MIN_MOTION:
            direction = None
        elif abs(ddx) >= abs(ddy):
            direction = "right" if ddx > 0 else "left"
        else:
            direction = "down" if ddy > 0 else "up"
        out.append({"color": COLORS[int(ci[i])], "shape": SHAPES[int(best[i])],
                    "direction": direction, "area": float(mean_area[i])})
    return out


def detect_attributes(video: Any) -> dict[str, Any]:
    """Recover the dominant object's attributes from one video.

    Args:
        video: uint8 (T, H, W, 3) numpy array/tensor, or float (3, T, H, W) tensor/array in
            [-1, 1].
    Returns:
        dict with ``color``, ``shape``, ``direction`` (vocabulary words, or None when no
        chromatic object is found; ``direction`` is also None for an object that moves less
        than 1 % of the frame over the clip) and ``area`` (mean object area as a fraction of
        the frame).
    """
    return _detect_batch(_to_frames(video).unsqueeze(0))[0]


def detect_attributes_batch(videos: Any, chunk: int = 32) -> list[dict[str, Any]]:
    """:func:`detect_attributes` for many videos at once (vectorised, ``chunk`` at a time).

    Args:
        videos: (N, 3, T, H, W) float in [-1, 1], (N, T, H, W, 3) uint8, or a sequence of
            single videos in either layout (of possibly different sizes).
    Returns:
        N attribute dicts.
    """
    singles = [_to_frames(v) for v in _iter_videos(videos)]
    out: list[dict[str, Any]] = []
    i = 0
    while i < len(singles):
        # group consecutive videos of the same shape: at most ``chunk`` and ~2M pixels
        limit = max(1, min(chunk, _MAX_BATCH_PIXELS // max(1, singles[i][..., 0].numel())))
        j = i + 1
        while j < len(singles) and j - i < limit and singles[j].shape == singles[i].shape:
            j += 1
        out.extend(_detect_batch(torch.stack(singles[i:j])))
        i = j
    return out


_WORD = re.compile(r"[a-z]+")


def parse_caption(caption: str) -> dict[str, str | None]:
    """Attributes of the first object named in a caption.

    The caption is cut at the first " and " (synthetic captions name the largest object
    first); within that clause the first colour, shape and direction word is taken.

    Returns:
        dict with ``color``, ``shape``, ``direction`` (None for a missing attribute).
    """
    clause = re.split(r"\band\b", caption.lower(), maxsplit=1)[0]
    words = _WORD.findall(clause)
    out: dict[str, str | None] = {}
    for key, vocab in (("color", COLORS), ("shape", SHAPES), ("direction", DIRECTIONS)):
        out[key] = next((wd for wd in words if wd in vocab), None)
    return out


def _iter_videos(videos: Any) -> list[Any]:
    if isinstance(videos, (Tensor, np.ndarray)):
        if videos.ndim != 5:
            raise ValueError("a batched video array must be 5-D: (N, 3, T, H, W) float or "
                             f"(N, T, H, W, 3) uint8, got shape {tuple(videos.shape)}")
        return [videos[i] for i in range(videos.shape[0])]
    return list(videos)


def caption_accuracy(videos: Any, captions: Sequence[str]) -> dict[str, float | int]:
    """How often detected attributes match the captions.

    Args:
        videos: (N, 3, T, H, W) float in [-1, 1], (N, T, H, W, 3) uint8, or a sequence of
            single videos in either layout.
        captions: N captions; each is compared through :func:`parse_caption` (first object).
    Returns:
        ``{"color", "shape", "direction", "all_correct"}``: fractions in [0, 1] of videos whose
        detected attribute equals the caption's (an attribute missing from the caption counts
        as wrong), plus ``"n"``: the number of videos.
    """
    vids = _iter_videos(videos)
    if len(vids) != len(captions):
        raise ValueError(f"got {len(vids)} videos but {len(captions)} captions")
    keys = ("color", "shape", "direction")
    hits = {k: 0 for k in (*keys, "all_correct")}
    for got, caption in zip(detect_attributes_batch(vids), captions):
        want = parse_caption(caption)
        ok = [want[k] is not None and got[k] == want[k] for k in keys]
        for k, good in zip(keys, ok):
            hits[k] += int(good)
        hits["all_correct"] += int(all(ok))
    n = len(vids)
    out: dict[str, float | int] = {k: (v / n if n else 0.0) for k, v in hits.items()}
    out["n"] = n
    return out


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``k / n`` (default 95 %).

    The two roots p of ``(k/n − p)² = z² p (1 − p) / n``; it stays inside [0, 1] and is
    sensible at k = 0 or k = n, unlike the normal approximation. ``n = 0`` gives (0, 1).
    """
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n (got k={k}, n={n})")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if k == 0 else max(0.0, centre - half)   # exact bounds (no rounding) at the ends
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi
