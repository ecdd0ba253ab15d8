"""Per-stage DiffNAS search spaces around a teacher.

A teacher is an extracted model of some supernet config at some :class:`~sned.arch.Arch`. Each
stage (resolution level, :func:`sned.models.unet.unet_stages`) gets its own space: per diffusion
block, any subset of the teacher's kept components, per elastic layer a width from the
requested ratios (:data:`DEFAULT_RATIOS` of the supernet's width, or the config's whole ladder)
that is at most the teacher's, and a ResBlock kernel (both its convs) of 3×3 or its 1×1 centre
(at most the teacher's). The teacher's own choices are one point of every stage's space.

A requested ratio r maps to the config ratio giving the same width (the largest such), else the
one with the nearest width (:func:`config_ratio`): with the default ladder (1, .9, …, .4) and
GroupNorm quantum 8, r = .75 becomes .7 (same widths).

Choices that do not change the network (the ratio of a dropped layer, the kernel of a dropped
ResBlock) are canonicalised to the teacher's, so every candidate is a distinct network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations, product

import numpy as np

from ..arch import KERNELS, Arch, BlockArch, BlockSpec, block_layout, slot_width
from ..config import ATTENTIONS, ModelConfig
from ..cost import Cost, ZERO, block_cost
from ..models.unet import UNetStage

DEFAULT_RATIOS = (1.0, 0.75, 0.5)
"""DiffNAS's default width ratios (fractions of the supernet's width)."""


@dataclass(frozen=True)
class BlockChoices:
    """Legal choices of one diffusion block around the teacher's ``teacher`` choice."""

    spec: BlockSpec
    teacher: BlockArch
    ratios: dict[str, tuple[float, ...]]  # per slot, widths <= the teacher's (largest first)
    kernels: tuple[int, ...]

    def keeps(self) -> list[tuple[str, ...]]:
        comps = self.teacher.keep
        return [k for n in range(len(comps), -1, -1) for k in combinations(comps, n)]

    def make(self, keep: tuple[str, ...], ratios: dict[str, float], kernel: int) -> BlockArch:
        """A canonical BlockArch: irrelevant choices take the teacher's values."""
        t = dict(self.teacher.ratios)
        active = set(_active_slots(keep, self.spec))
        r = tuple((s, float(ratios[s]) if s in active else t[s]) for s in self.spec.slots)
        keep = tuple(c for c in self.spec.components if c in keep)
        return BlockArch(keep, r, kernel if "resblock" in keep else self.teacher.kernel)

    def size(self) -> int:
        total = 0
        for keep in self.keeps():
            n = math.prod(len(self.ratios[s]) for s in _active_slots(keep, self.spec))
            total += n * (len(self.kernels) if "resblock" in keep else 1)
        return total

    def all(self) -> list[BlockArch]:
        out = []
        for keep in self.keeps():
            slots = _active_slots(keep, self.spec)
            kernels = self.kernels if "resblock" in keep else (self.teacher.kernel,)
            for rs in product(*(self.ratios[s] for s in slots)):
                for k in kernels:
                    out.append(self.make(keep, dict(zip(slots, rs)), k))
        return out

    def sample(self, rng: np.random.Generator) -> BlockArch:
        keeps = self.keeps()
        keep = keeps[int(rng.integers(len(keeps)))]
        ratios = {s: self.ratios[s][int(rng.integers(len(self.ratios[s])))]
                  for s in _active_slots(keep, self.spec)}
        return self.make(keep, ratios, int(self.kernels[int(rng.integers(len(self.kernels)))]))

    def uniform(self, ratio_index: int, kernel: int) -> BlockArch:
        """Every teacher component kept, every layer at its ``ratio_index``-th choice."""
        keep = self.teacher.keep
        ratios = {s: self.ratios[s][min(ratio_index, len(self.ratios[s]) - 1)]
                  for s in _active_slots(keep, self.spec)}
        return self.make(keep, ratios, kernel)


def _active_slots(keep: tuple[str, ...], spec: BlockSpec) -> list[str]:
    """The elastic slots a block keeping ``keep`` runs (its feed-forward only when the config
    has one: ``ff_mult: 0`` models, e.g. imported diffusers UNets, have none)."""
    has_ff = spec.ff_hidden and any(a in keep for a in ATTENTIONS)
    return list(keep) + (["ff"] if has_ff else [])


