"""A run is never lost: --overwrite, resume fallback and config checks, crash leftovers, torn
logs, checkpoint pruning (issue 9 items 1-3, 7, 8). The refusals themselves (exit 2, files
untouched) are rows of tests/test_bad_inputs.py."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from sned.cli import main
from sned.store.checkpoint import list_checkpoints, save_checkpoint
from sned.train.config import load_run_config
from sned.train.run_folder import RunFolderError
from sned.train.trainer import Trainer

FAST = ["model.frames=2", "data.num_videos=8", "train.batch_size=2", "train.warmup_steps=2",
        "train.warmup_stages=2", "train.ema_decay=0.99", "--no-progress"]


def _train(out, steps, *extra):
    return main(["train", "tiny-base", "--out", str(out), "--steps", str(steps), *FAST, *extra])


def _steps_logged(out):
    return [json.loads(r)["step"] for r in (out / "metrics.jsonl").read_text().splitlines()]


def test_overwrite_replaces_the_run_and_keeps_other_files(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out, 4, "train.checkpoint_every=2") == 0
    (out / "notes.txt").write_text("mine")
    assert _train(out, 2, "--overwrite", "train.checkpoint_every=1", "train.keep_last=1") == 0
    assert "--overwrite: removed the previous run" in capsys.readouterr().err
    assert _steps_logged(out) == [1, 2]
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step-0000002"]
    assert (out / "checkpoints" / "latest").resolve().name == "step-0000002"
    assert (out / "notes.txt").read_text() == "mine"


def test_resume_falls_back_when_latest_dangles(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out, 4, "train.checkpoint_every=2") == 0
    shutil.rmtree(out / "checkpoints" / "step-0000004")  # latest -> step-0000004 dangles
    trainer = Trainer(load_run_config("tiny-base", FAST[:-1]), out, resume=True, progress=False)
    assert trainer.step == 2
    err = capsys.readouterr().err
    assert "points to missing 'step-0000004'" in err and "step-0000002" in err
    assert _steps_logged(out) == [1, 2]  # rows 3, 4 belong to the lost checkpoint
    trainer.fit(4)
    assert _steps_logged(out) == [1, 2, 3, 4]
    assert (out / "checkpoints" / "latest").resolve().name == "step-0000004"


def test_resume_notes_changed_settings_and_applies_them(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out, 2) == 0
    capsys.readouterr()
    run = load_run_config("tiny-base", FAST[:-1] + ["train.lr=3e-4", "train.steps=3"])
    trainer = Trainer(run, out, resume=True, progress=False)
    err = capsys.readouterr().err
    assert "train.lr 0.0001 -> 0.0003" in err and "train.steps 2 -> 3" in err
    # the new lr at the resumed step of the (default cosine) schedule over the new steps
    from sned.train.lr_schedule import lr_factor

    cfg = trainer.cfg
    want = 3e-4 * lr_factor(cfg.lr_schedule, 3, cfg.lr_warmup_steps, cfg.lr_floor)(2)
    assert cfg.lr_schedule == "cosine" and want < 3e-4
    assert [g["lr"] for g in trainer.optimizer.param_groups] == [pytest.approx(want)]
    assert trainer.lr_scheduler.get_last_lr() == [pytest.approx(want)]


def test_resume_restores_the_warmup_lr(tmp_path):
    """LambdaLR.load_state_dict does not set the optimizer's lr: resumed mid-warm-up, the
    next step must use the schedule's lr, not its first value."""
    over = FAST[:-1] + ["train.lr_warmup_steps=10"]
    straight = Trainer(load_run_config("tiny-base", over), tmp_path / "a", progress=False).fit(3)
    Trainer(load_run_config("tiny-base", over), tmp_path / "b", progress=False).fit(2)
    resumed = Trainer(load_run_config("tiny-base", over), tmp_path / "b", resume=True,
                      progress=False)
    assert resumed.optimizer.param_groups[0]["lr"] == 3e-5  # 1e-4 * (2 + 1) / 10
    resumed.fit(3)
    assert resumed.optimizer.param_groups[0]["lr"] == straight.optimizer.param_groups[0]["lr"]


def test_stale_temporary_checkpoint_folders_are_removed_on_start(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out, 2) == 0
    stale = out / "checkpoints" / ".tmp-step-0000003-999999"  # a kill -9 during a save
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"x" * 1000)
    (out / "checkpoints" / ".latest-999999").symlink_to("step-0000003")
    capsys.readouterr()
    assert _train(out, 3, "--resume") == 0
    assert "removed 2 temporary file(s)" in capsys.readouterr().err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()
                  if p.name.startswith(".")) == []
    assert _steps_logged(out) == [1, 2, 3]


