"""DiffNAS end to end on a tiny random teacher: split, search invariants, retrain, resume."""

import argparse
import json

import numpy as np
import pytest
import torch

import sned
from sned.arch import resolve
from sned.cli import main
from sned.cli.diffnas import diffnas_args
from sned.diffnas import Options, run_diffnas
from sned.diffnas.blocks import run_stage, teacher_trace
from sned.diffnas.search import choose, fit_max_macs, StageResult
from sned.diffnas.space import StageSpace
from sned.diffnas.student import init_student, teacher_arch
from sned.diffnas import report
from sned.diffnas.pipeline import Run
from sned.diffnas.tasks import JointLossTask
from sned.diffusion import DiffusionConfig

SMALL = ["frames=2", "resolutions=[16]", "model_channels=16", "heads=[1,2,2]",
         "time_embed_dim=32"]
OPTS = dict(supernet_steps=3, retrain_steps=4, budget=5, batch_size=2, search_clips=2,
            pairs_per_clip=2, score_heldout=3, device="cpu", data={"num_videos": 8},
            fvd_videos=3, compare="0.5", agreement_samples=2, agreement_steps=2)


class Killed(Exception):
    pass


class PixelStats(torch.nn.Module):
    """A fast stand-in FVD detector: uint8 (N, T, H, W, 3) → per-channel means and standard
    deviations (N, 6). The real I3D is exercised by the slow test below."""

    detector_id, name, sha256, random_features = "test-pixel-stats", "pixel stats", None, True

    def forward(self, videos):
        x = videos.float() / 255
        return torch.cat([x.mean((1, 2, 3)), x.std((1, 2, 3))], 1)


