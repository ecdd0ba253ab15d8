"""Sampling warm-up floors and the per-step arch samplers."""

import numpy as np
import pytest

import sned
from sned.train.arch_sampler import ArchSampler, WarmupSchedule
from sned.train.config import TrainConfig

RATIOS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4)


def test_floors_step_down_from_full_to_final():
    sched = WarmupSchedule(TrainConfig(warmup_steps=600, warmup_stages=6), RATIOS)
    floors = [sched.floors(s) for s in range(0, 700, 50)]
    assert floors[0].min_ratio == 1.0 and floors[0].min_keep == 1.0
    assert floors[-1].min_ratio == 0.4 and floors[-1].min_keep == pytest.approx(0.4)
    ratios = [f.min_ratio for f in floors]
    assert ratios == sorted(ratios, reverse=True)
    assert {sched.floors(s).min_ratio for s in range(700)} == set(RATIOS)  # 6 stages, 7 levels
    assert sched.floors(99).min_ratio == 1.0 and sched.floors(100).min_ratio == 0.9


def test_no_warmup_means_final_floors_from_step_zero():
    sched = WarmupSchedule(TrainConfig(warmup_steps=0), RATIOS)
    assert (sched.floors(0).min_ratio, sched.floors(0).min_keep) == (0.4, 0.4)


@pytest.mark.parametrize("sampler,distinct", [("uniform", 30), ("cycle", 20)])
def test_sampler_is_a_function_of_seed_and_step_and_respects_floors(sampler, distinct):
    space = sned.search_space("tiny-base")
    cfg = TrainConfig(warmup_steps=300, warmup_stages=3, seed=5, sampler=sampler)
    a, b = ArchSampler(space, cfg), ArchSampler(space, cfg)
    for step in range(0, 400, 7):
        (arch_a,), floors = a(step)
        (arch_b,), _ = b(step)
        assert arch_a == arch_b  # what every DDP rank relies on
        for spec, blk in zip(space.specs, arch_a.blocks):
            assert min(r for _, r in blk.ratios) >= floors.min_ratio - 1e-9
            assert len(blk.keep) >= floors.min_keep * len(spec.components) - 1e-9
    assert a(0)[0][0].blocks == space.largest().blocks  # floors at 100 %: the full supernet
    assert len({a(s)[0][0] for s in range(300, 340)}) > distinct


def test_sandwich_draws_largest_smallest_and_k_random_at_one_resolution():
    space = sned.search_space("tiny-base")
    sampler = ArchSampler(space, TrainConfig(sampler="sandwich", sandwich_k=2, warmup_steps=0))
    archs, floors = sampler(10)
    assert len(archs) == 4 and len({a.resolution for a in archs}) == 1
    assert archs[0].blocks == space.largest().blocks
    assert archs[1] == sampler.smallest(archs[0].resolution, floors)


# ------------------------------------------------------------------ per-resolution cost caps
def _capped_space(caps: dict):
    """tiny-base with ``{resolution: fraction of the full supernet's MACs}`` caps."""
    base = sned.search_space("tiny-base")
    spec = ", ".join(f"{r}: {{macs: {int(f * base.cost(base.largest(r)).macs)}}}"
                     for r, f in caps.items())
    return sned.search_space(sned.load_config("tiny-base", [f"max_cost={{{spec}}}"]))


def test_sandwich_teacher_is_the_largest_arch_under_the_cap():
    space = _capped_space({32: 0.7})
    sampler = ArchSampler(space, TrainConfig(sampler="sandwich", sandwich_k=2, warmup_steps=0))
    cap = space.config.max_cost[32]["macs"]
    seen = set()
    for step in range(40):
        archs, floors = sampler(step)
        res = archs[0].resolution
        seen.add(res)
        assert all(a.resolution == res and space.within_cap(a) for a in archs)
        costs = [space.cost(a).macs for a in archs]
        assert costs[0] > costs[1] and costs[0] >= np.median(costs), (step, costs)
        assert archs[0] == space.largest_under_cap(res)  # the teacher
        assert archs[1] == sampler.smallest(res, floors)
    assert seen == {16, 32}
    # the largest under the cap: the first arch of the deterministic descent under it
    path = list(space.descent(32))
    top = space.largest_under_cap(32)
    i = path.index(top)
    assert i > 0 and not space.within_cap(path[i - 1]) and space.within_cap(top)
    assert 0.97 * cap <= space.cost(top).macs <= cap
    assert space.largest_under_cap(16) == space.largest(16)  # uncapped resolution


def test_caps_never_redraw_the_resolution():
    """A tight cap at 32 must not push draws to 16 (SNED §3.3: resolution first)."""
    space = _capped_space({32: 0.55})
    rng = np.random.default_rng(0)
    draws = [space.sample(rng) for _ in range(300)]
    share = np.mean([a.resolution == 32 for a in draws])
    assert 0.4 < share < 0.6, share
    assert all(space.within_cap(a) for a in draws)


@pytest.mark.parametrize("sampler", ["cycle", "uniform", "sandwich"])
def test_every_resolution_capped_trains_through_warmup(sampler):
    """During warm-up the largest arch under the cap stands in for the full one: each capped
    resolution keeps its share of the steps, and a config capped everywhere never stops."""
    space = _capped_space({16: 0.6, 32: 0.6})
    cfg = TrainConfig(sampler=sampler, warmup_steps=60, warmup_stages=3, seed=3)
    s = ArchSampler(space, cfg)
    res = []
    for step in range(0, 90):
        archs, floors = s(step)
        assert all(space.within_cap(a) for a in archs)
        assert len({a.resolution for a in archs}) == 1
        res.append(archs[0].resolution)
        if floors.min_ratio == 1.0:  # first stage: the stand-in for the full supernet
            assert archs == [space.largest_under_cap(archs[0].resolution)]
    assert 0.3 < np.mean(np.array(res) == 32) < 0.7
