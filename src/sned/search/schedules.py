"""Search sampling schedules (an arch per segment of the trajectory) under a sampling-cost cap.

**Objective** — the expected denoising loss along the sampler's trajectory, from the one
held-out proxy (:class:`~sned.search.proxy.ValLossProxy`): the sampler evaluates the model at
S timesteps ``t_1 > … > t_S``; step s owns the *cell* of training timesteps nearer to ``t_s``
than to its neighbours, and its loss is the mean held-out loss of the pairs whose timestep lies
in that cell, under the arch the schedule runs at ``t_s``. The objective is the mean over the S
steps (:class:`TrajectoryObjective`; 95 % intervals from the per-cell variances, paired ones
for differences — every schedule is scored on the same pairs).

**Cost** — the trajectory's MACs: the one cost model's per-forward MACs summed over the S steps
(:func:`sned.schedule.trajectory_macs`).

**Segments: fixed boundaries.** The K segments are K runs of consecutive sampler steps of
(near) equal length; a boundary only matters at the sampler's step grid, so K = S is the finest
schedule there is and a smaller K a coarser grid (K = 5 of 10 steps represents T-Stitch's 40 %
split). Fixing them keeps every (segment, arch) loss a fixed set of held-out pairs, so both the
objective and the cost are *sums over segments*: the constrained optimum is then a
multiple-choice knapsack over per-segment Pareto fronts, solved exactly by merging fronts
(:func:`merge_fronts`). Searching boundaries too would double the genome for a choice that K
already grids.

**Search** — per segment, :func:`~sned.search.evolution.evolutionary_search` (the same
evolution as ``sned search``) minimises that segment's loss under a ladder of per-forward MACs
caps from the smallest arch to B (seeded with the presets), so each segment gets a front of
(MACs, loss) candidates; the fronts merge into the schedule front, and the best schedule under
the cap is its cheapest-loss point within it. Per-pair losses are cached per (arch, step), so an
arch is never scored twice on the same pairs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..arch import Arch
from ..schedule import Schedule, Segment
from ..space import SearchSpace
from .evolution import Constraints, evolutionary_search
from .pareto import pareto_front
from .profile import Z95


def step_cells(timesteps: Sequence[int], num_train_timesteps: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` of training timesteps nearer to each sampler timestep than to its
    neighbours (noisiest first); together they cover ``[0, T)``."""
    ts = [int(t) for t in timesteps]
    if any(a <= b for a, b in zip(ts, ts[1:])):
        raise ValueError(f"sampler timesteps must decrease strictly (got {ts})")
    bounds = [num_train_timesteps] + [(a + b) // 2 + 1 for a, b in zip(ts, ts[1:])] + [0]
    return list(zip(bounds[1:], bounds[:-1]))


def segment_steps(n_steps: int, segments: int) -> list[range]:
    """``segments`` runs of consecutive step indices of near-equal length (earlier runs get
    the extra step)."""
    if not 1 <= segments <= n_steps:
        raise ValueError(f"--schedule-segments {segments}: must be in [1, {n_steps}] (the "
                         f"sampler's steps)")
    sizes = [n_steps // segments + (i < n_steps % segments) for i in range(segments)]
    starts = np.cumsum([0] + sizes)
    return [range(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:])]


class TrajectoryObjective:
    """Expected held-out loss along a sampler trajectory (module docstring).

    Args:
        proxy: the held-out proxy (fixed pairs; its ``t`` are the pairs' timesteps).
        timesteps: the sampler's timesteps, noisiest first
            (:func:`sned.schedule.sampler_timesteps`).
    """

    def __init__(self, proxy, timesteps: Sequence[int]) -> None:
        self.proxy = proxy
        self.timesteps = [int(t) for t in timesteps]
        T = proxy.objective.cfg.num_train_timesteps
        self.cells = step_cells(self.timesteps, T)
        t = proxy.t.cpu()
        self.index = [torch.nonzero((t >= lo) & (t < hi)).flatten() for lo, hi in self.cells]
        empty = [i for i, ix in enumerate(self.index) if ix.numel() < 2]
        if empty:
            lo, hi = self.cells[empty[0]]
            raise ValueError(f"sampler step {empty[0] + 1} (t={self.timesteps[empty[0]]}) owns "
                             f"timesteps [{lo}, {hi}) but fewer than 2 held-out pairs fall in "
                             f"it; use more pairs (n_videos x pairs_per_clip)")
        self._cache: dict[tuple[Any, int], torch.Tensor] = {}

    @property
    def steps(self) -> int:
        return len(self.timesteps)

    def cell_losses(self, arch: Arch | None, steps: Sequence[int]) -> list[torch.Tensor]:
        """Per-pair losses of ``arch`` in each step's cell (evaluating only uncached cells)."""
        key = None if arch is None else (arch.blocks, arch.resolution)
        todo = [s for s in steps if (key, s) not in self._cache]
        if todo:
            index = torch.cat([self.index[s] for s in todo])
            losses = self.proxy.per_sample(arch, index)
            for s, part in zip(todo, losses.split([self.index[s].numel() for s in todo])):
                self._cache[(key, s)] = part
        return [self._cache[(key, s)] for s in steps]

    def segment_loss(self, arch: Arch, steps: Sequence[int]) -> float:
        """Contribution of ``arch`` run at ``steps`` to the objective: Σ mean cell loss / S."""
        return float(sum(x.double().mean() for x in self.cell_losses(arch, steps))) / self.steps

    def _arch_per_step(self, schedule: Schedule) -> list[Arch]:
        return [schedule.arch_at(t) for t in self.timesteps]

    def evaluate(self, schedule: Schedule, reference: Schedule | None = None) -> dict:
        """``{"mean", "ci95"}`` of the objective of ``schedule``; with ``reference``, of the
        paired difference ``schedule − reference`` on the same pairs."""
        cells = [self.cell_losses(a, [s])[0] for s, a in enumerate(self._arch_per_step(schedule))]
        if reference is not None:
            refs = [self.cell_losses(a, [s])[0]
                    for s, a in enumerate(self._arch_per_step(reference))]
            cells = [x - r for x, r in zip(cells, refs)]
        mean = sum(float(x.double().mean()) for x in cells) / self.steps
        var = sum(float(x.double().var(unbiased=True)) / x.numel() for x in cells) / self.steps ** 2
        half = Z95 * math.sqrt(var)
        return {"mean": mean, "ci95": [mean - half, mean + half]}


@dataclass
class SchedulePoint:
    """One schedule on the front: an arch per segment, its trajectory MACs and objective."""

    archs: tuple[Arch, ...]
    macs: int
    objective: float

    def schedule(self, space: SearchSpace, timesteps: Sequence[int],
                 segments: Sequence[range], num_train_timesteps: int) -> Schedule:
        return to_schedule(space, self.archs, timesteps, segments, num_train_timesteps)


def arch_label(space: SearchSpace, arch: Arch) -> str:
    """A file-name-safe label: the preset name when ``arch`` is one, else ``p`` + its fraction
    of the supernet's parameters (``p0.62``)."""
    for name in ("S", "M", "L", "B"):
        if space.preset(name, arch.resolution) == arch:
            return name
    return f"p{space.cost(arch).params / space.full_params:.2f}"


def to_schedule(space: SearchSpace, archs: Sequence[Arch], timesteps: Sequence[int],
                segments: Sequence[range], num_train_timesteps: int) -> Schedule:
    """The :class:`Schedule` running ``archs[k]`` over segment k's steps (ranges at the
    midpoints between steps; neighbouring segments with one arch merged)."""
    T_cells = step_cells(timesteps, num_train_timesteps)
    segs: list[Segment] = []
    for arch, steps in zip(archs, segments):
        lo, hi = T_cells[steps[-1]][0], T_cells[steps[0]][1]
        if segs and segs[0].arch == arch:  # built from the noisiest down: merge upwards
            segs[0] = Segment(lo, segs[0].end, arch, segs[0].label)
        else:
            segs.insert(0, Segment(lo, hi, arch, arch_label(space, arch)))
    segs.sort(key=lambda s: s.start)
    return Schedule(tuple(segs), num_train_timesteps, space.config.name)


def merge_fronts(fronts: Sequence[Sequence[dict]], max_macs: float | None
                 ) -> list[SchedulePoint]:
    """The Pareto front of schedules from per-segment fronts of ``{"arch", "macs",
    "objective"}`` (segment MACs and segment loss): the exact multiple-choice knapsack over additive cost and objective, pruned to the
    non-dominated partial schedules after each segment (and to ``max_macs``)."""
    partial = [SchedulePoint((), 0, 0.0)]
    for cands in fronts:
        grown = [SchedulePoint(p.archs + (c["arch"],), p.macs + c["macs"],
                               p.objective + c["objective"])
                 for p in partial for c in cands
                 if max_macs is None or p.macs + c["macs"] <= max_macs]
        partial = pareto_front(grown, cost_key="macs", objective_key="objective")
    return partial


def search_schedule(space: SearchSpace, objective: TrajectoryObjective, segments: int,
                    max_macs: float | None, *, resolution: int, frames: int | None = None,
                    budget: int = 24, levels: int = 3, population: int = 8, seed: int = 0
                    ) -> dict[str, Any]:
    """Search an arch per segment (module docstring) under a trajectory-MACs cap.

    Args:
        space: the supernet's space with its training floors.
        objective: the trajectory objective on the held-out pairs.
        segments: K, runs of consecutive sampler steps.
        max_macs: cap on the trajectory's MACs (batch 1, one branch); None = none.
        budget: distinct archs each per-segment, per-level evolution scores.
        levels: per-forward MACs caps per segment, evenly from the smallest arch to B.
    Returns:
        ``{"front": [SchedulePoint], "best": SchedulePoint | None, "segments": [range],
        "segment_fronts": [[{"arch", "macs", "objective"}]], "evaluated": int}``.
    """
    steps = segment_steps(objective.steps, segments)
    frames = space.config.frames if frames is None else frames
    top = space.largest_under_cap(resolution)
    low = space.smallest(resolution, space.min_ratio, space.min_keep)
    lo_m, hi_m = (space.cost(a, resolution, frames).macs for a in (low, top))
    caps = [hi_m] if levels <= 1 else list(np.linspace(lo_m, hi_m, levels))
    presets = [space.preset(p, resolution) for p in ("S", "M", "L", "B")] + [low]
    fronts = []
    evaluated = 0
    for k, run in enumerate(steps):
        seen: dict[Arch, float] = {}

        def score(arch: Arch, run=run, seen=seen) -> float:
            seen[arch] = objective.segment_loss(arch, run)
            return seen[arch]

        for j, cap in enumerate(caps):
            pop = max(2, min(population, budget))
            evolutionary_search(space, score, budget=budget, population_size=pop,
                                parents=max(1, min(3, pop // 3)), resolution=resolution,
                                frames=frames, constraints=Constraints(max_macs=float(cap)),
                                seed=seed + 1000 * k + j, initial=presets)
        evaluated += len(seen)
        cands = [{"arch": a, "macs": len(run) * space.cost(a, resolution, frames).macs,
                  "objective": v} for a, v in seen.items()]
        fronts.append(pareto_front(cands, cost_key="macs", objective_key="objective"))
    front = merge_fronts(fronts, max_macs)
    best = min(front, key=lambda p: p.objective) if front else None
    return {"front": front, "best": best, "segments": steps, "segment_fronts": fronts,
            "evaluated": evaluated}
