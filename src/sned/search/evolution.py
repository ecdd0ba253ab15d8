"""Evolutionary architecture search over a supernet's :class:`~sned.space.SearchSpace`.

The search runs at one fixed resolution and minimises a user objective ``evaluate(arch) ->
float`` (in practice the supernet's validation-loss proxy under ``arch``) subject to hard
constraints on parameters, MACs and (optionally) latency::

    space = sned.search_space("tiny-base")
    result = evolutionary_search(space, evaluate, budget=200,
                                 constraints=Constraints(max_params=1_500_000), seed=0)
    result.best.arch, result.front("params")

Algorithm (a (mu + lambda) evolution with elitism, as in OFA / AttentiveNAS / SPOS):

1. Initial population: constrained random archs (``space.sample`` with the training floors,
   rejection of archs over a constraint, bounded tries, a clear error when nothing fits).
2. Each generation: parents are the top-k of the population; a child is a uniform per-block
   crossover of two parents (probability ``crossover_prob``) followed by a mutation (each elastic
   layer's ratio re-drawn with probability ``mutation_prob``, each component's keep bit flipped
   with probability ``mutation_prob``). Children over a constraint are rejected; children already
   evaluated are skipped.
3. The next population is the best ``population_size`` of parents ∪ children (elitism).

The budget counts *distinct* evaluated archs: evaluations are cached by arch and duplicates do not
consume it. Archs are canonicalised first (ratios of dropped layers, which change nothing in the
network, are reset to the largest ratio), so two functionally identical archs count once.
:func:`random_search` is the baseline with the same budget, constraints and sampler.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np

from ..arch import Arch, ArchError, BlockArch, check_resolution
from ..space import SearchSpace
from ..space import active_slots as _active_slots
from .pareto import pareto_front

class SearchError(ValueError):
    """The search cannot run: e.g. no arch satisfies the constraints. The message says why."""


ArchScore = Callable[[Arch], float]
"""What a search minimises: ``evaluate(arch) -> float`` (e.g. the validation-loss proxy)."""
LatencyFn = Callable[[Arch], float]


@dataclass(frozen=True)
class Constraints:
    """Hard caps of a search. ``max_params`` / ``max_macs``: batch-1 costs at the search
    resolution and frame count; ``max_latency_ms``: measured by ``latency_fn(arch) -> ms`` (e.g.
    a LatencyTable lookup), which is also recorded per point when given. None: no cap."""

    max_params: float | None = None
    max_macs: float | None = None
    max_latency_ms: float | None = None
    latency_fn: LatencyFn | None = None

    def as_dict(self) -> dict[str, float | None]:
        """The caps as recorded in results (``latency_fn`` left out)."""
        d = asdict(self)
        d.pop("latency_fn")
        return d


# --------------------------------------------------------------------------------- values
@dataclass(frozen=True)
class Point:
    """One evaluated arch.

    Attributes:
        arch: the (canonical) arch.
        params / macs: cost at the search resolution and frame count (batch 1).
        objective: the objective value (lower is better); also available as ``val_loss``.
        latency_ms: measured/looked-up latency when a ``latency_fn`` was given.
        index: evaluation order (0 = first evaluated).
    """

    arch: Arch
    params: int
    macs: int
    objective: float
    latency_ms: float | None = None
    index: int = 0

    @property
    def val_loss(self) -> float:
        return self.objective

    def to_dict(self) -> dict[str, Any]:
        """The ``pareto.json`` form: ``arch`` (Arch dict), ``params``, ``macs``, ``val_loss``
        and ``latency_ms`` when measured."""
        d: dict[str, Any] = {"arch": self.arch.to_dict(), "params": int(self.params),
                             "macs": int(self.macs), "val_loss": float(self.objective)}
        if self.latency_ms is not None:
            d["latency_ms"] = float(self.latency_ms)
        return d


@dataclass
class SearchResult:
    """Everything a search evaluated, in order, plus the best feasible point.

    Attributes:
        method: ``"evolution"`` or ``"random"``.
        points: every evaluated point (distinct archs), in evaluation order.
        best: the point with the lowest objective (ties: the earliest).
        budget: the evaluation budget asked for; ``len(points) <= budget``.
        seed / resolution / frames / constraints: the search's settings.
        generations: evolution generations run (0 for random search).
        attempts: candidate archs drawn or bred in total.
        rejected: candidates over a constraint (never evaluated).
        duplicates: candidates already evaluated (served from the cache, no budget used).
        stopped_early: why the search ended before the budget, else None.
        wall_s: wall-clock seconds.
    """

    method: str
    points: list[Point]
    budget: int
    seed: int | None
    resolution: int
    frames: int
    constraints: dict[str, float | None]
    generations: int = 0
    attempts: int = 0
    rejected: int = 0
    duplicates: int = 0
    stopped_early: str | None = None
    wall_s: float = 0.0

    @property
    def best(self) -> Point:
        if not self.points:
            raise SearchError("the search evaluated no arch")
        return min(self.points, key=_rank)

    def best_so_far(self) -> list[float]:
        """Best objective after each evaluation (the anytime curve)."""
        out, cur = [], math.inf
        for p in self.points:
            cur = min(cur, _finite(p.objective))
            out.append(cur)
        return out

    def front(self, cost_key: str = "params") -> list[Point]:
        """Pareto front over (``cost_key``, objective) of all evaluated points."""
        return pareto_front(self.points, cost_key=cost_key, objective_key="objective")

    def summary(self) -> dict[str, Any]:
        b = self.best
        return {"method": self.method, "evaluations": len(self.points), "budget": self.budget,
                "seed": self.seed, "resolution": self.resolution, "frames": self.frames,
                "constraints": self.constraints, "generations": self.generations,
                "attempts": self.attempts, "rejected": self.rejected,
                "duplicates": self.duplicates, "stopped_early": self.stopped_early,
                "wall_s": round(self.wall_s, 3), "best": b.to_dict()}


def _finite(v: float) -> float:
    return v if math.isfinite(v) else math.inf


def _rank(p: Point) -> tuple[float, int]:
    return (_finite(p.objective), p.index)


# --------------------------------------------------------------------------------- operators
def _choices(space: SearchSpace, min_ratio: float | None) -> tuple[float, ...]:
    floor = space.min_ratio if min_ratio is None else float(min_ratio)
    out = tuple(r for r in space.ratios if r >= floor - 1e-9)
    if not out:
        raise SearchError(f"min_ratio {min_ratio} is above every ratio choice {space.ratios}")
    return out


def _floors(space: SearchSpace, min_ratio: float | None, min_keep: float | None
            ) -> tuple[float, float]:
    """Sampling / mutation floors: the space's (its training floors) unless given."""
    return (space.min_ratio if min_ratio is None else float(min_ratio),
            space.min_keep if min_keep is None else float(min_keep))


