"""Which subnets a training step trains: warm-up floors and the cycle / uniform / sandwich
samplers.

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

    ``cycle`` (default): one arch per step, in turn the largest, a random draw, the smallest
    (:meth:`smallest`) and a random draw — the extremes get a quarter of the steps each,
    which independent per-layer draws almost never reach.
    ``uniform``: one arch per step, uniform within the warm-up floors (the paper; every layer
    and block drawn independently, so sizes concentrate in the middle).
    ``sandwich``: the largest, the smallest (:meth:`smallest`) and ``sandwich_k`` random
    archs, all at one resolution; the largest is first (the in-place distillation teacher).
    ``cfg.fixed_arch``: always that arch (no warm-up; floors reported as 1.0), at the step's
    resolution.

    The random draws of ``cycle`` and ``sandwich`` (``cfg.draw``): ``descent`` (default, "sample
    what you ship") — a parameter fraction F uniform in [F(smallest), F(largest under the
    cap)], then the served family's arch at F (:meth:`SearchSpace.family_arch` of the space
    with the step's floors: the descent-path arch whose params are closest to F, ties the
    larger; the first one under the cap at or after it). After the warm-up the floors are the
    run's, so every draw is an arch of the family presets are taken from. ``uniform``: the
    per-layer uniform draw of the ``uniform`` sampler.

    ``cfg.parent_fraction``: its first :attr:`parent_steps` steps train only the largest
    (floors reported as 1.0); the warm-up and the cycle start after them.
    """

    def __init__(self, space: SearchSpace, cfg: TrainConfig, max_tries: int = 200) -> None:
        self.space, self.cfg, self.max_tries = space, cfg, max_tries
        self.warmup = WarmupSchedule(cfg, space.config.ratios)
        self.fixed = None if cfg.fixed_arch is None else fixed_arch(space, cfg.fixed_arch)
        self._s_keep = self._preset_s_components()
        self.parent_steps = round(cfg.parent_fraction * cfg.steps) if self.fixed is None else 0
        self._floor_spaces: dict[tuple, tuple[SearchSpace, float, float]] = {}

    def rng(self, step: int) -> np.random.Generator:
        return np.random.default_rng([self.cfg.seed, step, 0x5EED])

    def __call__(self, step: int) -> tuple[list[Arch], Floors]:
        rng = self.rng(step)
        res = int(rng.choice(self.space.config.resolutions))
        if self.fixed is not None:
            return [Arch(res, self.fixed.blocks, self.fixed.config)], Floors(1.0, 1.0)
        top = self.space.largest_under_cap(res)
        if step < self.parent_steps:
            return [top], Floors(1.0, 1.0)
        floors = self.warmup.floors(step - self.parent_steps)
        smallest = self.smallest(res, floors)
        feasible = self.space.within_cap(smallest)  # else nothing within the floors fits
        if self.cfg.sampler == "uniform":
            return [self._draw(rng, floors, res, top) if feasible else top], floors
        if not feasible:
            return [top], floors
        draw = self._draw if self.cfg.draw == "uniform" else self._draw_family
        first = draw(rng, floors, res, top, smallest)
        if self.cfg.sampler == "cycle":
            return [(top, first, smallest, first)[step % 4]], floors
        archs = [top, smallest, first]
        archs += [draw(rng, floors, res, top, smallest) for _ in range(self.cfg.sandwich_k - 1)]
        return archs[:2 + self.cfg.sandwich_k], floors

    def teacher(self, res: int) -> Arch:
        """The distillation teacher at ``res``: the largest arch under its cap."""
        return self.space.largest_under_cap(res)

    def distilling(self, step: int) -> bool:
        """Whether ``step``'s children learn the teacher's prediction (``inplace_distill``,
        past the parent phase and the sampling warm-up; never for ``fixed_arch``)."""
        return (self.fixed is None and self.cfg.inplace_distill
                and step >= self.parent_steps + self.cfg.warmup_steps)

    def smallest(self, res: int, floors: Floors) -> Arch:
        """The smallest arch a step at ``floors`` trains: every layer at the floor ratio, each
        block keeping the components preset S keeps — plus, while the warm-up's kept-fraction
        floor is higher, the next components in forward order up to ⌈min_keep × n⌉. It is at
        most S's size, so the extremes the sampler trains bound every preset."""
        blocks = []
        for spec, keep in zip(self.space.specs, self._s_keep):
            need = math.ceil(floors.min_keep * len(spec.components) - 1e-9)
            extra = [c for c in spec.components if c not in keep]
            kept = set(keep) | set(extra[:max(0, need - len(keep))])
            blocks.append(self.space._block(spec, {slot: floors.min_ratio for slot in spec.slots},
                                            kept))
        return Arch(res, tuple(blocks), self.space.config.name)

    def _preset_s_components(self) -> list[tuple[str, ...]]:
        """Per block, the components preset S keeps (at the first resolution whose cap it
        fits); the floor's first components when S fits none."""
        for res in self.space.config.resolutions:
            try:
                return [b.keep for b in self.space.preset("S", res).blocks]
            except ArchError:
                continue
        return [b.keep for b in self.space.smallest(None, self.space.min_ratio,
                                                    self.space.min_keep).blocks]

    def _draw_family(self, rng: np.random.Generator, floors: Floors, res: int, top: Arch,
                     smallest: Arch) -> Arch:
        """The served family's arch at a parameter fraction drawn uniformly between
        ``smallest``'s and ``top``'s, on the descent path of the space with ``floors``."""
        key = (floors, res)
        if key not in self._floor_spaces:
            ratio = max(floors.min_ratio, self.space.min_ratio)
            keep = max(floors.min_keep, self.space.min_keep)
            space = (self.space if (ratio, keep) == (self.space.min_ratio, self.space.min_keep)
                     else SearchSpace(self.space.config, ratio, keep))
            lo, hi = (self.space.cost(a).params / self.space.full_params for a in (smallest, top))
            self._floor_spaces[key] = (space, min(lo, hi), hi)
        space, lo, hi = self._floor_spaces[key]
        fraction = float(rng.uniform(lo, hi))
        try:
            return space.family_arch(fraction, res, fit_cap=True)
        except ArchError:
            return top

    def _draw(self, rng: np.random.Generator, floors: Floors, res: int, top: Arch,
              smallest: Arch | None = None) -> Arch:
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
