"""Architecture search: constraints, budget and cache, determinism, evolution vs random, Pareto."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import sned
from sned.arch import Arch, ResolutionError
from sned.config import ATTENTIONS
from sned.search import (Constraints, Point, SearchError, canonical, crossover, evolutionary_search,
                         hypervolume_2d, load_pareto_json, mutate, pareto_front, plot_pareto,
                         random_search, reference_point, save_arch, save_pareto_json)

RES = 16


@pytest.fixture(scope="module")
def space():
    # the landscape the thresholds below were calibrated on: tiny-base without the pooled text
    # layer (a fixed 49 k params that shrink the feasible set under the 50 % cap)
    return sned.search_space(sned.load_config("tiny-base", ["pooled_text=false"]))


@pytest.fixture(scope="module")
def objective(space):
    """Synthetic objective with known structure: a weighted sum of √ratio over active layers,
    weights fixed at random (so the best arch under a param cap is not the uniform one).
    Bigger is better; 0 = the full supernet, 1 = nothing kept."""
    rng = np.random.default_rng(123)
    weights = {(s.name, slot): float(rng.uniform(0.2, 1.0)) for s in space.specs
               for slot in s.slots}
    norm = sum(weights.values())
    calls: list[Arch] = []

    def f(arch: Arch) -> float:
        calls.append(arch)
        total = 0.0
        for s, b in zip(space.specs, arch.blocks):
            keep, ratios = set(b.keep), dict(b.ratios)
            attn = any(c in ATTENTIONS for c in keep)
            for slot in s.slots:
                if slot in keep or (slot == "ff" and attn):
                    total += weights[(s.name, slot)] * math.sqrt(ratios[slot])
        return 1.0 - total / norm

    f.calls = calls
    return f


@pytest.fixture(scope="module")
def cap(space):
    return 0.5 * space.cost(space.largest(RES)).params


# --------------------------------------------------------------------------------- operators
def test_mutation_and_crossover_stay_legal(space):
    rng = np.random.default_rng(0)
    arch = space.sample(rng, min_ratio=0.5, resolution=RES)
    for i in range(300):
        other = space.sample(rng, min_ratio=0.5, resolution=RES)
        child = crossover(space, arch, other, rng) if i % 2 else arch
        arch = mutate(space, child, rng, prob=0.3, min_ratio=0.5, min_keep=0.4)
        space.validate(arch, check_cap=False)
        assert arch == canonical(space, arch)
        for s, b in zip(space.specs, arch.blocks):
            assert len(b.keep) >= math.ceil(0.4 * len(s.components) - 1e-9)
            active = set(b.keep) | ({"ff"} if any(c in ATTENTIONS for c in b.keep) else set())
            assert all(r >= 0.5 - 1e-9 for k, r in b.ratios if k in active)


def test_canonical_merges_functionally_identical_archs(space):
    a = space.largest(RES)
    b0 = a.blocks[3]
    ratios = tuple((k, 0.4 if k == "ff" else r) for k, r in b0.ratios)
    dropped = Arch(RES, a.blocks[:3] + ((type(b0))(("resblock",), b0.ratios),) + a.blocks[4:],
                   a.config)
    dropped2 = Arch(RES, a.blocks[:3] + ((type(b0))(("resblock",), ratios),) + a.blocks[4:],
                    a.config)
    assert dropped != dropped2
    assert canonical(space, dropped) == canonical(space, dropped2)
    assert canonical(space, a) == a


def test_crossover_takes_each_block_from_a_parent(space):
    rng = np.random.default_rng(1)
    a, b = space.sample(rng, resolution=RES), space.sample(rng, resolution=RES)
    a, b = canonical(space, a), canonical(space, b)
    child = crossover(space, a, b, rng)
    assert all(c in (x, y) for c, x, y in zip(child.blocks, a.blocks, b.blocks))


# --------------------------------------------------------------------------------- searches
@pytest.mark.parametrize("search", [evolutionary_search, random_search])
def test_constraints_budget_and_validity(space, objective, cap, search):
    macs_cap = 0.6 * space.cost(space.largest(RES)).macs
    objective.calls.clear()
    r = search(space, objective, budget=60, constraints=Constraints(cap, macs_cap), resolution=RES,
               seed=3)
    assert len(r.points) == 60 == len(objective.calls)
    assert len({p.arch for p in r.points}) == 60
    assert [p.index for p in r.points] == list(range(60))
    for p in r.points:
        space.validate(p.arch)
        assert p.arch.resolution == RES
        c = space.cost(p.arch, RES)
        assert (p.params, p.macs) == (c.params, c.macs)
        assert p.params <= cap and p.macs <= macs_cap
        assert p.objective == objective(p.arch)
    assert r.best.objective == min(p.objective for p in r.points)
    assert r.best_so_far()[-1] == r.best.objective
    assert r.rejected > 0  # the cap binds: archs over it were drawn and never evaluated


def test_duplicates_are_cached_not_budgeted(space):
    # A space this small (every layer at one ratio, all components kept) has one arch; the
    # search must evaluate it once and stop early instead of spinning or re-evaluating.
    calls = []
    r = random_search(space, lambda a: calls.append(a) or 0.0, budget=5, resolution=RES,
                      min_ratio=1.0, min_keep=1.0, max_tries=50)
    assert len(calls) == len(r.points) == 1
    assert r.duplicates == 50 and r.stopped_early  # 1 evaluated + 50 repeats
    calls.clear()
    e = evolutionary_search(space, lambda a: calls.append(a) or 0.0, budget=5, resolution=RES,
                            min_ratio=1.0, min_keep=1.0, max_tries=50)
    assert len(calls) == len(e.points) == 1 and e.duplicates > 0 and e.stopped_early


def test_evolution_reuses_cache_for_repeated_children(space, objective, cap):
    objective.calls.clear()
    r = evolutionary_search(space, objective, budget=80, constraints=Constraints(cap), resolution=RES,
                            mutation_prob=0.01, seed=0)
    assert r.duplicates > 0  # tiny mutation rate → many children equal an evaluated arch
    assert len(objective.calls) == len(set(objective.calls)) == 80


@pytest.mark.parametrize("search", [evolutionary_search, random_search])
def test_deterministic_per_seed(space, objective, cap, search):
    kw = dict(budget=40, constraints=Constraints(cap), resolution=RES)
    a, b = search(space, objective, seed=7, **kw), search(space, objective, seed=7, **kw)
    c = search(space, objective, seed=8, **kw)
    assert [p.arch for p in a.points] == [p.arch for p in b.points]
    assert [p.arch for p in a.points] != [p.arch for p in c.points]


def test_evolution_beats_random_at_equal_budget(space, objective, cap):
    best_e, best_r, hv_e, hv_r = [], [], [], []
    for seed in range(3):
        e = evolutionary_search(space, objective, budget=100, constraints=Constraints(cap), resolution=RES,
                                seed=seed)
        r = random_search(space, objective, budget=100, constraints=Constraints(cap), resolution=RES,
                          seed=seed)
        assert len(e.points) == len(r.points) == 100
        ref, ideal = reference_point(e.points, r.points)
        best_e.append(e.best.objective)
        best_r.append(r.best.objective)
        hv_e.append(hypervolume_2d(e.front(), ref, ideal_point=ideal))
        hv_r.append(hypervolume_2d(r.front(), ref, ideal_point=ideal))
    assert np.mean(best_e) < np.mean(best_r) - 0.01
    assert np.mean(hv_e) > np.mean(hv_r) + 0.02


def test_latency_constraint_and_recording(space, objective):
    def latency(arch):  # a fake "lookup table": proportional to MACs
        return space.cost(arch).macs / 1e7
    limit = 0.6 * latency(space.largest(RES))
    r = evolutionary_search(space, objective, budget=30,
                            constraints=Constraints(max_latency_ms=limit, latency_fn=latency),
                            resolution=RES, seed=0)
    assert all(p.latency_ms is not None and p.latency_ms <= limit for p in r.points)
    assert all(p.latency_ms == latency(p.arch) for p in r.points)
    assert "latency_ms" in r.best.to_dict()
    with pytest.raises(SearchError, match="latency_fn"):
        random_search(space, objective, budget=3, constraints=Constraints(max_latency_ms=1.0))


def test_impossible_constraints_raise_clearly(space, objective):
    with pytest.raises(SearchError, match=r"max_params<=1,000.*smallest arch"):
        evolutionary_search(space, objective, budget=5, constraints=Constraints(1000), max_tries=20)
    with pytest.raises(ResolutionError, match="resolution 17"):
        random_search(space, objective, budget=5, resolution=17)
    with pytest.raises(SearchError, match="budget"):
        random_search(space, objective, budget=0)


def test_initial_population_is_used(space, objective):
    presets = [space.preset(n, RES) for n in "SML"]
    r = evolutionary_search(space, objective, budget=20, initial=presets, resolution=RES,
                            seed=0)
    assert [p.arch for p in r.points[:3]] == [canonical(space, a) for a in presets]


# --------------------------------------------------------------------------------- Pareto
POINTS = [
    {"name": "a", "params": 1, "val_loss": 5.0},
    {"name": "b", "params": 2, "val_loss": 3.0},
    {"name": "c", "params": 2, "val_loss": 4.0},   # dominated by b (same cost, worse loss)
    {"name": "d", "params": 3, "val_loss": 3.5},   # dominated by b
    {"name": "e", "params": 4, "val_loss": 1.0},
    {"name": "f", "params": 5, "val_loss": 1.0},   # dominated by e (more cost, same loss)
    {"name": "g", "params": 0.5, "val_loss": float("nan")},  # ignored
    {"name": "h", "params": 4, "val_loss": 1.0},   # duplicate of e: the first is kept
]


def test_pareto_front_hand_made():
    front = pareto_front(POINTS)
    assert [p["name"] for p in front] == ["a", "b", "e"]
    assert pareto_front(list(reversed(POINTS)))[-1]["name"] == "h"
    assert pareto_front([]) == []
    # objective alias and tuples
    assert pareto_front([(1, 2), (2, 1), (2, 2)]) == [(1, 2), (2, 1)]
    pts = [{"macs": m, "objective": o} for m, o in [(3, 1), (1, 3), (2, 2), (3, 3)]]
    assert [p["macs"] for p in pareto_front(pts, cost_key="macs")] == [1, 2, 3]


def test_hypervolume_2d():
    front = [(1, 3), (2, 1)]
    # area under the staircase to ref (4, 4): [1,2)x(3..4) + [2,4)x(1..4) = 1 + 6
    assert hypervolume_2d(front, (4, 4)) == pytest.approx(7.0)
    assert hypervolume_2d(front + [(3, 2)], (4, 4)) == pytest.approx(7.0)  # dominated: no area
    assert hypervolume_2d([(5, 0)], (4, 4)) == 0.0  # beyond the reference
    assert hypervolume_2d(front, (4, 4), ideal_point=(0, 0)) == pytest.approx(7 / 16)
    assert hypervolume_2d(pareto_front(POINTS), (6, 6)) == pytest.approx(
        1 * 1 + 2 * 3 + 2 * 5)


def test_pareto_json_schema_and_arch_files(space, objective, tmp_path):
    r = evolutionary_search(space, objective, budget=25, resolution=RES, seed=0,
                            constraints=Constraints(latency_fn=lambda a: 1.5))
    path = save_pareto_json(tmp_path / "pareto.json", r.points)
    data = json.loads(path.read_text())
    assert isinstance(data, list) and len(data) == len(r.front())
    costs = [d["params"] for d in data]
    assert costs == sorted(costs)
    for d in data:
        assert set(d) == {"arch", "params", "macs", "val_loss", "latency_ms"}
        arch = space.validate(Arch.from_dict(d["arch"]))
        assert isinstance(d["params"], int) and isinstance(d["macs"], int)
        assert d["params"] == space.cost(arch).params
        assert isinstance(d["val_loss"], float)
    everything = save_pareto_json(tmp_path / "all.json", r.points, front_only=False)
    assert len(json.loads(everything.read_text())) == 25
    loaded = load_pareto_json(tmp_path)
    assert [d["arch"] for d in loaded] == [p.arch for p in r.front()]
    # a point (or a pareto.json entry) → an arch file other commands load
    f = save_arch(loaded[0], tmp_path / "archs" / "small.json")
    assert Arch.load(f) == loaded[0]["arch"]
    assert Arch.load(save_arch(r.best, tmp_path / "best.json")) == r.best.arch


def test_points_without_latency_omit_it(space, objective):
    r = random_search(space, objective, budget=3, resolution=RES, seed=0)
    assert set(r.points[0].to_dict()) == {"arch", "params", "macs", "val_loss"}
    assert isinstance(r.points[0], Point) and r.points[0].val_loss == r.points[0].objective


def test_plot_pareto_writes_png(space, objective, cap, tmp_path):
    e = evolutionary_search(space, objective, budget=30, constraints=Constraints(cap), resolution=RES, seed=0)
    r = random_search(space, objective, budget=30, constraints=Constraints(cap), resolution=RES, seed=0)
    path = plot_pareto(tmp_path / "plots" / "pareto.png",
                       {"evolution": e.points, "random": r.points})
    assert path.exists() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    macs = plot_pareto(tmp_path / "macs.png", {"evolution": e.points}, cost_key="macs")
    assert macs.stat().st_size > 1000


# --------------------------------------------------------------------------------- schedules
def test_merge_fronts_is_the_exact_knapsack_optimum():
    """The merged front equals brute force over every per-segment choice."""
    import itertools

    from sned.search.schedules import merge_fronts

    rng = np.random.default_rng(0)
    fronts = [[{"arch": f"a{k}{i}", "macs": int(rng.integers(1, 50)),
                "objective": float(rng.random())} for i in range(5)] for k in range(3)]
    for cap in (None, 60, 90):
        merged = merge_fronts(fronts, cap)
        combos = [(sum(c["macs"] for c in cs), sum(c["objective"] for c in cs),
                   tuple(c["arch"] for c in cs)) for cs in itertools.product(*fronts)]
        combos = [c for c in combos if cap is None or c[0] <= cap]
        brute = pareto_front([{"macs": m, "objective": o, "archs": a} for m, o, a in combos],
                             cost_key="macs", objective_key="objective")
        assert [(p.macs, round(p.objective, 12)) for p in merged] == \
            [(b["macs"], round(b["objective"], 12)) for b in brute]
        best = min(combos, key=lambda c: c[1])
        assert min(p.objective for p in merged) == pytest.approx(best[1])


def test_step_cells_and_segments_cover_the_trajectory():
    from sned.search.schedules import segment_steps, step_cells

    cells = step_cells([999, 799, 599, 399, 199], 1000)
    assert cells == [(900, 1000), (700, 900), (500, 700), (300, 500), (0, 300)]
    assert [list(r) for r in segment_steps(5, 2)] == [[0, 1, 2], [3, 4]]
    with pytest.raises(ValueError, match="schedule-segments 6"):
        segment_steps(5, 6)


def test_schedule_search_cli_finds_a_schedule_under_the_cap(tmp_path, capsys):
    """`sned search RUN --schedule-segments 2 --max-macs 70%`: best.json runs with sned sample,
    stays under the cap, and its recorded objective is the trajectory objective recomputed."""
    from sned.cli import main
    from sned.pipelines.loading import load_denoiser
    from sned.schedule import resolve_schedule, sampler_timesteps, trajectory_macs
    from sned.search.proxy import heldout_proxy
    from sned.search.schedules import TrajectoryObjective
    from sned.train.config import load_run_config
    from sned.train.trainer import Trainer

    run = tmp_path / "run"
    Trainer(load_run_config("tiny-base", ["model.frames=2", "data.num_videos=8",
                                          "train.batch_size=2", "train.warmup_steps=0"]),
            run, progress=False).fit(2)
    out = tmp_path / "s"
    args = ["search", str(run), "--resolution", "16", "--schedule-segments", "2", "--max-macs",
            "70%", "--steps", "4", "--budget", "4", "--levels", "2", "--n-videos", "4",
            "--pairs-per-clip", "4", "--out", str(out)]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    doc = json.loads((out / "schedules.json").read_text())
    assert printed["B_macs"] == doc["B_macs"] and doc["timesteps"] == [999, 749, 499, 249]
    best = doc["best"]
    assert best["macs"] <= 0.7 * doc["B_macs"] and best["mean"] == min(
        r["mean"] for r in doc["front"])
    assert all(r["macs"] <= 0.7 * doc["B_macs"] for r in doc["front"])
    macs = [r["macs"] for r in doc["front"]]
    objs = [r["mean"] for r in doc["front"]]
    assert macs == sorted(macs) and objs == sorted(objs, reverse=True)  # non-dominated
    den = load_denoiser(run)
    sched = resolve_schedule(str(out / "best.json"), den.space, 1000)
    ts = sampler_timesteps(den.diffusion, "ddim", 4)
    assert trajectory_macs(sched, den.space, ts) == best["macs"]
    obj = TrajectoryObjective(heldout_proxy(den.model, den.diffusion, 16, 4, pairs_per_clip=4), ts)
    assert obj.evaluate(sched)["mean"] == pytest.approx(best["mean"], rel=1e-5)
    for p in doc["presets"]:  # the presets as one-arch schedules on the same pairs
        one = resolve_schedule(f"{p['label'].split('@')[0]}:0-1000", den.space, 1000)
        assert obj.evaluate(one)["mean"] == pytest.approx(p["mean"], rel=1e-5)
    assert (out / "schedule_pareto.png").is_file() and "Pareto" in (out / "report.md").read_text()
    assert main(["sample", str(run), "--schedule", str(out / "best.json"), "--prompt", "x",
                 "--steps", "2", "--frames", "2", "--formats", "gif",
                 "--out", str(tmp_path / "v")]) == 0
    capsys.readouterr()
    assert main(args[:-1] + [str(tmp_path / "t"), "--save-arch", "x=0"]) == 2
    assert "--save-arch: a schedule search caps" in capsys.readouterr().err
    assert main(args[:7] + ["2%"] + args[8:-1] + [str(tmp_path / "u"), "--budget", "1",
                                                   "--levels", "1"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["best"] is None