def _min_kept(n: int, min_keep: float) -> int:
    return math.ceil(min_keep * n - 1e-9)


def canonical(space: SearchSpace, arch: Arch) -> Arch:
    """``arch`` with the ratios of inactive layers (dropped components; the feed-forward when no
    attention is kept) set to the largest ratio. Functionally identical archs map to one value."""
    top = space.ratios[0]
    blocks = []
    for spec, b in zip(space.specs, arch.blocks):
        active = _active_slots(spec, b.keep)
        blocks.append(BlockArch(b.keep, tuple((k, r if k in active else top)
                                              for k, r in b.ratios)))
    return Arch(arch.resolution, tuple(blocks), arch.config)


def mutate(space: SearchSpace, arch: Arch, rng: np.random.Generator, prob: float = 0.1,
           min_ratio: float | None = None, min_keep: float | None = None) -> Arch:
    """Mutate ``arch``: re-draw each elastic layer's ratio with probability ``prob`` and flip each
    component's keep bit with probability ``prob``.

    The result is always legal (passes ``space.validate`` apart from cost caps): each block keeps
    at least ``ceil(min_keep × n)`` components (flips that go below are undone at random), ratios
    stay within the ``min_ratio`` floor, and a layer that becomes active (a re-kept component, or
    the feed-forward when a first attention comes back) gets a freshly drawn ratio.
    """
    min_ratio, min_keep = _floors(space, min_ratio, min_keep)
    choices = _choices(space, min_ratio)
    blocks = []
    for spec, b in zip(space.specs, arch.blocks):
        comps = spec.components
        kept = [c in b.keep for c in comps]
        flips = rng.random(len(comps)) < prob
        new = [k != f for k, f in zip(kept, flips)]
        dropped_now = [i for i, (k, n) in enumerate(zip(kept, new)) if k and not n]
        need = _min_kept(len(comps), min_keep) - sum(new)
        if need > 0:  # undo some drops (or re-add any component) to respect the keep floor
            pool = dropped_now if len(dropped_now) >= need else [i for i, n in enumerate(new)
                                                                 if not n]
            for i in rng.choice(pool, size=need, replace=False).tolist():
                new[i] = True
        keep = tuple(c for c, n in zip(comps, new) if n)
        before = _active_slots(spec, b.keep)
        after = _active_slots(spec, keep)
        ratios = dict(b.ratios)
        for slot in spec.slots:
            redraw = rng.random() < prob
            if redraw or (slot in after and slot not in before):
                ratios[slot] = float(choices[int(rng.integers(len(choices)))])
        blocks.append(BlockArch(keep, tuple((s, ratios[s]) for s in spec.slots)))
    return canonical(space, Arch(arch.resolution, tuple(blocks), arch.config))