def test_torn_last_metrics_line_is_dropped_on_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out, 2, "train.checkpoint_every=1") == 0
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "loss": 0.12')  # killed during the write of step 3's row
    capsys.readouterr()
    assert _train(out, 3, "--resume") == 0
    err = capsys.readouterr().err
    assert "metrics.jsonl: dropped a torn last line (line 3" in err
    assert _steps_logged(out) == [1, 2, 3]


def test_pruning_sorts_by_step_number_not_name(tmp_path):
    """step-10000000 sorts before step-9999999 by name: pruning must keep the newest."""
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    root = tmp_path / "checkpoints"
    for step in (9_999_998, 9_999_999, 10_000_000):
        save_checkpoint(root, step, model, opt, None, sched, {}, keep_last=2)
    assert [p.name for p in list_checkpoints(root)] == ["step-9999999", "step-10000000"]
    assert os.readlink(root / "latest") == "step-10000000"


def test_resume_reads_keys_added_since_the_checkpoint_as_defaults(tmp_path, capsys):
    """A checkpoint written before a model option existed resumes: the missing key takes its
    default, which is not a change (a key whose default differs from the run's still is)."""
    out = tmp_path / "run"
    assert _train(out, 2) == 0
    state_file = out / "checkpoints" / "latest" / "state.json"
    state = json.loads(state_file.read_text())
    for key in ("ssr_residual", "ssr_residual_scale"):  # options this checkpoint predates
        del state["run"]["model"][key]
    state_file.write_text(json.dumps(state))
    capsys.readouterr()
    trainer = Trainer(load_run_config("tiny-base", FAST[:-1]), out, resume=True, progress=False)
    assert trainer.step == 2 and "ssr_residual" not in capsys.readouterr().err
    del state["run"]["model"]["pooled_text"]  # default False, but this run trains with True
    state_file.write_text(json.dumps(state))
    with pytest.raises(RunFolderError, match="model.pooled_text"):
        Trainer(load_run_config("tiny-base", FAST[:-1]), out, resume=True, progress=False)


# ------------------------------------------------------------------- issue 28: world, failed starts
def test_resume_under_another_world_size_is_refused_unless_allowed(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out, 1) == 0
    state_file = (out / "checkpoints" / "latest").resolve() / "state.json"
    state = json.loads(state_file.read_text())
    assert state["world_size"] == 1 and state["global_batch"] == 2
    state.update(world_size=2, global_batch=4)  # as a 2-rank torchrun run writes it
    state_file.write_text(json.dumps(state))
    capsys.readouterr()
    assert _train(out, 2, "--resume") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "2 rank(s) (global batch 4)" in err and "on 1 (global batch 2)" in err
    assert "--allow-world-size-change" in err
    assert _steps_logged(out) == [1]  # nothing trained, nothing written
    assert _train(out, 2, "--resume", "--allow-world-size-change") == 0
    assert "recorded in state.json" in capsys.readouterr().err
    latest = json.loads(((out / "checkpoints" / "latest").resolve() / "state.json").read_text())
    assert latest["world_changes"] == [{"step": 1, "world_size": [2, 1],
                                        "global_batch": [4, 2]}]
    assert latest["world_size"] == 1 and latest["step"] == 2


def test_a_failed_start_leaves_nothing(tmp_path, capsys, monkeypatch):
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(3):
        (videos / f"v{i}.mp4").write_bytes(b"\0not a video" * 10)
    out = tmp_path / "run"
    bad = ["data.kind=folder", f"data.root={videos}"]
    with pytest.warns(UserWarning):
        assert _train(out, 1, *bad) == 2
    assert not out.exists()
    # an existing folder keeps what it held; --overwrite of a run with bad data keeps the run
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.warns(UserWarning):
        assert _train(out, 1, *bad) == 2
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert _train(tmp_path / "old", 1) == 0
    before = sorted(p.name for p in (tmp_path / "old").iterdir())
    with pytest.warns(UserWarning):
        assert _train(tmp_path / "old", 1, "--overwrite", *bad) == 2
    assert sorted(p.name for p in (tmp_path / "old").iterdir()) == before
    # an error in the first step: nothing is left, and the plain rerun is not refused
    from sned.train import tasks

    def fails(self, trainer, batch):
        raise ValueError("boom in the first step")

    monkeypatch.setattr(tasks.DiffusionTask, "backward", fails)
    assert _train(out, 1) == 2
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    monkeypatch.undo()
    assert _train(out, 1) == 0
