"""``sned study`` and the fixed-arch training mode it relies on: the machinery at a minuscule
size, the compute accounting, the goal arithmetic and bad input."""

import dataclasses
import json
import math
import os
import subprocess
import sys

import pytest

from sned.arch import ArchError
from sned.cli import main
from sned.config import ConfigError
from sned.space import SearchSpace
from sned.app.study import run_study
from sned.app.study_plan import StudyPlan, plan_runs, plan_tasks
from sned.app.study_report import goal_check, t_interval
from sned.train.arch_sampler import ArchSampler
from sned.train.config import load_run_config
from sned.train.trainer import Trainer

FAST = ["model.frames=2", "data.num_videos=16", "train.batch_size=2", "train.warmup_steps=4",
        "train.warmup_stages=2", "train.ema_decay=0.99"]
TINY = dict(steps=2, seeds=1, frames=1, batch={16: 2, 32: 1}, val_videos=2, caption_prompts=2,
            caption_steps=1, num_videos=8, pairs_per_clip=2, curve_points=2, resolutions=None)


def test_fixed_arch_sampler_keeps_the_arch_and_draws_resolutions(tmp_path):
    run = load_run_config("tiny-base", FAST + ["train.fixed_arch=S"])
    space = SearchSpace(run.model)
    sampler = ArchSampler(space, run.train)
    draws = [sampler(step)[0] for step in range(12)]
    assert all(len(a) == 1 and a[0].blocks == space.preset("S").blocks for a in draws)
    assert {a[0].resolution for a in draws} == set(run.model.resolutions)
    # an arch JSON file works the same way
    path = tmp_path / "m.json"
    space.preset("M").save(path)
    run_m = load_run_config("tiny-base", FAST + [f"train.fixed_arch={path}"])
    assert ArchSampler(space, run_m.train)(0)[0][0].blocks == space.preset("M").blocks


def test_fixed_arch_bad_values_name_the_problem(tmp_path):
    run = load_run_config("tiny-base", FAST + ["train.fixed_arch=XL"])
    with pytest.raises(ArchError, match="train.fixed_arch='XL'"):
        ArchSampler(SearchSpace(run.model), run.train)
    with pytest.raises(ConfigError, match="train.fixed_arch"):
        load_run_config("tiny-base", FAST + ["train.fixed_arch=S", "train.sampler=sandwich"])
    other = tmp_path / "ssr.json"
    other.write_text(json.dumps(SearchSpace("tiny-ssr").preset("S").to_dict()))
    run = load_run_config("tiny-base", FAST + [f"train.fixed_arch={other}"])
    with pytest.raises(ArchError, match="tiny-ssr"):
        ArchSampler(SearchSpace(run.model), run.train)