def crossover(space: SearchSpace, a: Arch, b: Arch, rng: np.random.Generator) -> Arch:
    """Uniform per-block crossover: each block's choices come from ``a`` or ``b`` (p = 1/2)."""
    if len(a.blocks) != len(b.blocks) or a.resolution != b.resolution:
        raise ArchError("crossover needs two archs of the same config and resolution")
    pick = rng.random(len(a.blocks)) < 0.5
    blocks = tuple(x if p else y for x, y, p in zip(a.blocks, b.blocks, pick))
    return canonical(space, Arch(a.resolution, blocks, a.config))


# --------------------------------------------------------------------------------- bookkeeping
class _Evaluator:
    """Constraint checks (cached cost/latency) and the evaluation cache that meters the budget."""

    def __init__(self, space: SearchSpace, evaluate: ArchScore, resolution: int, frames: int,
                 limits: Constraints) -> None:
        if limits.max_latency_ms is not None and limits.latency_fn is None:
            raise SearchError("max_latency_ms needs a latency_fn(arch) -> ms (e.g. a "
                              "LatencyTable lookup)")
        self.space, self.evaluate = space, evaluate
        self.resolution, self.frames = resolution, frames
        self.limits = limits
        self.max_params, self.max_macs = limits.max_params, limits.max_macs
        self.max_latency_ms, self.latency_fn = limits.max_latency_ms, limits.latency_fn
        self.points: dict[Arch, Point] = {}
        self._feasible: dict[Arch, tuple[bool, int, int, float | None]] = {}
        self.rejected = self.duplicates = self.attempts = 0

    @property
    def constraints(self) -> dict[str, float | None]:
        return self.limits.as_dict()

    def check(self, arch: Arch) -> tuple[bool, int, int, float | None]:
        """(feasible, params, macs, latency_ms) — latency only measured once cost passes."""
        if arch not in self._feasible:
            ok = self.space.within_cap(arch)
            c = self.space.cost(arch, self.resolution, self.frames)
            ok = ok and (self.max_params is None or c.params <= self.max_params)
            ok = ok and (self.max_macs is None or c.macs <= self.max_macs)
            lat = None
            if ok and self.latency_fn is not None:
                lat = float(self.latency_fn(arch))
                ok = self.max_latency_ms is None or lat <= self.max_latency_ms
            self._feasible[arch] = (ok, c.params, c.macs, lat)
        return self._feasible[arch]

    def offer(self, arch: Arch) -> Point | None:
        """Evaluate ``arch`` if new and feasible; return its new Point, else None."""
        self.attempts += 1
        arch = canonical(self.space, arch)
        if arch in self.points:
            self.duplicates += 1
            return None
        ok, params, macs, lat = self.check(arch)
        if not ok:
            self.rejected += 1
            return None
        self.space.validate(arch)  # never hand an illegal arch to the objective
        value = float(self.evaluate(arch))
        p = Point(arch, params, macs, value, lat, len(self.points))
        self.points[arch] = p
        return p

    def infeasible_message(self, tries: int, min_ratio, min_keep) -> str:
        small = self.space.smallest(self.resolution, min_ratio, min_keep)
        c = self.space.cost(small, self.resolution, self.frames)
        limits = ", ".join(f"{k}<={v:,}" for k, v in self.constraints.items() if v is not None)
        return (f"no arch satisfying {limits or 'the cost cap'} at resolution {self.resolution} "
                f"after {tries} random draws (the smallest arch with min_ratio={min_ratio}, "
                f"min_keep={min_keep} costs params={c.params:,}, macs={c.macs:,}); loosen the "
                f"constraints or lower min_ratio/min_keep")


