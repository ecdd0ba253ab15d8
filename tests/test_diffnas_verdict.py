"""Verdicts on intervals (sned.diffnas.verdict) against independent arithmetic."""

import math

import numpy as np
import pytest

from sned.diffnas.verdict import ratio_gap, seeds_needed, t_interval, verdict


def test_ratio_gap_is_the_delta_method_over_clips():
    rng = np.random.default_rng(0)
    b = rng.uniform(0.5, 1.5, 40)
    a = b * 1.02 + rng.normal(0, 0.01, 40)
    g = ratio_gap(a, b)
    assert g["mean"] == pytest.approx(a.mean() / b.mean() - 1)
    r = a - (1 + g["mean"]) * b  # independent: the linearised ratio's standard error
    half = 1.96 * r.std(ddof=1) / math.sqrt(40) / b.mean()
    assert g["ci95"] == pytest.approx([g["mean"] - half, g["mean"] + half])
    # 2 pairs per clip: 20 clips repeated twice; per-clip means are the units
    g2 = ratio_gap(a, b, pairs_per_clip=2)
    rc = r.reshape(2, 20).mean(0)
    assert g2["n"] == 20 and g2["pairs"] == 40
    assert g2["ci95"][1] - g2["mean"] == pytest.approx(1.96 * rc.std(ddof=1) / math.sqrt(20)
                                                       / b.mean())


def test_t_interval_and_seeds_needed():
    t = t_interval([0.01, 0.02, 0.03])
    assert t["mean"] == pytest.approx(0.02) and t["n"] == 3
    assert t["ci95"][1] - 0.02 == pytest.approx(4.303 * 0.01 / math.sqrt(3))
    # mean 0.02, sd 0.01 vs tol 0.01: t(n-1)·0.01/√n < 0.01 first at n = 7 (2.447/√7 = 0.925)
    assert seeds_needed([0.01, 0.02, 0.03], 0.01) == 7
    assert seeds_needed([0.02], 0.01) is None and seeds_needed([0.02, 0.02], 0.01) is None


PAIRED_OK = {"mean": 0.0, "ci95": [-0.002, 0.002], "n": 64}


def test_verdict_statuses_read_bounds_and_the_largest_macs():
    shown = verdict([0.001, 0.002, 0.0], PAIRED_OK, [0.6, 0.65, 0.62], 0.7, 0.01)
    assert shown["status"] == "shown" and shown["max_macs_frac"] == 0.65
    # one seed above the cap: not shown, whatever the losses (the max counts, not the mean)
    over = verdict([0.001, 0.002, 0.0], PAIRED_OK, [0.6, 0.75, 0.5], 0.7, 0.01)
    assert over["status"] == "unresolved" and "75.0%" in over["reason"]
    # the point estimate within 1 % but the upper bound above: unresolved, seeds named
    wide = verdict([-0.02, 0.03, 0.0], PAIRED_OK, [0.6] * 3, 0.7, 0.01)
    assert wide["status"] == "unresolved" and wide["gap"]["mean"] < 0.01
    assert wide["seeds_needed"] is None or wide["seeds_needed"] > 3
    # the sample-paired upper bound counts too
    paired_wide = verdict([0.001, 0.002, 0.0], {**PAIRED_OK, "ci95": [-0.01, 0.02]},
                          [0.6] * 3, 0.7, 0.01)
    assert paired_wide["status"] == "unresolved"
    refuted = verdict([0.05, 0.06, 0.055], PAIRED_OK, [0.6] * 3, 0.7, 0.01)
    assert refuted["status"] == "refuted"
    one = verdict([0.0], PAIRED_OK, [0.6], 0.7, 0.01)
    assert one["status"] == "unresolved" and "one seed" in one["reason"]
