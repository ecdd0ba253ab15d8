"""Which subnets a training step trains: warm-up floors and the uniform / sandwich samplers.

Every draw is a pure function of ``(seed, step)``, so all DDP ranks train the same arch and
resolution without communicating, and a resumed run continues the exact sequence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..arch import Arch, ArchError
from ..space import PRESETS, SearchSpace, parse_preset
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
    """Draws the resolution and the archs of each training step.

    The resolution comes first (uniformly from the config's); every arch of the step is then
    drawn at it, under its cost cap (SNED §3.3) — an arch over the cap is re-drawn, never the
    resolution. Under a cap, the largest arch under it (:meth:`SearchSpace.largest_under_cap`)
    stands in for the full supernet: it is what the first warm-up stage trains, what a draw
    falls back to when no arch within the floors is under the cap, and the sandwich teacher.

    ``uniform``: one arch per step, uniform within the warm-up floors (the paper).
    ``sandwich``: the largest, the smallest (at the floors) and ``sandwich_k`` random archs,
    all at one resolution; the largest is first (the in-place distillation teacher).
    ``cfg.fixed_arch``: always that arch (no warm-up; floors reported as 1.0), at the step's
    resolution.
    """

    def __init__(self, space: SearchSpace, cfg: TrainConfig, max_tries: int = 200) -> None:
        self.space, self.cfg, self.max_tries = space, cfg, max_tries
        self.warmup = WarmupSchedule(cfg, space.config.ratios)
        self.fixed = None if cfg.fixed_arch is None else fixed_arch(space, cfg.fixed_arch)

    def rng(self, step: int) -> np.random.Generator:
        return np.random.default_rng([self.cfg.seed, step, 0x5EED])

    def __call__(self, step: int) -> tuple[list[Arch], Floors]:
        rng = self.rng(step)
        res = int(rng.choice(self.space.config.resolutions))
        if self.fixed is not None:
            return [Arch(res, self.fixed.blocks, self.fixed.config)], Floors(1.0, 1.0)
        floors = self.warmup.floors(step)
        top = self.space.largest_under_cap(res)
        smallest = self.space.smallest(res, floors.min_ratio, floors.min_keep)
        feasible = self.space.within_cap(smallest)  # else nothing within the floors fits
        first = self._draw(rng, floors, res, top) if feasible else top
        if self.cfg.sampler == "uniform":
            return [first], floors
        if not feasible:
            return [top], floors
        archs = [top, smallest, first]
        archs += [self._draw(rng, floors, res, top) for _ in range(self.cfg.sandwich_k - 1)]
        return archs[:2 + self.cfg.sandwich_k], floors

    def _draw(self, rng: np.random.Generator, floors: Floors, res: int, top: Arch) -> Arch:
        """A uniform arch within the floors under ``res``'s cap, else the stand-in ``top``."""
        try:
            return self.space.sample(rng, floors.min_ratio, floors.min_keep, resolution=res,
                                     max_tries=self.max_tries)
        except ArchError:
            return top


def fixed_arch(space: SearchSpace, spec: str) -> Arch:
    """``train.fixed_arch``: a preset (S/M/L/B or a fraction, :func:`parse_preset`) or an arch
    JSON file, validated against ``space``."""
    try:
        preset = parse_preset(spec)[0]
    except ArchError:
        preset = None  # not a preset name or fraction: an arch file
    if preset is not None:
        return space.preset(preset)
    try:
        arch = Arch.load(spec)
        for res in space.config.resolutions:  # trained at every resolution: under every cap
            space.validate(Arch(res, arch.blocks, arch.config))
        return Arch(space.config.resolutions[0], arch.blocks, arch.config)
    except ArchError as e:
        raise ArchError(f"train.fixed_arch={spec!r} (a preset {', '.join(PRESETS)}, a fraction "
                        f"in (0, 1] such as 0.75, or an arch JSON file): {e}") from None