class StageSpace:
    """Candidates of one stage: a tuple of BlockArchs, one per diffusion block of the stage.

    Args:
        cfg: the teacher's supernet config. specs: its blocks. teacher: the teacher's Arch.
        stage: the stage. frames: clip length the cost model counts.
    """

    def __init__(self, cfg: ModelConfig, specs: list[BlockSpec], teacher: Arch, stage: UNetStage,
                 frames: int, ratios: tuple[float, ...] | None = None) -> None:
        self.cfg, self.stage, self.frames = cfg, stage, frames
        self.resolution = teacher.resolution
        self.specs = [specs[i] for i in stage.blocks]
        self.choices = [_block_choices(cfg, s, teacher.blocks[i], ratios)
                        for s, i in zip(self.specs, stage.blocks)]
        self.teacher = tuple(c.make(c.teacher.keep, dict(c.teacher.ratios), c.teacher.kernel)
                             for c in self.choices)

    def size(self) -> int:
        return math.prod(c.size() for c in self.choices)

    def sample(self, rng: np.random.Generator) -> tuple[BlockArch, ...]:
        return tuple(c.sample(rng) for c in self.choices)

    def candidates(self, budget: int, rng: np.random.Generator) -> list[tuple[BlockArch, ...]]:
        """All candidates when the space holds at most ``budget``; else ``budget`` distinct
        ones: the teacher-shaped one, the uniform ratios × kernels ladder, then random draws.
        The teacher-shaped candidate is always first."""
        if self.size() <= budget:
            every = [tuple(c) for c in product(*(c.all() for c in self.choices))]
            return [self.teacher] + [c for c in every if c != self.teacher]
        out = {self.teacher: None}
        n_ratios = max(len(r) for c in self.choices for r in c.ratios.values())
        for k in KERNELS:  # a block whose teacher kernel is 1×1 stays at 1×1
            for i in range(n_ratios):
                out.setdefault(tuple(c.uniform(i, k if k in c.kernels else c.teacher.kernel)
                                     for c in self.choices), None)
        ladder = list(out)[:budget]
        out = dict.fromkeys(ladder)
        for _ in range(50 * budget):
            if len(out) >= budget:
                break
            out.setdefault(self.sample(rng), None)
        return list(out)

    def cost(self, cand: tuple[BlockArch, ...]) -> Cost:
        total = ZERO
        for spec, b in zip(self.specs, cand):
            total += block_cost(self.cfg, spec, block_layout(spec, b, self.cfg),
                                self.resolution, self.frames)
        return total

    def describe(self, cand: tuple[BlockArch, ...]) -> list[dict]:
        return [{"name": s.name, **b.to_dict()} for s, b in zip(self.specs, cand)]


def config_ratio(cfg: ModelConfig, spec: BlockSpec, slot: str, r: float) -> float:
    """The config ratio whose width for ``slot`` equals that of ratio ``r`` (the largest such),
    else the one with the nearest width (ties: the larger)."""
    want = slot_width(cfg, spec, slot, r)
    return min(cfg.ratios, key=lambda a: (abs(slot_width(cfg, spec, slot, a) - want), -a))


def shrink_block(cfg: ModelConfig, spec: BlockSpec, teacher: BlockArch, r: float) -> BlockArch:
    """``teacher`` with every layer narrowed to ratio ``r`` of the supernet's width where that is
    narrower (components and kernel unchanged): one block of the uniform width shrink."""
    ratios = []
    for slot, t in teacher.ratios:
        c = config_ratio(cfg, spec, slot, r)
        narrower = slot_width(cfg, spec, slot, c) < slot_width(cfg, spec, slot, t)
        ratios.append((slot, c if narrower else t))
    return BlockArch(teacher.keep, tuple(ratios), teacher.kernel)


def _block_choices(cfg: ModelConfig, spec: BlockSpec, teacher: BlockArch,
                   offered: tuple[float, ...] | None = None) -> BlockChoices:
    ratios = {}
    for slot in spec.slots:
        limit = slot_width(cfg, spec, slot, teacher.ratio(slot))
        pool = cfg.ratios if offered is None else {config_ratio(cfg, spec, slot, r)
                                                   for r in offered}
        rs = sorted({r for r in pool if slot_width(cfg, spec, slot, r) <= limit}
                    | {teacher.ratio(slot)}, reverse=True)
        # one ratio per distinct width (the largest ratio giving it)
        seen, uniq = set(), []
        for r in rs:
            w = slot_width(cfg, spec, slot, r)
            if w not in seen:
                seen.add(w)
                uniq.append(r)
        if teacher.ratio(slot) not in uniq:  # the teacher's own ratio names its width
            uniq = [teacher.ratio(slot) if slot_width(cfg, spec, slot, r) == limit else r
                    for r in uniq]
        ratios[slot] = tuple(uniq)
    kernels = tuple(k for k in KERNELS if k <= teacher.kernel)
    return BlockChoices(spec, teacher, ratios, kernels)


def with_stage(arch: Arch, stage: UNetStage, cand: tuple[BlockArch, ...]) -> Arch:
    """``arch`` with the blocks of ``stage`` replaced by ``cand``."""
    blocks = list(arch.blocks)
    for i, b in zip(stage.blocks, cand):
        blocks[i] = b
    return Arch(arch.resolution, tuple(blocks), arch.config)
