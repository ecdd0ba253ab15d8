"""Sampling warm-up floors and the per-step arch samplers."""

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


def test_sampler_is_a_function_of_seed_and_step_and_respects_floors():
    space = sned.search_space("tiny-base")
    cfg = TrainConfig(warmup_steps=300, warmup_stages=3, seed=5)
    a, b = ArchSampler(space, cfg), ArchSampler(space, cfg)
    for step in range(0, 400, 7):
        (arch_a,), floors = a(step)
        (arch_b,), _ = b(step)
        assert arch_a == arch_b  # what every DDP rank relies on
        for spec, blk in zip(space.specs, arch_a.blocks):
            assert min(r for _, r in blk.ratios) >= floors.min_ratio - 1e-9
            assert len(blk.keep) >= floors.min_keep * len(spec.components) - 1e-9
    assert a(0)[0][0].blocks == space.largest().blocks  # floors at 100 %: the full supernet
    assert len({a(s)[0][0] for s in range(300, 340)}) > 30


def test_sandwich_draws_largest_smallest_and_k_random_at_one_resolution():
    space = sned.search_space("tiny-base")
    sampler = ArchSampler(space, TrainConfig(sampler="sandwich", sandwich_k=2, warmup_steps=0))
    archs, floors = sampler(10)
    assert len(archs) == 4 and len({a.resolution for a in archs}) == 1
    assert archs[0].blocks == space.largest().blocks
    assert archs[1] == space.smallest(archs[0].resolution, floors.min_ratio, floors.min_keep)