def test_trainer_records_training_macs_of_every_arch(tmp_path):
    """train_macs = 3 × clips × Σ forward MACs of the step's archs (sandwich: 4 archs)."""
    run = load_run_config("tiny-base", FAST + ["train.sampler=sandwich",
                                               "train.batch_size_per_resolution={32: 1}"])
    Trainer(run, tmp_path / "r", progress=False).fit(2)
    rows = [json.loads(r) for r in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    space = SearchSpace(run.model)
    sampler = ArchSampler(space, run.train)
    for i, row in enumerate(rows):
        archs, _ = sampler(i)
        clips = {16: 2, 32: 1}[archs[0].resolution]
        assert len(archs) == 4
        assert row["train_macs"] == 3 * clips * sum(space.cost(a).macs for a in archs)
        assert row["train_macs"] > 3 * clips * row["macs"]  # more than the first arch alone


def test_study_minuscule(tmp_path, capsys):
    plan = StudyPlan(**TINY, methods=("supernet", "supernet-sandwich", "standalone"))
    path = run_study(tmp_path / "s", plan, device="cpu")
    data = json.loads(path.read_text())
    rows = data["rows"]
    assert {r["method"] for r in rows} == {"supernet", "supernet-sandwich", "standalone"}
    assert data["meta"]["eval_pairs"] == 4
    assert len(rows) == (4 + 4 + 4 + 1) * 2  # 2 resolutions; standalone: 4 presets + matched
    for r in rows:
        assert math.isfinite(r["val_loss"]["mean"]) and r["compute"] > 0 and r["seeds"] == 1
        assert (r["caption_accuracy"] is not None) == (r["resolution"] == 16)
        assert r["fvd"] is None  # 1-frame clips: I3D cannot score them
    assert "1 frames" in data["meta"]["fvd_note"]

    def get(method, preset, res=16, budget="same-steps"):
        return next(r for r in rows if (r["method"], r["preset"], r["resolution"],
                                        r["budget"]) == (method, preset, res, budget))
    uni, sand = get("supernet", "S")["compute"], get("supernet-sandwich", "S")["compute"]
    assert sand > 2 * uni  # 4 archs per step, the largest among them, vs one
    alone = [get("standalone", p)["compute"] for p in "SMLB"]
    assert alone == sorted(alone) and len(set(alone)) == 4  # same resolution draws, more MACs
    matched = get("standalone", "B", budget="matched-compute")
    assert uni <= matched["compute"] < uni + alone[-1]  # one B step at most past the target
    goal = {g["method"]: g for g in data["goal"]}
    ratio = goal["supernet"]["compute_ratio"]["mean"]
    assert ratio == pytest.approx(uni / sum(alone))
    gap = goal["supernet"]["gap"]["S@32"]
    assert gap["mean"] == pytest.approx(get("supernet", "S", 32)["val_loss"]["mean"]
                                        / get("standalone", "S", 32)["val_loss"]["mean"] - 1,
                                        abs=1e-6)
    assert gap["n"] == 1 and gap["ci95"] > 0 and gap["upper"] > gap["mean"]  # sample-paired
    curves = {r["run"]: r["curve"] for r in data["runs"]}
    assert sorted({c["step"] for c in curves["supernet"]}) == [1, 2]  # the learning curve
    assert len(curves["supernet"]) == 2 * 4 * 2 and len(curves["standalone-S"]) == 2 * 2
    md = (tmp_path / "s" / "results.md").read_text()
    assert "## 16 px" in md and "Against standalone training" in md
    assert (tmp_path / "s" / "val_loss_vs_compute.png").stat().st_size > 1000

    # run again with the same settings: nothing is retrained, the numbers are the same
    capsys.readouterr()
    run_study(tmp_path / "s", plan, device="cpu")
    assert "training" not in capsys.readouterr().out
    assert json.loads(path.read_text())["rows"] == rows
    # other settings in the same folder: refused before anything is touched
    before = path.read_text()
    with pytest.raises(ConfigError, match="other settings"):
        run_study(tmp_path / "s", StudyPlan(**{**TINY, "steps": 3}), device="cpu")
    assert path.read_text() == before


def test_study_jobs_give_the_sequential_results(tmp_path):
    """``--jobs 2``: the same runs (the matched-compute run after its supernet), in the same
    order, with the same compute and val losses as one job; a bad jobs value is refused."""
    plan = StudyPlan(**TINY, methods=("supernet", "standalone"))
    one = json.loads(run_study(tmp_path / "one", plan, device="cpu").read_text())
    two = json.loads(run_study(tmp_path / "two", plan, device="cpu", jobs=2).read_text())
    assert [(r["run"], r["seed"], r["steps"]) for r in two["runs"]] == \
        [(r["run"], r["seed"], r["steps"]) for r in one["runs"]]
    assert [r["run"] for r in one["runs"]][:2] == ["supernet", "standalone-B-matched"]
    for a, b in zip(one["rows"], two["rows"], strict=True):
        assert (a["method"], a["preset"], a["resolution"], a["compute"]) == \
            (b["method"], b["preset"], b["resolution"], b["compute"])
        assert b["val_loss"]["mean"] == pytest.approx(a["val_loss"]["mean"], rel=1e-4)
    assert two["meta"]["jobs"] == 2 and "2 job(s)" in two["meta"]["device"]
    with pytest.raises(ConfigError, match="jobs"):
        run_study(tmp_path / "bad", plan, device="cpu", jobs=0)
    assert main(["study", "--out", str(tmp_path / "bad2"), "--jobs", "two"]) == 2
    assert not (tmp_path / "bad2").exists()


def test_goal_check_arithmetic():
    def rec(method, seed, compute, losses, budget="same-steps"):
        return {"method": method, "budget": budget, "seed": seed, "compute": compute,
                "rows": [{"preset": p, "resolution": 16, "val_loss": v}
                         for p, v in losses.items()]}
    records = []
    for seed in (0, 1):
        records.append(rec("supernet", seed, 30, {"S": 1.01 + seed * 0.02, "B": 1.0}))
        records += [rec("standalone", seed, c, {p: 1.0}) for p, c in zip("SMLB", (10, 20, 30, 40))]
    (g,) = goal_check(records)
    assert g["gap"]["S@16"]["values"] == pytest.approx([0.01, 0.03])
    assert g["gap"]["B@16"]["mean"] == pytest.approx(0.0)
    assert g["compute_ratio"]["mean"] == pytest.approx(0.3)
    assert g["worst_gap"] == pytest.approx(0.02)
    # the goal is on the interval's upper end: 2 % ± t(0.975, 1) × 0.01414 / √2 is not within 3 %
    assert g["gap"]["S@16"]["upper"] == pytest.approx(0.02 + 12.7062 * 0.01, abs=1e-4)
    assert not g["goal_met"]
    records[0]["rows"][0]["val_loss"] = 1.0299  # gaps 2.99 % and 3.01 %
    records[4 + 1]["rows"][0]["val_loss"] = 1.0301
    (g,) = goal_check(records)
    assert g["worst_upper"] > 0.03 and not g["goal_met"]  # mean 3 %: the upper end is over
    records[4 + 1]["rows"][0]["val_loss"] = 1.0199
    records[0]["rows"][0]["val_loss"] = 1.0201
    (g,) = goal_check(records)
    assert g["worst_upper"] < 0.03 and g["goal_met"]
    records[0]["compute"] = 50  # seed 0 now costs 50 % of the four alone: mean ratio 40 %
    (g,) = goal_check(records)
    assert g["compute_ratio"]["mean"] == pytest.approx(0.4) and g["goal_met"]
    records[0]["compute"] = 51
    assert not goal_check(records)[0]["goal_met"]
    # 95 % t-interval of two values 1 and 3: t(0.975, 1) = 12.706, sd √2, n 2 → 12.706
    assert t_interval([1.0, 3.0]) == pytest.approx(12.7062, abs=1e-3)
    assert t_interval([1.0]) is None


def test_paired_gap_and_compute_to_reach():
    from sned.app.study_report import paired_gap, reach_compute

    alone = [1.0, 2.0, 3.0, 4.0]
    gap, se = paired_gap([1.1, 2.2, 3.3, 4.4], alone)  # exactly 10 % worse on every pair
    assert gap == pytest.approx(0.1) and se == pytest.approx(0.0, abs=1e-12)
    gap, se = paired_gap([1.2, 2.0, 3.6, 4.0], alone)
    assert gap == pytest.approx(0.08) and se > 0
    curve = [{"preset": "S", "resolution": 16, "compute": c, "val_loss": v}
             for c, v in ((10, 0.5), (20, 0.3), (30, 0.2))]
    assert reach_compute(curve, "S", 16, 0.4) == 15  # halfway between the first two points
    assert reach_compute(curve, "S", 16, 0.6) == 10
    assert reach_compute(curve, "S", 16, 0.1) is None


def test_study_horizons_parent_and_grown_rows(tmp_path):
    """A second horizon (separate 2N runs), the parent-phase and grown-from-B rows: meta
    records horizons and seeds; grown-from-B starts from the seed's standalone B and counts
    its compute; gaps are also given as a fraction of the S–B spread."""
    plan = StudyPlan(**{**TINY, "resolutions": (16,), "frames": 2}, plateau_seeds=1,
                     plateau_seeds_ml=0,
                     methods=("supernet", "standalone", "parent-third", "grown-from-B"))
    data = json.loads(run_study(tmp_path / "s", plan, device="cpu").read_text())
    meta = data["meta"]
    assert meta["horizons"] == [2, 4] and meta["eval_pairs"] == 4
    assert meta["seeds"]["supernet"] == {"N": 1, "2N": 1}
    assert meta["seeds"]["standalone-S"] == {"N": 1, "2N": 1}
    assert meta["seeds"]["standalone-M"] == {"N": 1}  # plateau_seeds_ml=0
    runs = {(r["run"], r["seed"]): r for r in data["runs"]}
    grown = runs["grown-from-B", 0]
    b = runs["standalone-B", 0]
    assert grown["parent_compute"] == b["compute"] and grown["steps"] == 1  # 2 × 1/3 → 1
    state = json.loads((tmp_path / "s" / "runs" / "grown-from-B" / "seed0" / "checkpoints" /
                        "latest" / "state.json").read_text())
    assert state["init_from"]["path"].endswith("standalone-B/seed0")
    assert state["init_from"]["new_zero_output"] == []  # a video B: every layer copied
    assert runs["parent-third", 0]["steps"] == 2
    goal = {g["method"]: g for g in data["goal"]}
    four = sum(runs[f"standalone-{p}", 0]["compute"] for p in "SMLB")
    assert goal["grown-from-B"]["compute_ratio"]["mean"] == pytest.approx(
        (grown["compute"] + b["compute"]) / four)
    assert {r["method"] for r in data["rows"]} == {"supernet", "standalone", "parent-third",
                                                   "grown-from-B"}
    assert all(r["steps"] <= 2 for r in data["rows"]  # the 2N runs are not in the main rows
               if r["budget"] == "same-steps")
    loss = {(r["method"], r["preset"], r["budget"]): r["val_loss"]["mean"] for r in data["rows"]}
    spread = loss["standalone", "S", "same-steps"] - loss["standalone", "B", "same-steps"]
    cell = goal["supernet"]["gap_of_spread"]["M@16"]
    assert cell["mean"] == pytest.approx((loss["supernet", "M", "same-steps"]
                                          - loss["standalone", "M", "same-steps"]) / spread)
    assert goal["supernet"]["gap"]["M@16"]["n"] == cell["n"] == 1 and goal["supernet"]["horizon"] == 2
    long = data["horizons"]["4"]
    assert {g["method"] for g in long["goal"]} == {"supernet"}
    assert set(long["goal"][0]["gap"]) == {"S@16", "B@16"}  # M and L alone: not at 2N
    change = data["plateau"]["change"]["standalone"]["S@16"]
    s2 = next(r for r in long["rows"] if (r["method"], r["preset"]) == ("standalone", "S"))
    assert change["change"] == pytest.approx(s2["val_loss"]["mean"]
                                             / loss["standalone", "S", "same-steps"] - 1)
    assert set(data["plateau"]["reach"]["supernet"]) >= {"S@16@2", "B@16@2", "S@16@4"}
    md = (tmp_path / "s" / "results.md").read_text()
    assert "Horizons 2 and 4 steps" in md and "S–B difference" in md

    # the order runs start in: supernet and standalone of seed 0, the ablations, the other
    # seeds, then horizon 2N
    order = [(spec.name, spec.horizon, seed) for _, spec, seed in
             plan_tasks(dataclasses.replace(plan, seeds=2, ablation_seeds=1),
                        plan_runs(plan, (16,)))]
    main = ["supernet", "standalone-S", "standalone-M", "standalone-L", "standalone-B"]
    assert [(n, s) for n, _, s in order[:11]] == [(n, 0) for n in main] + [
        ("parent-third", 0)] + [(n, 1) for n in main]
    assert all(h == 4 for _, h, _ in order[11:])

    # --partial: a study stopped before its last run reports what finished, trains nothing
    gone = tmp_path / "s" / "runs" / "supernet@4" / "seed0" / "eval.json"
    gone.unlink()
    part = json.loads(run_study(tmp_path / "s", plan, device="cpu", partial=True).read_text())
    assert part["meta"]["partial"]["missing"] == ["supernet@4 seed 0"]
    assert ("supernet@4", 0) not in {(r["run"], r["seed"]) for r in part["runs"]}
    assert part["goal"] == data["goal"]  # horizon N is complete: its verdict is unchanged
    assert not gone.exists()
    assert "1 still missing (supernet@4 seed 0)" in (tmp_path / "s" / "results.md").read_text()


def test_log_reach_interpolates_in_log_compute():
    from sned.app.study_report import log_reach

    pts = [(100.0, 0.5), (400.0, 0.3)]
    got = log_reach(pts, 0.4)  # halfway in loss → halfway in log-compute: √(100 × 400)
    assert got == {"macs": 200, "bound": "reached"}
    assert log_reach(pts, 0.6) == {"macs": 100, "bound": "at_most"}
    assert log_reach(pts, 0.2) == {"macs": None, "bound": "above"}


@pytest.mark.parametrize("args, needle", [
    (["--seeds", "0"], "seeds"),
    (["--steps", "0"], "steps"),
    (["--methods", "supernet,bogus"], "bogus"),
    (["--max-objects", "0"], "max_objects"),
    (["--plateau-seeds", "-1"], "plateau_seeds"),
    (["--resolutions", "24"], "24"),
    (["--resolutions", "x"], "resolutions"),
    (["--config", "tiny-ssr"], "tiny-ssr"),
    (["--config", "nope.yaml"], "nope"),
])
def test_cli_bad_input_exits_2_before_work(tmp_path, capsys, args, needle):
    out = tmp_path / "s"
    assert main(["study", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]
    assert not out.exists()


def test_python_dash_m_sees_lazily_registered_commands():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run([sys.executable, "-m", "sned.cli", "study", "--help"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and "--quick" in r.stdout


@pytest.mark.slow
def test_quick_study_writes_both_files_with_the_recipe_and_its_ablations(tmp_path):
    """``sned study --quick`` writes results.json and results.md with the default methods (the
    recipe, standalone with its matched-compute row, and issue 26's ablations), every row with a
    finite val loss and its compute, at every preset and resolution, the goal with intervals
    and learning curves."""
    out = tmp_path / "q"
    assert main(["study", "--quick", "--out", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    rows = data["rows"]
    methods = ("supernet", "standalone", "uniform-draws", "no-distill", "previous-recipe",
               "parent-third", "parent-two-thirds", "grown-from-B")
    assert {r["method"] for r in rows} == set(methods)
    keys = {(r["method"], r["budget"], r["preset"], r["resolution"]) for r in rows}
    assert len(keys) == len(rows)
    for res in (16, 32):  # tiny-base's resolutions
        for p in "SMLB":
            for m in methods:
                assert (m, "same-steps", p, res) in keys
        assert ("standalone", "matched-compute", "B", res) in keys
    assert len(rows) == 2 * (7 * 4 + 4 + 1)
    for r in rows:
        assert math.isfinite(r["val_loss"]["mean"]) and r["val_loss"]["n"] == 1
        assert isinstance(r["compute"], int) and r["compute"] > 0
        assert r["seeds"] == 1 and r["steps"] >= 1
    assert data["meta"]["eval_pairs"] == 32
    for g in data["goal"]:
        assert set(g["gap"]) == {f"{p}@{r}" for p in "SMLB" for r in (16, 32)}
        assert all(c["ci95"] is not None and c["n"] == 1 for c in g["gap"].values())
    assert all(len({c["step"] for c in r["curve"]}) == 2 for r in data["runs"])
    md = (out / "results.md").read_text()
    assert "## 16 px" in md and "## 32 px" in md and "Against standalone training" in md
    for m in methods:
        assert f"| {m} |" in md
    assert (out / "val_loss_vs_compute.png").stat().st_size > 1000
    assert data["meta"]["plan"]["steps"] == 20 and data["meta"]["wall_seconds"] > 0
    assert data["meta"]["horizons"] == [20] and data["meta"]["seeds"]["supernet"] == {"N": 1}
    assert all(set(g["gap_of_spread"]) == set(g["gap"]) for g in data["goal"])