def _teacher(folder, config="tiny-base", overrides=SMALL, preset="M"):
    torch.manual_seed(0)
    sup = sned.build_supernet(config, overrides)
    arch = sned.search_space(sup.config).preset(preset)
    sned.save_pretrained(sned.extract(sup, arch), folder,
                         extra={"diffusion": DiffusionConfig().to_dict()})
    return folder


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One pipeline run, killed in the middle of retraining (an exception in its third step)
    and continued."""
    root = tmp_path_factory.mktemp("diffnas")
    teacher = _teacher(root / "teacher")
    out = root / "out"
    backward = JointLossTask.backward

    def dies_at_step_2(self, trainer, batch):
        if trainer.step == 2:
            raise Killed
        return backward(self, trainer, batch)

    JointLossTask.backward = dies_at_step_2
    try:
        with pytest.raises(Killed):
            run_diffnas(teacher, out, Options(**OPTS), log=lambda m: None)
    finally:
        JointLossTask.backward = backward
    first = {"search": (out / "search.json").read_bytes(),
             "student_mtime": (out / "work" / "student.safetensors").stat().st_mtime_ns,
             "checkpoints": sorted(p.name for p in (out / "retrain" / "checkpoints")
                                   .glob("step-*"))}
    loader, steps = report.load_detector, report.FVD_STEPS
    report.load_detector, report.FVD_STEPS = (lambda spec, device: PixelStats()), 2
    try:
        logs = []
        run_diffnas(teacher, out, Options(**OPTS), log=logs.append)
    finally:
        report.load_detector, report.FVD_STEPS = loader, steps
    return teacher, out, first, logs


def test_teacher_shaped_stages_reproduce_the_teacher_exactly(tmp_path):
    teacher = sned.load_pretrained(_teacher(tmp_path / "t"))
    student = init_student(teacher)
    arch = teacher_arch(teacher)
    layouts = resolve(student.config, arch, student.specs)
    kw = sned.example_inputs(teacher, batch=2)
    with torch.no_grad():
        pred, trace = teacher_trace(teacher, kw)
        assert len(trace.stages) == 7  # 3 encoder levels, the middle, 3 decoder levels
        for stage, io in zip(student.stages, trace.stages):
            for out, ref in zip(run_stage(student, stage, io, trace, layouts), io.outputs):
                torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)  # float rounding only
        # chaining the student's own stage outputs gives the teacher's prediction
        torch.testing.assert_close(student(**kw, arch=arch), pred, rtol=1e-5, atol=1e-6)


def test_stage_space_holds_the_teacher_and_nothing_larger(tmp_path):
    teacher = sned.load_pretrained(_teacher(tmp_path / "t"))
    arch = teacher_arch(teacher)
    rng = np.random.default_rng(0)
    for stage in teacher.stages:
        space = StageSpace(teacher.config, teacher.specs, arch, stage, teacher.config.frames)
        cands = space.candidates(6, rng)
        assert cands[0] == tuple(arch.blocks[i] for i in stage.blocks)
        assert len(set(cands)) == len(cands) == min(6, space.size())
        t_cost = space.cost(space.teacher)
        for c in cands:
            assert space.cost(c).params <= t_cost.params


def test_choose_is_cheapest_candidate_not_worse_than_teacher():
    rows = [{"macs": 10, "params": 5, "eval_loss": 0.5}, {"macs": 4, "params": 2, "eval_loss": 0.6},
            {"macs": 6, "params": 3, "eval_loss": 0.5}, {"macs": 8, "params": 4, "eval_loss": 0.1}]
    assert choose(rows, 0) == 2
    rows[2]["eval_loss"] = 0.51
    assert choose(rows, 0) == 3


def test_max_macs_cuts_where_the_slack_is():
    a = StageResult("a", [{"macs": 10, "eval_loss": 1.0}, {"macs": 5, "eval_loss": 1.01}], 0, 0)
    b = StageResult("b", [{"macs": 10, "eval_loss": 0.01}, {"macs": 5, "eval_loss": 0.02}], 0, 0)
    fit_max_macs([a, b], 2, 17)  # one cut of 5 is needed: b doubles its loss, a rises 1 %
    assert (a.chosen, b.chosen) == (1, 0)
    with pytest.raises(ValueError, match="below the cheapest"):
        fit_max_macs([a, b], 2, 11)


def test_search_json_invariants(run):
    _, out, _, _ = run
    doc = json.loads((out / "search.json").read_text())
    assert len(doc["blocks"]) == 7
    for block in doc["blocks"]:
        cands, t, c = block["candidates"], block["teacher"], block["chosen"]
        bar = cands[t]["eval_loss"]
        assert cands[c]["eval_loss"] <= bar
        assert not any(x["macs"] < cands[c]["macs"] and x["eval_loss"] <= bar for x in cands)
    assert doc["subnet"]["macs"] <= doc["teacher"]["macs"]
    assert sum(b["candidates"][b["chosen"]]["macs"] for b in doc["blocks"]) <= \
        sum(b["candidates"][b["teacher"]]["macs"] for b in doc["blocks"])
    # scratch students by default; every scored candidate is a trained one, its updates counted
    assert doc["student_init"] == "scratch" and doc["heldout"]["disjoint"]
    for b in doc["blocks"]:  # 3 steps x 4 draws over a pool of <= 5: balanced
        ups = [c["updates"] for c in b["candidates"]]
        assert sum(ups) == 3 * 4 and max(ups) - min(ups) <= 1 and min(ups) >= 2
    assert doc["updates"]["min"] == min(c["updates"] for b in doc["blocks"]
                                        for c in b["candidates"])
    # the capped subnet fits under the uniform shrink's MACs, itself below the teacher's
    assert [c["ratio"] for c in doc["capped"]] == [0.5]
    c = doc["capped"][0]
    assert c["subnet"]["macs"] <= c["max_macs"] == c["uniform"]["macs"] < doc["teacher"]["macs"]
    # the search's pairs and the retrain's recipe are recorded
    h = doc["heldout"]
    assert (h["search"], h["pairs_per_clip"], h["search_pairs"], h["score_pairs"]) == (2, 2, 4, 6)
    r = doc["retrain"]
    assert (r["steps"], r["from"]["steps"], r["samples"]) == (4, "option", 4 * r["batch_size"])
    assert r["lr_schedule"] == "cosine" and "not recorded" in r["teacher_source"]


def test_model_folder_loads_has_stated_params_and_samples(run):
    _, out, _, _ = run
    doc = json.loads((out / "search.json").read_text())
    model = sned.load_pretrained(out / "model")
    assert not model.is_supernet
    assert sum(p.numel() for p in model.parameters()) == doc["subnet"]["params"]
    assert model.arch.to_dict()["blocks"] == doc["subnet"]["arch"]["blocks"]
    from sned.pipelines.sampling import sample

    emb = torch.randn(1, 3, model.config.text_dim)
    video = sample(model, emb, steps=2, progress=False)
    assert video.shape == (1, 3, 2, 16, 16) and torch.isfinite(video).all()


def test_beta_falls_from_one_to_zero_and_report_compares(run):
    _, out, _, _ = run
    rows = [json.loads(x) for x in (out / "retrain" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    betas = [r["beta"] for r in rows]
    assert betas[0] == pytest.approx(1.0) and betas[-1] == pytest.approx(0.0)
    assert all(a > b for a, b in zip(betas, betas[1:]))
    for r in rows:
        assert r["loss"] == pytest.approx(r["beta"] * r["distill_loss"]
                                          + (1 - r["beta"]) * r["diffusion_loss"], rel=1e-5)
    text = (out / "report.md").read_text()
    for name in ("teacher", "diffnas", "uniform-r0.5", "val loss", "FVD", "**Verdict: "):
        assert name in text
    header = next(line for line in text.splitlines() if line.startswith("| model |"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert cols[-4:] == ["PSNR", "SSIM", "FVD", "KVD"]
    for name in ("teacher", "diffnas", "uniform-r0.5"):
        row = next(line for line in text.splitlines() if line.startswith(f"| {name} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert np.isfinite(float(cells[-2])) and np.isfinite(float(cells[-1]))
    assert "n = 3 generated clips per model (9 frames" in text and "biased" in text
    assert "2 DDIM steps" in text


def test_report_holds_the_capped_comparison_with_intervals(run):
    _, out, _, _ = run
    from sned.diffnas.report import model_folder

    text = (out / "report.md").read_text()
    assert "## References" in text and "DiffNAS − uniform (95 % CI)" in text
    scores = json.loads((out / "scores.json").read_text())["models"]
    doc = json.loads((out / "search.json").read_text())
    teacher_arch = sned.load_pretrained(model_folder(out, out / "compare" / "teacher-arch"))
    assert teacher_arch.arch.to_dict()["blocks"] == doc["teacher"]["arch"]["blocks"]
    for r in ("0.5",):
        for label in (f"diffnas-r{r}", f"uniform-r{r}"):
            row = scores[label]
            assert len(row["per_sample"]) == OPTS["score_heldout"] * OPTS["pairs_per_clip"]
            assert 0 < row["macs_frac"] < 1 and 0 < row["params_frac"] <= 1
            assert f"| {label} |" in text
            model = sned.load_pretrained(model_folder(out, out / "compare" / label))
            assert sum(p.numel() for p in model.parameters()) == row["params"]
    assert scores["teacher"]["macs_frac"] == 1.0


def test_killed_run_continues_from_the_last_finished_stage(run):
    _, out, first, logs = run
    assert not any("supernet training" in m or "local search" in m for m in logs)
    assert logs[0].startswith("diffnas: retraining")
    # the killed retraining saved its two finished steps and went on from there
    assert first["checkpoints"][-1] == "step-0000002"
    assert logs[1] == f"diffnas: resuming {out / 'retrain'} from its last checkpoint"
    assert (out / "search.json").read_bytes() == first["search"]
    assert (out / "work" / "student.safetensors").stat().st_mtime_ns == first["student_mtime"]
    state = json.loads((out / "state.json").read_text())
    assert state["done"] == ["supernet", "search", "retrain", "baseline", "report"]


def test_cli_bad_inputs_exit_2_before_training(run, tmp_path, capsys):
    teacher, out, _, _ = run
    args = ["diffnas", str(teacher), "--out", str(tmp_path / "o"), "--device", "cpu"]
    assert main(args + ["--max-macs", "10"]) == 2
    assert "--max-macs" in capsys.readouterr().err
    assert main(args + ["--budget", "0"]) == 2
    assert main(args + ["--teacher-prob", "1.5"]) == 2
    assert "--teacher-prob" in capsys.readouterr().err
    assert main(args + ["--i3d", str(tmp_path / "nope.ckpt")]) == 2
    assert "nope.ckpt" in capsys.readouterr().err
    assert main(args + ["--data", "nope=1"]) == 2
    assert "'nope'" in capsys.readouterr().err
    assert main(args + ["--student-init", "copy"]) == 2
    assert "--student-init" in capsys.readouterr().err
    assert main(args + ["--ratios", "1,2"]) == 2
    assert "--ratios" in capsys.readouterr().err
    assert main(args + ["--draws", "0"]) == 2
    assert main(args + ["--pairs-per-clip", "0"]) == 2
    assert "--pairs-per-clip" in capsys.readouterr().err
    # the preset-M teacher is no wider than r = 0.75: that "uniform shrink" would be the
    # teacher itself at 100 % of its MACs (issue 28, item 7) — refused, naming the ratio
    assert main(args + ["--compare", "0.75,0.5"]) == 2
    err = capsys.readouterr().err
    assert "--compare 0.75" in err and "100.0%" in err
    assert main(["diffnas", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert main(["diffnas", str(teacher), "--out", str(out), "--device", "cpu",
                 "--budget", "7"]) == 2  # a different run lives there
    assert "budget" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_fvd_without_i3d_weights_is_reported_not_fatal(run, tmp_path, monkeypatch):
    teacher, _, _, _ = run
    monkeypatch.setenv("SNED_I3D_WEIGHTS", str(tmp_path / "missing.ckpt"))
    scores, note = report.fvd_kvd_rows({"teacher": teacher}, 2, 4, None, None, "cpu",
                                       tmp_path / "cache")
    assert scores is None and "not computed" in note and "missing.ckpt" in note
    scores, note = report.fvd_kvd_rows({"teacher": teacher}, 1, 4, None, None, "cpu",
                                       tmp_path / "cache")
    assert scores is None and "not applicable" in note


@pytest.mark.slow
def test_fvd_with_the_real_kinetics_i3d(run, tmp_path):
    """The installed Kinetics-400 I3D scores a model folder (slow on CPU: 224² I3D)."""
    teacher, out, _, _ = run
    scores, note = report.fvd_kvd_rows({"subnet": out / "model"}, 2, 2, None, None, "cpu",
                                       tmp_path / "cache")
    assert scores is not None, note
    assert np.isfinite(scores["subnet"]["fvd"]) and "Kinetics-400" in note


def test_bare_compare_picks_the_cheapest_uniform_shrink_not_below_the_subnet(run, tmp_path):
    teacher, _, _, _ = run
    p = argparse.ArgumentParser()
    diffnas_args(p)
    assert p.parse_args([str(teacher), "--out", "x"]).compare == ""  # off by default
    assert p.parse_args([str(teacher), "--out", "x", "--compare"]).compare == "auto"
    r = Run(teacher, tmp_path / "o", Options(**{**OPTS, "compare": "auto"}), log=lambda m: None)
    assert r.caps is None  # decided after the search
    ladder = r._uniform_ladder()  # (ratio, MACs) below the teacher's, most expensive first
    assert ladder and all(m < r.teacher_cost.macs for _, m in ladder)
    assert [m for _, m in ladder] == sorted((m for _, m in ladder), reverse=True)
    for _, macs in ladder:  # a subnet exactly at a shrink's MACs is compared with that shrink
        assert r.auto_cap(macs) == [next(x for x in ladder if x[1] == macs)]
    (lo_r, lo_m) = ladder[-1]
    assert r.auto_cap(lo_m - 1) == [(lo_r, lo_m)]  # below every shrink: the cheapest
    assert r.auto_cap(r.teacher_cost.macs) == [ladder[0]]  # nothing cut: the largest, capped
    assert not (tmp_path / "o").exists()
