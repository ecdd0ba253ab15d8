"""Synthetic captioned videos: coloured shapes moving over a dark background.

Every item is a pure function of ``(seed, index)``: its attributes are drawn from
``numpy.random.default_rng([seed, index])`` and the video is rendered from the attributes alone.
Geometry lives in normalised coordinates (x right, y down, both in [0, 1)), so the same item
rendered at 32 px and at 64 px shows the same scene; speeds are fractions of the frame per frame.

Rendering is antialiased by supersampling (``supersample``² point samples per pixel, averaged)
and toroidal: an object is drawn at the minimal-image offset of every sample point, so an object
that would leave the frame re-enters on the opposite side. Start positions are chosen so that the
whole motion stays inside the frame whenever the clip is short enough; only longer clips wrap.

Palette colours are fully saturated and backgrounds are achromatic (grey), which is what
:mod:`sned.metrics.caption` relies on to recover the attributes from pixels.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow", "cyan", "magenta")
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
SPEEDS: tuple[str, ...] = ("slow", "fast")
#: Where an object starts along its motion (:func:`sample_attributes`).
MOTION_STARTS: tuple[str, ...] = ("anywhere", "edge")

#: RGB in [0, 1] of each palette colour (fully saturated: hue 0, 120, 240, 60, 180, 300 degrees).
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0), "cyan": (0.0, 1.0, 1.0), "magenta": (1.0, 0.0, 1.0),
}
#: Unit step (dx, dy) per direction; y grows downwards, so "up" is -y.
DIRECTION_VECTORS: dict[str, tuple[float, float]] = {
    "left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
#: Displacement per frame, in fractions of the frame side.
SPEED_VALUES: dict[str, float] = {"slow": 0.025, "fast": 0.05}
#: Caption word for each speed.
SPEED_WORDS: dict[str, str] = {"slow": "slowly", "fast": "quickly"}

#: (colour, shape, direction) combinations the training split never shows, for caption accuracy
#: on unseen prompts: for colour ``c`` and shape ``s`` (indices), direction ``(c + s) mod 4``.
#: 18 of the 72 combinations; every colour, shape, direction, (colour, shape), (colour,
#: direction) and (shape, direction) pair still occurs in training.
HELD_OUT: frozenset[tuple[str, str, str]] = frozenset(
    (COLORS[c], SHAPES[s], DIRECTIONS[(c + s) % len(DIRECTIONS)])
    for c in range(len(COLORS)) for s in range(len(SHAPES)))
SPLITS = ("train", "held_out")

#: Half-side of a square relative to the object's ``size`` (its bounding half-extent is ``size``
#: for circles and triangles).
SQUARE_HALF = 0.9
#: Area of each shape in units of size² (normalised coordinates).
SHAPE_AREA: dict[str, float] = {"circle": math.pi, "square": (2 * SQUARE_HALF) ** 2,
                                "triangle": 2.0}
#: Offset (in units of size) of the shape's centroid from its anchor point along y.
SHAPE_CENTROID_DY: dict[str, float] = {"circle": 0.0, "square": 0.0, "triangle": 1.0 / 3.0}

PLAIN_BACKGROUND = 0.1   # grey level in [0, 1] of the plain background
_MARGIN = 0.02           # gap kept between an object and the frame border when not wrapping


def _wrap(d: Tensor) -> Tensor:
    """Minimal-image offset on the unit torus: maps any d to [-0.5, 0.5)."""
    return torch.remainder(d + 0.5, 1.0) - 0.5


def shape_coverage(shape: str, cx: Tensor, cy: Tensor, size: float | Tensor, height: int,
                   width: int, supersample: int = 4) -> Tensor:
    """Antialiased coverage of a shape at a sequence of anchor positions.

    Args:
        shape: one of :data:`SHAPES`.
        cx, cy: (N,) anchor positions in normalised coordinates (circle/square: centre;
            triangle: centre of its bounding box).
        size: half-extent in normalised units (of the frame side), scalar or (N,).
        height, width: output pixel size.
        supersample: samples per pixel along each axis.
    Returns:
        (N, height, width) float32 coverage in [0, 1].
    """
    s = supersample
    cx = torch.as_tensor(cx, dtype=torch.float32).reshape(-1)
    cy = torch.as_tensor(cy, dtype=torch.float32).reshape(-1)
    n = cx.shape[0]
    size_t = torch.as_tensor(size, dtype=torch.float32).reshape(-1).expand(n)
    # Only a window around each anchor can be covered: evaluate the samples there (in unwrapped
    # pixel coordinates, so the window may hang over the border) and scatter it back mod H/W.
    extent = float(size_t.max()) if n else 0.0
    nw = min(width, math.ceil(2 * extent * width) + 3)
    nh = min(height, math.ceil(2 * extent * height) + 3)
    ox = torch.floor((cx - extent) * width).long() - 1          # (N,) window origins
    oy = torch.floor((cy - extent) * height).long() - 1
    px = ox[:, None] + torch.arange(nw)                         # (N, nw) pixel columns
    py = oy[:, None] + torch.arange(nh)                         # (N, nh) pixel rows
    sub = (torch.arange(s, dtype=torch.float32) + 0.5) / s      # sub-sample offsets in a pixel
    xs = ((px[:, :, None] + sub) / width).reshape(n, 1, nw * s)
    ys = ((py[:, :, None] + sub) / height).reshape(n, nh * s, 1)
    dx = _wrap(xs - cx.reshape(n, 1, 1))                         # (N, 1, nw*s)
    dy = _wrap(ys - cy.reshape(n, 1, 1))                         # (N, nh*s, 1)
    r = size_t.reshape(n, 1, 1)
    if shape == "circle":
        inside = dx * dx + dy * dy <= r * r
    elif shape == "square":
        half = SQUARE_HALF * r
        inside = (dx.abs() <= half) & (dy.abs() <= half)
    elif shape == "triangle":  # upright isosceles: apex at (0, -size), base on y = +size
        inside = (dy <= r) & (dx.abs() <= 0.5 * (dy + r))
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    win = inside.to(torch.float32)
    if s > 1:
        win = F.avg_pool2d(win, kernel_size=s)                   # (N, nh, nw)
    out = torch.zeros(n, height, width)
    out[torch.arange(n)[:, None, None], torch.remainder(py, height)[:, :, None],
        torch.remainder(px, width)[:, None, :]] = win
    return out


def _texture(texture_seed: int, height: int, width: int) -> Tensor:
    """(height, width) achromatic, smooth background texture with grey levels in ~[0.03, 0.3].

    A sum of a few random low-frequency sinusoids in normalised coordinates (so it looks the
    same at every resolution), evaluated at pixel centres.
    """
    rng = np.random.default_rng([texture_seed, 7])
    k = 4
    freq = rng.integers(1, 5, size=(k, 2)).astype(np.float32)  # integer → tileable
    phase = rng.uniform(0, 2 * math.pi, size=k).astype(np.float32)
    amp = rng.uniform(0.5, 1.0, size=k).astype(np.float32)
    x = (torch.arange(width, dtype=torch.float32) + 0.5) / width
    y = (torch.arange(height, dtype=torch.float32) + 0.5) / height
    arg = 2 * math.pi * (torch.from_numpy(freq[:, 0]).reshape(k, 1, 1) * x.reshape(1, 1, -1)
                         + torch.from_numpy(freq[:, 1]).reshape(k, 1, 1) * y.reshape(1, -1, 1))
    wave = (torch.from_numpy(amp).reshape(k, 1, 1)
            * torch.sin(arg + torch.from_numpy(phase).reshape(k, 1, 1))).sum(0)
    wave = wave / float(amp.sum())                  # in [-1, 1]
    return 0.165 + 0.135 * wave


def _trajectory(obj: dict[str, Any], frames: int) -> tuple[Tensor, Tensor]:
    """(frames,) x and (frames,) y anchor positions of an object (normalised, mod 1)."""
    vx, vy = DIRECTION_VECTORS[obj["direction"]]
    v = SPEED_VALUES[obj["speed"]]
    t = torch.arange(frames, dtype=torch.float32)
    x0, y0 = obj["start"]
    return torch.remainder(x0 + vx * v * t, 1.0), torch.remainder(y0 + vy * v * t, 1.0)


def render(attributes: dict[str, Any], frames: int, resolution: int | tuple[int, int],
           supersample: int = 4) -> Tensor:
    """Render a scene described by ``attributes`` (as produced by :func:`sample_attributes`).

    Args:
        attributes: dict with ``objects`` (list of object dicts: color, shape, direction,
            speed, size, start) and ``background`` ("plain" | "textured"), ``texture_seed``.
        frames: number of frames T.
        resolution: output side (square) or (height, width).
        supersample: antialiasing samples per pixel along each axis.
    Returns:
        (3, T, H, W) float32 video in [-1, 1]. Objects are drawn last-to-first, so the first
        object of the list (the largest, named first in the caption) is on top.
    """
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
    if h < 1 or w < 1:
        raise ValueError(f"resolution must be positive, got {resolution}")
    if attributes.get("background", "plain") == "textured":
        bg = _texture(int(attributes.get("texture_seed", 0)), h, w)
    else:
        bg = torch.full((h, w), PLAIN_BACKGROUND)
    video = bg.reshape(1, 1, h, w).expand(3, frames, h, w).clone()
    for obj in reversed(attributes["objects"]):
        cx, cy = _trajectory(obj, frames)
        cov = shape_coverage(obj["shape"], cx, cy, obj["size"], h, w, supersample)  # (T, H, W)
        color = torch.tensor(PALETTE[obj["color"]]).reshape(3, 1, 1, 1)
        video = video + cov.unsqueeze(0) * (color - video)
    return (video * 2.0 - 1.0).clamp_(-1.0, 1.0)


#: Sizes (half-extents) an object is drawn with: uniform in this range, for one object / several.
SIZE_RANGE: dict[bool, tuple[float, float]] = {False: (0.12, 0.2), True: (0.09, 0.15)}


def _start_range(size: float, travel: float) -> tuple[float, float, float] | None:
    """(lo, hi, shift): a start is ``uniform(lo, hi) + shift``; None when the travel cannot fit."""
    lo, hi = size + _MARGIN, 1.0 - size - _MARGIN
    if hi - lo < abs(travel):
        return None
    return lo, hi - abs(travel), abs(travel) if travel < 0 else 0.0


def start_support(size: float, travel: float, edge: bool = False) -> tuple[float, float] | None:
    """The interval a start coordinate is drawn from, uniformly (the data's prior).

    ``[start, start + travel] ± size`` stays in frame (with a small margin); with ``edge`` (and
    ``travel`` ≠ 0) the interval is a single point, the margin the object moves away from.
    ``None`` when the travel is too long to fit: the start is then uniform on [0, 1) and the
    object wraps.
    """
    r = _start_range(size, travel)
    if r is None:
        return None
    lo, hi, shift = r
    if edge and travel:
        edge_at = size + _MARGIN if travel > 0 else 1.0 - size - _MARGIN
        return edge_at, edge_at
    return lo + shift, hi + shift


def _start_coordinate(rng: np.random.Generator, size: float, travel: float,
                      edge: bool = False) -> float:
    """A start coordinate drawn from :func:`start_support`. The uniform draw is made even where
    the support is one point, so that later attributes do not depend on ``edge``."""
    r = _start_range(size, travel)
    if r is None:
        return float(rng.uniform(0.0, 1.0))
    lo, hi, shift = r
    start = float(rng.uniform(lo, hi) + shift)
    if edge and travel:
        return start_support(size, travel, edge)[0]
    return start


def _directions(color: str, shape: str, split: str) -> list[str]:
    """Directions an object of ``color`` and ``shape`` may move in, in ``split``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} (got {split!r})")
    held = split == "held_out"
    return [d for d in DIRECTIONS if ((color, shape, d) in HELD_OUT) == held]


