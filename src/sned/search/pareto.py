"""Pareto fronts over (cost, objective), their hypervolume, ``pareto.json`` and plots.

Both axes are minimised: cost (``params``, ``macs`` or ``latency_ms``) and the objective
(``val_loss``). Points may be :class:`~sned.search.evolution.Point` objects or mappings with the
same keys (e.g. entries read back from ``pareto.json``); ``val_loss`` and ``objective`` are
accepted for one another.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..arch import Arch
from ..store.files import atomic_write_text

_ALIASES = {"val_loss": "objective", "objective": "val_loss"}
_AXIS_LABELS = {"params": ("parameters (M)", 1e-6), "macs": ("GMACs", 1e-9),
                "latency_ms": ("latency (ms)", 1.0), "val_loss": ("validation loss", 1.0),
                "objective": ("objective", 1.0)}


def _get(point: Any, key: str) -> Any:
    """``point[key]`` for mappings, else ``point.key`` (with the val_loss/objective alias)."""
    for k in (key, _ALIASES.get(key)):
        if k is None:
            continue
        if isinstance(point, Mapping):
            if k in point:
                return point[k]
        elif hasattr(point, k):
            return getattr(point, k)
    raise KeyError(f"point has no {key!r}: {point!r}"[:300])


def _xy(point: Any, cost_key: str, objective_key: str) -> tuple[float, float]:
    if isinstance(point, (tuple, list)) and len(point) == 2 and all(
            isinstance(v, (int, float)) for v in point):
        return float(point[0]), float(point[1])
    c = _get(point, cost_key)
    if c is None:
        raise KeyError(f"point has no value for {cost_key!r}")
    return float(c), float(_get(point, objective_key))


def pareto_front(points: Iterable[Any], cost_key: str = "params",
                 objective_key: str = "val_loss") -> list[Any]:
    """The non-dominated points (both keys minimised), sorted by increasing cost.

    A point is kept when no other point has cost ≤ and objective ≤ with one strictly smaller.
    Of several points with identical (cost, objective) the first one given is kept; points with
    a non-finite cost or objective are ignored. Returns the given point objects.
    """
    items = []
    for i, p in enumerate(points):
        c, o = _xy(p, cost_key, objective_key)
        if math.isfinite(c) and math.isfinite(o):
            items.append((c, o, i, p))
    items.sort(key=lambda t: (t[0], t[1], t[2]))
    front, best = [], math.inf
    for c, o, _, p in items:
        if o < best:
            front.append(p)
            best = o
    return front


def hypervolume_2d(front: Iterable[Any], ref_point: tuple[float, float],
                   cost_key: str = "params", objective_key: str = "val_loss",
                   ideal_point: tuple[float, float] | None = None) -> float:
    """Area dominated by ``front`` and bounded by ``ref_point`` = (cost, objective) (both
    minimised; larger is better). Points not strictly better than the reference on both axes
    contribute nothing; ``front`` need not be non-dominated (it is filtered first).

    With ``ideal_point`` the area is divided by the box ``[ideal, ref]``, giving a fraction in
    [0, 1] that does not depend on the units of the two axes. Compare hypervolumes only with the
    same reference (e.g. :func:`reference_point` over all the runs compared).
    """
    rc, ro = map(float, ref_point)
    pts = [_xy(p, cost_key, objective_key) for p in front]
    pts = [(c, o) for c, o in pts if c < rc and o < ro and math.isfinite(c) and math.isfinite(o)]
    pts = pareto_front(pts)
    area = 0.0
    for i, (c, o) in enumerate(pts):
        nxt = pts[i + 1][0] if i + 1 < len(pts) else rc
        area += (nxt - c) * (ro - o)
    if ideal_point is not None:
        box = (rc - float(ideal_point[0])) * (ro - float(ideal_point[1]))
        if box <= 0:
            raise ValueError(f"ideal_point {ideal_point} must be below ref_point {ref_point}")
        area /= box
    return area


def reference_point(*point_sets: Iterable[Any], cost_key: str = "params",
                    objective_key: str = "val_loss", margin: float = 0.1
                    ) -> tuple[tuple[float, float], tuple[float, float]]:
    """(reference, ideal) points spanning every set: the worst cost/objective plus ``margin`` of
    the range, and the best of each. Use both for :func:`hypervolume_2d` when comparing runs."""
    xy = [_xy(p, cost_key, objective_key) for s in point_sets for p in s]
    xy = [(c, o) for c, o in xy if math.isfinite(c) and math.isfinite(o)]
    if not xy:
        raise ValueError("reference_point needs at least one finite point")
    cs, os_ = [c for c, _ in xy], [o for _, o in xy]
    dc, do = (max(cs) - min(cs)) or abs(max(cs)) or 1.0, (max(os_) - min(os_)) or abs(
        max(os_)) or 1.0
    return (max(cs) + margin * dc, max(os_) + margin * do), (min(cs), min(os_))


# --------------------------------------------------------------------------------- files
def _point_dict(p: Any) -> dict[str, Any]:
    if hasattr(p, "to_dict") and not isinstance(p, Mapping):
        return p.to_dict()
    arch = _get(p, "arch")
    d: dict[str, Any] = {"arch": arch.to_dict() if isinstance(arch, Arch) else dict(arch),
                         "params": int(_get(p, "params")), "macs": int(_get(p, "macs")),
                         "val_loss": float(_get(p, "val_loss"))}
    lat = p.get("latency_ms") if isinstance(p, Mapping) else getattr(p, "latency_ms", None)
    if lat is not None:
        d["latency_ms"] = float(lat)
    return d


def save_pareto_json(path: str | Path, points: Iterable[Any], cost_key: str = "params",
                     objective_key: str = "val_loss", front_only: bool = True,
                     val_data: Mapping[str, Any] | None = None) -> Path:
    """Write ``pareto.json``: a list of points ``{"arch": <Arch dict>, "params", "macs",
    "val_loss"[, "latency_ms"][, "val_data"]}`` sorted by cost. ``val_data``: the record of the
    held-out data the objective was measured on (:attr:`sned.heldout.HeldOutSet.source`),
    written into every point.

    ``front_only`` (default) keeps the Pareto front over (``cost_key``, ``objective_key``) of
    ``points``; otherwise every point is written. A directory ``path`` gets ``pareto.json``.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "pareto.json"
    pts = list(points)
    if front_only:
        pts = pareto_front(pts, cost_key, objective_key)
    else:
        pts = sorted(pts, key=lambda q: _xy(q, cost_key, objective_key))
    p.parent.mkdir(parents=True, exist_ok=True)
    extra = {} if val_data is None else {"val_data": dict(val_data)}
    atomic_write_text(p, json.dumps([_point_dict(q) | extra for q in pts], indent=1) + "\n")
    return p


