"""Per-timestep profile: the held-out validation loss of each arch per timestep bucket.

Built on the one validation-loss proxy (:class:`~sned.search.proxy.ValLossProxy`): every arch is
scored on the same held-out (clip, timestep, noise) pairs, whose timesteps are stratified over
``[0, T)``; the pairs are grouped into equal buckets of training timesteps. Each bucket reports
the mean loss with a 95 % normal interval of the mean and, against a reference arch (B), the
paired difference with its 95 % interval — the pairs are shared, so the difference is far
tighter than either mean. This is what says where in the trajectory a small subnet is as good
as the large one, i.e. what a sampling schedule (:mod:`sned.schedule`) can exploit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..arch import Arch

Z95 = 1.959964


def mean_ci(values: torch.Tensor) -> dict[str, Any]:
    """``{"mean", "ci95": [lo, hi], "n"}`` of a 1-D sample (normal interval of the mean; no
    interval from fewer than 2 values)."""
    x = values.double()
    n = int(x.numel())
    m = float(x.mean()) if n else math.nan
    if n < 2:
        return {"mean": m, "ci95": None, "n": n}
    half = Z95 * float(x.std(unbiased=True)) / math.sqrt(n)
    return {"mean": m, "ci95": [m - half, m + half], "n": n}


def timestep_buckets(num_train_timesteps: int, buckets: int) -> list[tuple[int, int]]:
    """``buckets`` contiguous ``[lo, hi)`` ranges of equal width covering ``[0, T)``."""
    if not 1 <= buckets <= num_train_timesteps:
        raise ValueError(f"buckets must be in [1, {num_train_timesteps}] (got {buckets})")
    edges = [round(i * num_train_timesteps / buckets) for i in range(buckets + 1)]
    return list(zip(edges[:-1], edges[1:]))


def timestep_profile(proxy, archs: Mapping[str, Arch | None], buckets: int = 10,
                     reference: str | None = None, costs: Mapping[str, Any] | None = None
                     ) -> dict[str, Any]:
    """The profile of ``archs`` (label → arch; None = an extracted model's own) on ``proxy``'s
    pairs.

    Args:
        proxy: a :class:`~sned.search.proxy.ValLossProxy` (its ``t`` are the pairs' timesteps).
        buckets: equal timestep buckets over ``[0, T)``.
        reference: label the paired differences are taken against (default: the last).
        costs: label → ``{"params", "macs"}`` to record (optional).
    Returns:
        JSON-able ``{"num_train_timesteps", "buckets": [[lo, hi], ...], "pairs", "reference",
        "val_data", "archs": [{"label", "overall", "buckets": [{"lo", "hi", "mean", "ci95",
        "n", "diff"}], ...}]}``; ``diff`` (arch − reference, paired) has ``mean`` and ``ci95``.
    """
    if not archs:
        raise ValueError("no arch to profile")
    labels = list(archs)
    reference = labels[-1] if reference is None else reference
    if reference not in archs:
        raise ValueError(f"reference {reference!r} is not one of {labels}")
    T = proxy.objective.cfg.num_train_timesteps
    ranges = timestep_buckets(T, buckets)
    t = proxy.t.cpu()
    losses = {k: proxy.per_sample(a) for k, a in archs.items()}
    ref = losses[reference]
    rows = []
    for label in labels:
        x = losses[label]
        per = []
        for lo, hi in ranges:
            sel = (t >= lo) & (t < hi)
            d = mean_ci(x[sel] - ref[sel])
            per.append({"lo": lo, "hi": hi, **mean_ci(x[sel]),
                        "diff": {"mean": d["mean"], "ci95": d["ci95"]}})
        d = mean_ci(x - ref)
        row = {"label": label, "overall": mean_ci(x),
               "overall_diff": {"mean": d["mean"], "ci95": d["ci95"]}, "buckets": per}
        if costs and label in costs:
            row.update({k: costs[label][k] for k in ("params", "macs") if k in costs[label]})
        rows.append(row)
    return {"num_train_timesteps": T, "buckets": [list(r) for r in ranges],
            "pairs": int(t.numel()), "reference": reference,
            "val_data": getattr(proxy, "source", None), "archs": rows}


def profile_rows(profile: Mapping[str, Any]) -> tuple[list[dict], list[tuple[str, str]]]:
    """Report rows (one per arch: mean [95 % interval] per bucket) and their columns."""
    cols = [("preset", "Model")] + [(f"b{i}", f"t {lo}–{hi - 1}")
                                    for i, (lo, hi) in enumerate(profile["buckets"])]
    rows = []
    for a in profile["archs"]:
        row = {"preset": a["label"]}
        for i, b in enumerate(a["buckets"]):
            ci = b["ci95"]
            row[f"b{i}"] = (f"{b['mean']:.4f}" if ci is None else
                            f"{b['mean']:.4f} [{ci[0]:.4f}–{ci[1]:.4f}]")
        rows.append(row)
    return rows, cols


def plot_profile(path, profile: Mapping[str, Any]):
    """Two panels: loss per bucket (95 % band) per arch; paired difference to the reference."""
    import matplotlib
    from matplotlib.figure import Figure

    matplotlib.use("Agg", force=False)
    fig = Figure(figsize=(10, 4), dpi=110)
    ax, bx = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    centres = [(lo + hi - 1) / 2 for lo, hi in profile["buckets"]]
    for a in profile["archs"]:
        for axis, key in ((ax, None), (bx, "diff")):
            pts = [b if key is None else b[key] for b in a["buckets"]]
            ys = [p["mean"] for p in pts]
            line, = axis.plot(centres, ys, marker="o", ms=3, label=a["label"])
            lo = [p["ci95"][0] if p["ci95"] else y for p, y in zip(pts, ys)]
            hi = [p["ci95"][1] if p["ci95"] else y for p, y in zip(pts, ys)]
            axis.fill_between(centres, lo, hi, alpha=0.2, color=line.get_color())
    ax.set_ylabel("held-out val loss (95 % interval)")
    bx.set_ylabel(f"paired difference to {profile['reference']} (95 % interval)")
    bx.axhline(0, color="k", lw=0.8)
    for axis in (ax, bx):
        axis.set_xlabel("training timestep t (sampling runs from high t to low)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return path


__all__ = ["mean_ci", "plot_profile", "profile_rows", "timestep_buckets", "timestep_profile"]
