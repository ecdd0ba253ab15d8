"""Which subnets a training step trains: warm-up floors and the uniform / sandwich samplers.

Every draw is a pure function of ``(seed, step)``, so all DDP ranks train the same arch and
resolution without communicating, and a resumed run continues the exact sequence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..arch import Arch
from ..space import SearchSpace
from .config import TrainConfig


@dataclass(frozen=True)
class Floors:
    """Warm-up floors at one step: smallest channel ratio and smallest kept block fraction."""

    min_ratio: float
    min_keep: float


class WarmupSchedule:
    """Sampling warm-up (SNED §3.4): over ``warmup_steps`` the floors step down in
    ``warmup_stages`` equal stages from 100 % to ``final_min_ratio`` / ``final_min_keep``.

    Ratio floors are snapped up to a legal ratio choice.
    """

    def __init__(self, cfg: TrainConfig, ratios: tuple[float, ...]) -> None:
        self.steps, self.stages = cfg.warmup_steps, cfg.warmup_stages
        self.final_ratio, self.final_keep = cfg.final_min_ratio, cfg.final_min_keep
        self.ratios = sorted(ratios)

    def stage(self, step: int) -> int:
        if self.steps == 0:
            return self.stages
        return min(self.stages, math.floor(step / self.steps * self.stages))

    def floors(self, step: int) -> Floors:
        frac = self.stage(step) / self.stages
        ratio = 1.0 - (1.0 - self.final_ratio) * frac
        keep = 1.0 - (1.0 - self.final_keep) * frac
        snapped = next((r for r in self.ratios if r >= ratio - 1e-9), 1.0)
        return Floors(round(snapped, 6), round(keep, 6))


class ArchSampler:
    """Draws the archs (and the resolution) of each training step.

    ``uniform``: one arch per step, uniform within the warm-up floors (the paper).
    ``sandwich``: the largest, the smallest (at the floors) and ``sandwich_k`` random archs,
    all at one resolution (BigNAS / AttentiveNAS).
    """

    def __init__(self, space: SearchSpace, cfg: TrainConfig) -> None:
        self.space, self.cfg = space, cfg
        self.warmup = WarmupSchedule(cfg, space.config.ratios)

    def rng(self, step: int) -> np.random.Generator:
        return np.random.default_rng([self.cfg.seed, step, 0x5EED])

    def __call__(self, step: int) -> tuple[list[Arch], Floors]:
        floors = self.warmup.floors(step)
        rng = self.rng(step)
        first = self.space.sample(rng, floors.min_ratio, floors.min_keep)
        if self.cfg.sampler == "uniform":
            return [first], floors
        res = first.resolution
        archs = [self.space.largest(res),
                 self.space.smallest(res, floors.min_ratio, floors.min_keep), first]
        archs += [self.space.sample(rng, floors.min_ratio, floors.min_keep, resolution=res)
                  for _ in range(self.cfg.sandwich_k - 1)]
        archs = [a for a in archs[:2 + self.cfg.sandwich_k] if self.space.within_cap(a)]
        return archs or [first], floors