def sample_attributes(rng: np.random.Generator, frames: int, max_objects: int = 1,
                      textured_background: bool = False, split: str = "train",
                      motion_start: str = "anywhere") -> dict[str, Any]:
    """Draw a scene's attributes.

    Objects get distinct colours and are sorted by area, largest first (the first object is
    drawn on top, so it is also the largest visible object). ``start`` is chosen
    for a clip of ``frames`` frames (the motion stays in frame when it fits). ``split``
    "train" never draws a (colour, shape, direction) combination of :data:`HELD_OUT`;
    "held_out" draws only those.

    Returns:
        dict with ``objects`` (list of dicts with color, shape, direction, speed, size,
        start=(x, y)), ``background``, ``texture_seed`` and, for convenience, the first
        object's ``color``/``shape``/``direction``/``speed`` at top level.
    """
    n = int(rng.integers(1, max_objects + 1))
    colors = rng.permutation(len(COLORS))[:n]
    lo, hi = SIZE_RANGE[n > 1]
    bodies = [(SHAPES[int(rng.integers(len(SHAPES)))], float(rng.uniform(lo, hi)))
              for _ in range(n)]
    bodies.sort(key=lambda sb: SHAPE_AREA[sb[0]] * sb[1] ** 2, reverse=True)  # largest first
    objects = []
    for k, (shape, size) in enumerate(bodies):
        allowed = _directions(COLORS[int(colors[k])], shape, split)
        direction = allowed[int(rng.integers(len(allowed)))]
        speed = SPEEDS[int(rng.integers(len(SPEEDS)))]
        vx, vy = DIRECTION_VECTORS[direction]
        travel = SPEED_VALUES[speed] * (frames - 1)
        edge = motion_start == "edge"
        x0 = _start_coordinate(rng, size, vx * travel, edge)
        y0 = _start_coordinate(rng, size, vy * travel, edge)
        objects.append({"color": COLORS[int(colors[k])], "shape": shape,
                        "direction": direction, "speed": speed, "size": size,
                        "start": (x0, y0)})
    attrs: dict[str, Any] = {
        "objects": objects,
        "background": "textured" if textured_background else "plain",
        "texture_seed": int(rng.integers(2**31 - 1)),
    }
    attrs.update({key: objects[0][key] for key in ("color", "shape", "direction", "speed")})
    return attrs