def _setup(space: SearchSpace, resolution: int | None, frames: int | None, budget: int
           ) -> tuple[int, int]:
    if budget < 1:
        raise SearchError(f"budget must be >= 1 (got {budget})")
    res = space.config.resolutions[0] if resolution is None else int(resolution)
    check_resolution(space.config, res)
    return res, space.config.frames if frames is None else int(frames)


def _draw(ev: _Evaluator, rng: np.random.Generator, min_ratio, min_keep, max_tries: int,
          must_find: bool) -> Point | None:
    """Rejection-sample random archs until one new feasible arch is evaluated."""
    for _ in range(max_tries):
        try:
            arch = ev.space.sample(rng, min_ratio, min_keep, ev.resolution)
        except ArchError:  # nothing under the config's own cost cap
            ev.attempts += 1
            ev.rejected += 1
            continue
        p = ev.offer(arch)
        if p is not None:
            return p
    if must_find:
        raise SearchError(ev.infeasible_message(max_tries, min_ratio, min_keep))
    return None


# --------------------------------------------------------------------------------- searches
def random_search(space: SearchSpace, evaluate: ArchScore, *, budget: int = 100,
                  resolution: int | None = None, frames: int | None = None,
                  constraints: Constraints = Constraints(), min_ratio: float | None = None, min_keep: float | None = None, seed: int = 0,
                  max_tries: int = 2000) -> SearchResult:
    """Baseline: evaluate ``budget`` distinct random archs that satisfy the constraints.

    Same sampler, constraints, caching and budget semantics as :func:`evolutionary_search`.
    Raises :class:`SearchError` when ``max_tries`` draws in a row yield no feasible arch before
    the first evaluation; later, the search stops early (``result.stopped_early``) instead.
    """
    t0 = time.perf_counter()
    res, frames = _setup(space, resolution, frames, budget)
    min_ratio, min_keep = _floors(space, min_ratio, min_keep)
    ev = _Evaluator(space, evaluate, res, frames, constraints)
    rng = np.random.default_rng(seed)
    stopped = None
    while len(ev.points) < budget:
        if _draw(ev, rng, min_ratio, min_keep, max_tries, must_find=not ev.points) is None:
            stopped = f"no new feasible arch in {max_tries} draws"
            break
    return SearchResult("random", list(ev.points.values()), budget, seed, res, frames,
                        ev.constraints, 0, ev.attempts, ev.rejected, ev.duplicates, stopped,
                        time.perf_counter() - t0)