def load_pareto_json(path: str | Path) -> list[dict[str, Any]]:
    """Read ``pareto.json`` back: the same dicts, with ``arch`` as an :class:`Arch`."""
    p = Path(path)
    if p.is_dir():
        p = p / "pareto.json"
    data = json.loads(p.read_text())
    if not isinstance(data, list):
        raise ValueError(f"{p}: pareto.json must hold a list of points")
    return [{**d, "arch": Arch.from_dict(d["arch"])} for d in data]


def save_arch(point: Any, path: str | Path) -> Path:
    """Write ``point``'s arch (a Point, a pareto.json entry or an Arch) as an arch JSON file
    (:meth:`Arch.save`) that ``Arch.load`` and the command line accept."""
    arch = point if isinstance(point, Arch) else _get(point, "arch")
    if not isinstance(arch, Arch):
        arch = Arch.from_dict(arch)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    arch.save(p)
    return p


# --------------------------------------------------------------------------------- plots
def plot_pareto(path_png: str | Path, runs: Mapping[str, Sequence[Any]],
                cost_key: str = "params", objective_key: str = "val_loss",
                title: str | None = None) -> Path:
    """Plot every evaluated point of each run faintly and its Pareto front as a step line.

    Args:
        path_png: output image (PNG).
        runs: ``{label: points}``, e.g. ``{"evolution": evo.points, "random": rnd.points}``.
        cost_key: x axis (``params``, ``macs`` or ``latency_ms``); objective on the y axis.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # no global backend change
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    xlabel, xs = _AXIS_LABELS.get(cost_key, (cost_key, 1.0))
    ylabel, _ = _AXIS_LABELS.get(objective_key, (objective_key, 1.0))
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    for i, (label, pts) in enumerate(runs.items()):
        color = colors[i % len(colors)]
        xy = [(c * xs, o) for c, o in (_xy(p, cost_key, objective_key) for p in pts)
              if math.isfinite(c) and math.isfinite(o)]
        if xy:
            ax.scatter([c for c, _ in xy], [o for _, o in xy], s=10, alpha=0.25, color=color,
                       linewidths=0)
        front = [_xy(p, cost_key, objective_key) for p in
                 pareto_front(pts, cost_key, objective_key)]
        if front:
            fx, fy = [c * xs for c, _ in front], [o for _, o in front]
            ax.step(fx, fy, where="post", color=color, lw=1.6,
                    label=f"{label} ({len(xy)} evaluated, {len(front)} on front)")
            ax.scatter(fx, fy, s=18, color=color, zorder=3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if runs:
        ax.legend(fontsize=8)
    ax.set_title(title or f"Pareto front: {ylabel} vs {xlabel}")
    fig.tight_layout()
    p = Path(path_png)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, format="png")
    return p


__all__ = ["hypervolume_2d", "load_pareto_json", "pareto_front", "plot_pareto",
           "reference_point", "save_arch", "save_pareto_json"]
