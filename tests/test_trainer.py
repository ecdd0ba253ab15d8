"""Supernet training end to end on CPU: logging, checkpoints, exact resume, NaN handling,
signals, DDP and bad input."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from sned.cli import main
from sned.config import ConfigError
from sned.train.config import load_run_config
from sned.train.trainer import Trainer, TrainingError

FAST = ["model.frames=2", "data.num_videos=16", "train.batch_size=2", "train.warmup_steps=4",
        "train.warmup_stages=2", "train.log_every=1", "train.ema_decay=0.99"]


def _run(overrides=(), config="tiny-base"):
    return load_run_config(config, FAST + list(overrides))


def test_cli_train_writes_log_checkpoints_and_tensorboard(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "tiny-base", "--out", str(out), "--steps", "6", "--no-progress",
                 *FAST, "train.checkpoint_every=2", "train.keep_last=2"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    for r in rows:
        assert {"step", "loss", "resolution", "params", "min_ratio", "min_keep"} <= set(r)
        assert r["resolution"] in (16, 32) and np.isfinite(r["loss"])
    assert rows[0]["min_ratio"] == 1.0 and rows[-1]["min_ratio"] == 0.4
    ckpts = sorted(p.name for p in (out / "checkpoints").glob("step-*"))
    assert ckpts == ["step-0000004", "step-0000006"]  # keep_last=2
    latest = out / "checkpoints" / "latest"
    assert latest.resolve().name == "step-0000006"
    assert {p.name for p in latest.iterdir()} >= {"model.safetensors", "ema.safetensors",
                                                   "optimizer.safetensors", "state.json"}
    assert any((out / "tensorboard").iterdir())


def assert_same_checkpoint(a, b):
    """Two checkpoint folders hold bitwise-equal model, EMA, optimizer and RNG state and the
    same scalar state (step, lr schedule, EMA counter, python/numpy RNG)."""
    for name in ("model", "ema", "optimizer", "rng"):
        ta, tb = load_file(a / f"{name}.safetensors"), load_file(b / f"{name}.safetensors")
        assert ta.keys() == tb.keys(), name
        for k in ta:
            assert torch.equal(ta[k], tb[k]), f"{name}.safetensors: {k} differs"
    sa, sb = (json.loads((f / "state.json").read_text()) for f in (a, b))
    assert sa == sb


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_resume_is_exact(tmp_path, dropout):
    """Default mode (no deterministic algorithms): 3 steps + resume to 6 equals 6 straight,
    bitwise — with dropout, captions of different lengths in a batch, and lr warm-up."""
    over = [f"model.dropout={dropout}", "train.checkpoint_every=100", "train.lr_warmup_steps=4"]
    Trainer(_run(over), tmp_path / "a", progress=False).fit(6)
    first = Trainer(_run(over), tmp_path / "b", progress=False).fit(3)
    assert first.step == 3
    resumed = Trainer(_run(over), tmp_path / "b", resume=True, progress=False)
    assert resumed.step == 3
    resumed.fit(6)
    rows_a = [json.loads(r) for r in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    rows_b = [json.loads(r) for r in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows_b] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in rows_a] == [r["loss"] for r in rows_b]
    assert_same_checkpoint(tmp_path / "a" / "checkpoints" / "latest",
                           tmp_path / "b" / "checkpoints" / "latest")


@pytest.mark.slow
@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_cli_resume_in_fresh_processes_is_exact(tmp_path, dropout):
    """Through the CLI in fresh processes, default mode and batch: 6 steps then --resume to
    12 gives bitwise the model, EMA, optimizer and RNG state of 12 straight steps."""
    common = ["tiny-base", "--no-progress", "model.frames=4", f"model.dropout={dropout}",
              "data.num_videos=64", "train.warmup_steps=8", "train.warmup_stages=2",
              "train.checkpoint_every=100",
              # 6 steps resumed to 12 is one run only if the lr schedule does not depend on
              # train.steps (the default cosine decays over them)
              "train.lr_schedule=constant"]

    def train(out, steps, *extra):
        proc = subprocess.run([sys.executable, "-m", "sned.cli", "train", *common, "--out",
                               str(out), "--steps", str(steps), *extra], capture_output=True,
                              text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]

    train(tmp_path / "straight", 12)
    train(tmp_path / "resumed", 6)
    train(tmp_path / "resumed", 12, "--resume")
    assert_same_checkpoint(tmp_path / "straight" / "checkpoints" / "latest",
                           tmp_path / "resumed" / "checkpoints" / "latest")


def test_nan_steps_are_skipped_then_abort(tmp_path, monkeypatch):
    trainer = Trainer(_run(["train.nan_patience=3"]), tmp_path / "r", progress=False)
    real = trainer.objective.loss
    calls = {"n": 0}

    def flaky(pred, target, t):
        calls["n"] += 1
        loss = real(pred, target, t)
        return loss * float("nan") if calls["n"] in (2, 4, 5, 6) else loss

    monkeypatch.setattr(trainer.objective, "loss", flaky)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(TrainingError, match="non-finite for 3 steps in a row"):
        trainer.fit(10)
    assert trainer.nan_skipped == 4 and trainer.step == 6
    rows = [json.loads(r) for r in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped"] for r in rows] == [False, True, False, True, True, True]
    assert (tmp_path / "r" / "checkpoints" / "latest").exists()
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())


def test_sigint_saves_and_stops_cleanly(tmp_path, monkeypatch):
    previous = signal.getsignal(signal.SIGINT)  # SIG_IGN when started in the background
    trainer = Trainer(_run(), tmp_path / "r", progress=False)
    step = trainer.train_step

    def step_then_signal(batch):
        out = step(batch)
        if trainer.step == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(trainer, "train_step", step_then_signal)
    trainer.fit(50)
    assert trainer.interrupted and trainer.step == 2
    assert (tmp_path / "r" / "checkpoints" / "latest").resolve().name == "step-0000002"
    assert signal.getsignal(signal.SIGINT) is previous  # the handler from before, restored


def test_sandwich_with_distillation_and_ssr_trains(tmp_path):
    trainer = Trainer(_run(["train.sampler=sandwich", "train.sandwich_k=1"], "tiny-ssr"),
                      tmp_path / "r", progress=False).fit(2)
    rows = [json.loads(r) for r in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(len(r["losses"]) == 3 for r in rows)
    assert trainer.history[-1][1] in (32, 64)


def test_bad_input_names_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="unknown key train.'lrate'"):
        load_run_config("tiny-base", ["train.lrate=1"])
    with pytest.raises(ConfigError, match="resolution 48"):
        load_run_config("tiny-base", ["train.batch_size_per_resolution={48: 2}"])
    with pytest.raises(ConfigError, match="data.root is required"):
        load_run_config("tiny-base", ["data.kind=folder"])
    with pytest.raises(ConfigError, match="unknown section 'optim'"):
        load_run_config({"model": "tiny-base", "optim": {}})
    missing = load_run_config("tiny-base", ["data.kind=folder", f"data.root={tmp_path}/none"])
    with pytest.raises(Exception, match="none"):
        Trainer(missing, tmp_path / "r", progress=False).fit(1)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(Exception, match="empty"):
        Trainer(load_run_config("tiny-base", ["data.kind=folder", f"data.root={empty}"]),
                tmp_path / "r2", progress=False).fit(1)
    assert main(["train", "tiny-base", "--out", str(tmp_path / "x"), "train.nope=1"]) == 2


def _ddp_worker(rank, world, out, port, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    trainer = Trainer(_run(["train.warmup_steps=0", "train.checkpoint_every=100"]), out,
                      progress=False).fit(3)
    state = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    torch.save({"state": state, "archs": [(s, r, [a.to_json() for a in archs])
                                          for s, r, archs in trainer.history]},
               os.path.join(out, f"rank{rank}.pt"))
    trainer.close()  # DDP before the group (see Trainer.close)
    torch.distributed.destroy_process_group()


def test_ddp_two_gloo_ranks_train_the_same_archs_and_weights(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, str(tmp_path), port, None), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["archs"] == r1["archs"] and len(r0["archs"]) == 3
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    init = load_run_config("tiny-base", FAST)  # weights moved from the same init
    assert init.model.name == "tiny-base"
    assert (tmp_path / "checkpoints" / "latest").exists()


def test_update_lists_cached_per_arch_signature_train_the_same_weights(tmp_path, monkeypatch):
    """The trainer builds the update's lists once per arch signature (largest and smallest
    repeat every cycle); with the cache off (no signature) the run is bitwise the same."""
    from sned.train.masked_adamw import ActivityTracker

    cached = Trainer(_run(["train.sampler=cycle"]), tmp_path / "a", progress=False)
    builds = []
    build = cached.optimizer._group_plan
    cached.optimizer._group_plan = lambda *a: builds.append(1) or build(*a)
    cached.fit(8)
    monkeypatch.setattr(ActivityTracker, "signature", lambda self: None)
    plain = Trainer(_run(["train.sampler=cycle"]), tmp_path / "b", progress=False).fit(8)
    assert len(builds) < 8  # repeated signatures reused their lists
    a, b = dict(cached.model.named_parameters()), dict(plain.model.named_parameters())
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert [h[2] for h in cached.history] == [h[2] for h in plain.history]
