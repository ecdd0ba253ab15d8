"""Verdicts on intervals: is a DiffNAS model within ``tol`` of its teacher at ≤ ``cap`` MACs?

The gap of one seed is ``g = L_subnet / L_teacher − 1`` on the one shared scoring set (every
model, every seed: the same clips, timesteps and noise). Two intervals:

* the **seed-level** interval — Student t over the per-seed gaps (training noise included;
  needs ≥ 2 seeds);
* the **sample-paired** interval — the scoring set counted once: per sample the subnet's loss
  averaged over seeds against the teacher's, the ratio's 95 % interval by the delta method,
  with the pairs of one clip kept together (a clip's (t, noise) pairs are not independent).

:func:`verdict`: "shown" only if the largest MACs fraction across seeds is ≤ ``cap`` and the
upper bound of both intervals is ≤ ``tol``; "refuted" if the seed-level lower bound is above
``tol``; else "unresolved", with the seeds the seed-level interval would take to decide
(``seeds_needed``, from the observed spread).
"""

from __future__ import annotations

import math

import numpy as np

T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
       9: 2.262, 10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}
"""Two-sided 95 % Student-t quantiles by degrees of freedom (1.96 beyond)."""


def t95(df: int) -> float:
    """The two-sided 95 % t quantile of ``df`` degrees of freedom (the next tabled df below)."""
    if df < 1:
        return float("nan")
    return T95[max(k for k in T95 if k <= df)] if df <= 30 else 1.96


def t_interval(xs) -> dict:
    """Mean of ``xs`` with its t 95 % interval: ``{mean, ci95: [lo, hi], n, values}``."""
    x = np.asarray(list(xs), dtype=np.float64)
    m = float(x.mean()) if len(x) else float("nan")
    h = t95(len(x) - 1) * float(x.std(ddof=1)) / math.sqrt(len(x)) if len(x) > 1 else math.nan
    return {"mean": m, "ci95": [m - h, m + h], "n": int(len(x)), "values": x.tolist()}


def ratio_gap(a, b, pairs_per_clip: int = 1) -> dict:
    """``mean(a) / mean(b) − 1`` over paired samples with its 95 % interval (delta method:
    the linearised residuals ``a − (1 + g)·b``). ``pairs_per_clip`` = k: the samples are k
    consecutive repeats of the same clips (``heldout_proxy(pairs_per_clip=k)``), so per-clip
    means are the independent units."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    g = float(a.mean() / b.mean() - 1.0)
    resid = a - (1.0 + g) * b
    if pairs_per_clip > 1 and len(a) % pairs_per_clip == 0:
        resid = resid.reshape(pairs_per_clip, -1).mean(0)  # per clip: mean over its pairs
    n = len(resid)
    h = 1.96 * float(resid.std(ddof=1)) / math.sqrt(n) / float(b.mean()) if n > 1 else math.nan
    return {"mean": g, "ci95": [g - h, g + h], "n": int(n), "pairs": int(len(a))}


def seeds_needed(values, tol: float, limit: int = 100) -> int | None:
    """Seeds the t interval of ``values`` would need to exclude ``tol`` at the observed mean
    and spread; None when it cannot tell (< 2 values, no spread, mean on ``tol``, > limit)."""
    x = np.asarray(list(values), dtype=np.float64)
    if len(x) < 2:
        return None
    m, sd = float(x.mean()), float(x.std(ddof=1))
    if sd == 0 or m == tol:
        return None
    for n in range(2, limit + 1):
        if t95(n - 1) * sd / math.sqrt(n) < abs(m - tol):
            return n
    return None


def verdict(seed_gaps, paired: dict, macs_fracs, cap: float, tol: float) -> dict:
    """The verdict object: ``gap`` (seed-level :func:`t_interval`), ``paired`` (the
    sample-paired :func:`ratio_gap`), ``status``, ``reason``, ``max_macs_frac``, ``cap``,
    ``tolerance`` and, when unresolved, ``seeds_needed``."""
    gap = t_interval(seed_gaps)
    max_macs = float(max(macs_fracs))
    lo, hi = gap["ci95"]
    upper = max(hi, paired["ci95"][1])
    out = {"gap": gap, "paired": paired, "max_macs_frac": max_macs, "cap": cap,
           "tolerance": tol}
    if gap["n"] < 2:
        status, reason = "unresolved", "one seed: training noise not measured (>= 2 seeds, " \
                                       "3 by the guide, give the seed-level interval)"
    elif lo > tol:
        status, reason = "refuted", f"the gap's lower bound {lo:+.2%} is above +{tol:.0%}"
    elif max_macs > cap:
        status, reason = "unresolved", f"max MACs fraction {max_macs:.1%} is above the cap " \
                                       f"{cap:.0%}"
    elif upper <= tol:
        status, reason = "shown", f"upper bound {upper:+.2%} <= +{tol:.0%} at <= {cap:.0%} MACs"
    else:
        status, reason = "unresolved", f"the interval [{lo:+.2%}, {upper:+.2%}] holds " \
                                       f"+{tol:.0%}"
    out.update(status=status, reason=reason)
    if status == "unresolved":
        out["seeds_needed"] = seeds_needed(seed_gaps, tol)
    return out