def caption_for(attributes: dict[str, Any]) -> str:
    """Caption of a scene, e.g. ``"a red circle moving left slowly"``; several objects are
    joined with ``" and "`` in list order (largest first)."""
    parts = [f"a {o['color']} {o['shape']} moving {o['direction']} {SPEED_WORDS[o['speed']]}"
             for o in attributes["objects"]]
    return " and ".join(parts)


def sample_prompts(n: int, seed: int = 0, split: str = "train") -> list[str]:
    """``n`` single-object captions drawn uniformly from ``split``'s combinations
    (deterministic)."""
    rng = np.random.default_rng([seed, 1234])
    out = []
    for _ in range(n):
        color = COLORS[int(rng.integers(len(COLORS)))]
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        allowed = _directions(color, shape, split)
        obj = {"color": color, "shape": shape,
               "direction": allowed[int(rng.integers(len(allowed)))],
               "speed": SPEEDS[int(rng.integers(len(SPEEDS)))]}
        out.append(caption_for({"objects": [obj]}))
    return out


def held_out_prompts() -> list[str]:
    """Every caption of the held-out split: the 18 :data:`HELD_OUT` combinations at both speeds
    (36 prompts, in a fixed order), none of which the training split ever produces."""
    return [caption_for({"objects": [{"color": c, "shape": s, "direction": d, "speed": v}]})
            for c, s, d in sorted(HELD_OUT, key=lambda t: (COLORS.index(t[0]),
                                                           SHAPES.index(t[1])))
            for v in SPEEDS]