def evolutionary_search(space: SearchSpace, evaluate: ArchScore, *, budget: int = 100,
                        population_size: int = 16, parents: int = 5,
                        mutation_prob: float = 0.05, crossover_prob: float = 0.5,
                        resolution: int | None = None, frames: int | None = None,
                        constraints: Constraints = Constraints(), min_ratio: float | None = None,
                        min_keep: float | None = None, seed: int = 0, max_tries: int = 2000,
                        initial: list[Arch] | None = None,
                        callback: Callable[[int, list[Point]], None] | None = None
                        ) -> SearchResult:
    """Evolutionary search minimising ``evaluate(arch)`` under cost/latency constraints.

    Args:
        space: the search space (a supernet config's).
        evaluate: objective ``arch -> float``, lower is better; called once per distinct arch.
        budget: number of distinct arch evaluations (cached duplicates are free).
        population_size: population kept between generations (and children per generation).
        parents: top-k of the population that breed.
        mutation_prob: per-layer ratio re-draw and per-component keep-flip probability.
        crossover_prob: probability that a child is a crossover of two parents (then mutated).
        resolution: the fixed resolution searched at (default: the config's first).
        frames: frames for the cost model (default: the config's).
        constraints: the hard caps (:class:`Constraints`: params, MACs, latency).
        min_ratio / min_keep: sampling/mutation floors (default: the supernet's training floors).
        seed: seed of the numpy Generator; same seed and objective → same result.
        max_tries: bound on consecutive random draws / breeding attempts without a new arch.
        initial: archs to seed the population with (e.g. presets); infeasible ones are skipped.
        callback: ``callback(generation, population)`` after each generation.
    """
    t0 = time.perf_counter()
    res, frames = _setup(space, resolution, frames, budget)
    min_ratio, min_keep = _floors(space, min_ratio, min_keep)
    if population_size < 2 or not 1 <= parents <= population_size:
        raise SearchError(f"need population_size >= 2 and 1 <= parents <= population_size "
                          f"(got {population_size}, {parents})")
    ev = _Evaluator(space, evaluate, res, frames, constraints)
    rng = np.random.default_rng(seed)
    stopped = None

    population: list[Point] = []
    for arch in initial or []:
        if len(population) >= min(population_size, budget):
            break
        space.validate(arch.at(res), check_cap=False)
        p = ev.offer(arch.at(res))
        if p is not None:
            population.append(p)
    while len(population) < min(population_size, budget):
        p = _draw(ev, rng, min_ratio, min_keep, max_tries, must_find=not ev.points)
        if p is None:
            stopped = f"no new feasible random arch in {max_tries} draws"
            break
        population.append(p)

    generation = 0
    while stopped is None and len(ev.points) < budget:
        pool = sorted(population, key=_rank)[:parents]
        children: list[Point] = []
        misses = 0
        while len(children) < population_size and len(ev.points) < budget:
            if len(pool) >= 2 and rng.random() < crossover_prob:
                i, j = rng.choice(len(pool), size=2, replace=False)
                child = crossover(space, pool[i].arch, pool[j].arch, rng)
            else:
                child = pool[int(rng.integers(len(pool)))].arch
            child = mutate(space, child, rng, mutation_prob, min_ratio, min_keep)
            p = ev.offer(child)
            if p is None:
                misses += 1
                if misses >= max_tries:
                    stopped = f"no new feasible child in {max_tries} attempts"
                    break
                continue
            misses = 0
            children.append(p)
        population = sorted(population + children, key=_rank)[:population_size]
        generation += 1
        if callback is not None:
            callback(generation, list(population))
    return SearchResult("evolution", list(ev.points.values()), budget, seed, res, frames,
                        ev.constraints, generation, ev.attempts, ev.rejected, ev.duplicates,
                        stopped, time.perf_counter() - t0)


__all__ = ["Point", "SearchError", "SearchResult", "canonical", "crossover",
           "evolutionary_search", "mutate", "random_search"]
