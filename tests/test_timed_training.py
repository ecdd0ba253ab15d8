"""Budgeted training (the quickstart's stages): steps planned from measured steps, so the lr
schedule and the sampling warm-up end where the run ends."""

import json

import pytest
import torch

from sned.app.timed_training import planned_steps, step_seconds, train_for
from sned.train.lr_schedule import lr_factor

FAST = ["model.frames=2", "data.num_videos=16", "train.batch_size=2", "train.lr_warmup_steps=1",
        "train.lr=1e-3"]


def test_planned_steps_fill_the_budget_with_both_phases():
    # a third of the steps at 0.3 s (warm-up, largest subnet), the rest at 0.15 s
    n = planned_steps(100.0, warm_s=0.3, after_s=0.15)
    assert n == int(100 / (0.3 / 3 + 0.15 * 2 / 3))
    assert n / 3 * 0.3 + 2 * n / 3 * 0.15 == pytest.approx(100, rel=0.01)
    assert planned_steps(0.5, 1.0, 1.0) == 20  # the floor


def test_step_seconds_times_real_steps_and_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)  # honour TMPDIR in this process
    warm, after = step_seconds("tiny-base", FAST, torch.device("cpu"))
    assert 0 < after and 0 < warm < 60
    assert not list(tmp_path.glob("sned-probe-*"))  # the probe's folder is gone


def test_budgeted_run_reaches_the_end_of_its_cosine_schedule(tmp_path):
    out = tmp_path / "run"
    steps = train_for("tiny-base", FAST + ["train.lr_schedule=cosine", "train.lr_floor=0.05"],
                      out, seconds=1e6, device=torch.device("cpu"), max_steps=6,
                      say=lambda m: None)
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines() if r]
    assert steps == 6 and len(rows) == 6
    lrs = [r["lr"] for r in rows]
    factor = lr_factor("cosine", 6, warmup=1, floor=0.05)
    # each row logs the lr after its scheduler step: the whole schedule ran, down to the floor
    assert lrs == pytest.approx([1e-3 * factor(s + 1) for s in range(6)])
    assert lrs[-1] < 0.1 * 1e-3
    state = json.loads(next((out / "checkpoints").glob("*/state.json")).read_text())
    assert state["step"] == 6


def test_a_minimum_of_steps_is_trained_whatever_the_clock_says(tmp_path, monkeypatch):
    """Issue 28 item 10: a stage with ``min_steps`` is not cut by its (here: spent) budget."""
    import sned.app.timed_training as tt

    monkeypatch.setattr(tt, "SLOW_LIMIT", float("inf"))
    out = tmp_path / "run"
    steps = train_for("tiny-base", FAST, out, seconds=1e-3, device=torch.device("cpu"),
                      max_steps=5, say=lambda m: None, min_steps=5)
    rows = [r for r in (out / "metrics.jsonl").read_text().splitlines() if r]
    assert steps == 5 and len(rows) == 5


def test_a_machine_too_slow_for_the_minimum_stops_before_training(tmp_path, monkeypatch):
    import sned.app.timed_training as tt

    monkeypatch.setattr(tt, "step_seconds", lambda *a: (37.6, 37.6))
    with pytest.raises(tt.TooSlow, match=r"37\.60 s per training step.*600 steps.*376 min"):
        train_for("tiny-base", FAST, tmp_path / "run", seconds=120, device=torch.device("cpu"),
                  say=lambda m: None, min_steps=600)
    assert not (tmp_path / "run").exists()
    assert issubclass(tt.TooSlow, ValueError)  # the CLI's one-line error, exit 2