class SyntheticVideoDataset(Dataset):
    """Deterministic synthetic captioned videos.

    Args:
        num_videos: dataset length.
        frames: frames per clip T.
        resolution: side of the square frames (H = W).
        seed: dataset seed; item ``i`` depends only on (seed, i) (and not on frames/resolution
            except through the start positions, which are chosen so the motion fits the clip).
        max_objects: each item has between 1 and ``max_objects`` objects.
        textured_background: smooth grey texture instead of a plain dark grey background.
        supersample: antialiasing samples per pixel along each axis.
        split: "train" (never a :data:`HELD_OUT` combination) or "held_out" (only those).
        motion_start: ``anywhere`` or ``edge`` (:data:`MOTION_STARTS`; see
            :class:`sned.data.config.DataConfig`).

    Items are dicts: ``video`` (3, T, H, W) float32 in [-1, 1], ``caption`` str, ``attributes``
    dict (see :func:`sample_attributes`). Use :func:`sned.data.collate` to batch them.
    """

    def __init__(self, num_videos: int, frames: int, resolution: int, seed: int = 0,
                 max_objects: int = 1, textured_background: bool = False,
                 supersample: int = 4, split: str = "train",
                 motion_start: str = "anywhere") -> None:
        if motion_start not in MOTION_STARTS:
            raise ValueError(f"motion_start must be one of {MOTION_STARTS} (got "
                             f"{motion_start!r})")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS} (got {split!r})")
        if num_videos < 0:
            raise ValueError(f"num_videos must be >= 0, got {num_videos}")
        if frames < 1:
            raise ValueError(f"frames must be >= 1, got {frames}")
        if resolution < 1:
            raise ValueError(f"resolution must be >= 1, got {resolution}")
        if max_objects < 1 or max_objects > len(COLORS):
            raise ValueError(f"max_objects must be in [1, {len(COLORS)}], got {max_objects}")
        self.num_videos, self.frames, self.resolution = num_videos, frames, resolution
        self.seed, self.max_objects = seed, max_objects
        self.textured_background, self.supersample = textured_background, supersample
        self.split, self.motion_start = split, motion_start

    def __len__(self) -> int:
        return self.num_videos

    def attributes(self, index: int) -> dict[str, Any]:
        """The attributes of item ``index`` (cheap: no rendering)."""
        if not -self.num_videos <= index < self.num_videos:
            raise IndexError(f"index {index} out of range for {self.num_videos} videos")
        index %= self.num_videos
        rng = np.random.default_rng([self.seed, index])
        return sample_attributes(rng, self.frames, self.max_objects, self.textured_background,
                                 self.split, self.motion_start)

    def caption_set(self) -> list[str]:
        """The distinct captions of the dataset, sorted (cheap: no rendering)."""
        return sorted({caption_for(self.attributes(i)) for i in range(self.num_videos)})

    def __getitem__(self, index: int) -> dict[str, Any]:
        attrs = self.attributes(index)
        video = render(attrs, self.frames, self.resolution, self.supersample)
        return {"video": video, "caption": caption_for(attrs), "attributes": attrs}
