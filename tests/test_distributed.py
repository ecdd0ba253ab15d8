"""Two gloo ranks on the CPU, through ``sned train`` as torchrun runs it: a stop signal on ONE
rank stops both at the same step with one checkpoint and exit 130, and ``--resume`` continues
bitwise; FSDP2 (``train.parallel=fsdp``) trains the same weights as DDP and resumes bitwise,
and its checkpoints resume under DDP."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp
from test_trainer import assert_same_checkpoint

ARGS = ["tiny-base", "--no-progress", "model.frames=2", "model.resolutions=[16]",
        "data.num_videos=16", "train.batch_size=1", "train.warmup_steps=4",
        "train.warmup_stages=2", "train.log_every=2", "train.ema_decay=0.99",
        "train.checkpoint_every=100", "model.dropout=0.1"]
STEPS = 6


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(rank: int, port: int) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)


def _train(out, steps, *extra) -> int:
    from sned.cli import main

    return main(["train", *ARGS, "--out", str(out), "--steps", str(steps), *extra])


def _preempt_worker(rank: int, port: int, root: str) -> None:
    """Straight run; a run whose rank 1 gets SIGTERM during step 3; the resumed run."""
    _env(rank, port)
    from sned.train import trainer as trainer_mod

    codes = {"straight": _train(f"{root}/straight", STEPS)}
    real = trainer_mod.Trainer.train_step

    def step(self, batch):
        if rank == 1 and self.step == 2:  # the signal lands on one rank, mid-step
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, batch)

    trainer_mod.Trainer.train_step = step
    try:
        codes["stopped"] = _train(f"{root}/resumed", STEPS)
    finally:
        trainer_mod.Trainer.train_step = real
    stopped = json.loads(open(f"{root}/resumed/metrics.jsonl").readlines()[-1])["step"] \
        if rank == 0 else None
    codes["resumed"] = _train(f"{root}/resumed", STEPS, "--resume")
    with open(f"{root}/rank{rank}.json", "w") as f:
        json.dump({"codes": codes, "last_logged": stopped,
                   "signal": signal.getsignal(signal.SIGTERM) == signal.SIG_DFL}, f)
    torch.distributed.destroy_process_group()


def test_sigterm_on_one_rank_stops_both_at_one_step_and_resumes_bitwise(tmp_path, capfd):
    mp.spawn(_preempt_worker, args=(_port(), str(tmp_path)), nprocs=2, join=True)
    r = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in (0, 1)]
    for res in r:
        assert res["codes"] == {"straight": 0, "stopped": 130, "resumed": 0}
        assert res["signal"]  # handlers restored
    err = capfd.readouterr().err
    # both ranks exit 130 (above); the lines they print share one pipe and may interleave,
    # so every "interrupted at step N" found must say 3 (the step is also pinned below)
    stops = re.findall(r"interrupted at step (\d+)", err)
    assert stops and set(stops) == {"3"}, err[-3000:]
    assert r[0]["last_logged"] == 3
    # one checkpoint written at the stop, then the resumed run's final one
    ckpts = sorted(p.name for p in (tmp_path / "resumed" / "checkpoints").glob("step-*"))
    assert ckpts == ["step-0000003", f"step-{STEPS:07d}"]
    rows = [json.loads(x) for x in (tmp_path / "resumed" / "metrics.jsonl").read_text()
            .splitlines()]
    assert [x["step"] for x in rows] == list(range(1, STEPS + 1))
    assert_same_checkpoint(tmp_path / "straight" / "checkpoints" / "latest",
                           tmp_path / "resumed" / "checkpoints" / "latest")


def _fsdp_worker(rank: int, port: int, root: str) -> None:
    """DDP and FSDP runs of STEPS; FSDP stopped at 3 and resumed under FSDP, and (with
    gradient checkpointing) under DDP.

    The stop is a run of 3 steps resumed to STEPS, so the lr schedule must not depend on
    ``train.steps``: the default cosine decays over them (a 3-step run has other lrs in its
    first 3 steps than a 6-step one); constant lr keeps the legs the same run."""
    _env(rank, port)
    lr = "train.lr_schedule=constant"
    codes = [_train(f"{root}/ddp", STEPS, lr),
             _train(f"{root}/fsdp", STEPS, lr, "train.parallel=fsdp"),
             _train(f"{root}/fsdp_resumed", 3, lr, "train.parallel=fsdp"),
             _train(f"{root}/fsdp_resumed", STEPS, lr, "--resume", "train.parallel=fsdp"),
             _train(f"{root}/cross", 3, lr, "train.parallel=fsdp",
                    "train.gradient_checkpointing=true"),
             _train(f"{root}/cross", STEPS, lr, "--resume", "train.parallel=ddp")]
    with open(f"{root}/rank{rank}.json", "w") as f:
        json.dump(codes, f)
    torch.distributed.destroy_process_group()


def test_fsdp_trains_like_ddp_and_checkpoints_cross_modes(tmp_path):
    from safetensors.torch import load_file

    mp.spawn(_fsdp_worker, args=(_port(), str(tmp_path)), nprocs=2, join=True)
    for i in (0, 1):
        assert json.loads((tmp_path / f"rank{i}.json").read_text()) == [0] * 6
    ck = {k: tmp_path / k / "checkpoints" / "latest"
          for k in ("ddp", "fsdp", "fsdp_resumed", "cross")}
    assert_same_checkpoint(ck["fsdp"], ck["fsdp_resumed"])  # FSDP resume is bitwise
    # FSDP vs DDP: same files and names; equal up to the order of the gradient reduction
    for name in ("model", "ema", "optimizer"):
        for other in ("fsdp", "cross"):
            a, b = load_file(ck["ddp"] / f"{name}.safetensors"), \
                load_file(ck[other] / f"{name}.safetensors")
            assert a.keys() == b.keys()
            for k in a:
                assert torch.allclose(a[k].double(), b[k].double(), rtol=1e-4, atol=1e-6), \
                    (name, other, k, (a[k].double() - b[k].double()).abs().max())
    # exact freezing holds on shards: what DDP left bitwise untouched, FSDP did too
    a, b = load_file(ck["ddp"] / "optimizer.safetensors"), \
        load_file(ck["fsdp"] / "optimizer.safetensors")
    for k in a:
        if k.startswith("exp_avg/"):
            assert torch.equal(a[k] == 0, b[k] == 0), k


@pytest.mark.slow
def test_cli_sigterm_to_one_of_two_processes_never_hangs(tmp_path):
    """As torchrun runs it: two `sned train` processes, SIGTERM to rank 1 only, from outside,
    at whatever step it lands: both exit 130 at the same step within a minute."""
    port, out = _port(), tmp_path / "run"
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, "-m", "sned.cli", "train", *ARGS,
                                       "--out", str(out), "--steps", "400"], env=env,
                                      stderr=subprocess.PIPE, text=True))
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
        assert time.monotonic() < deadline and procs[0].poll() is None
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGTERM)
    errs = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [130, 130], errs
    steps = {e.split("interrupted at step ")[1].split(";")[0].split()[0] for e in errs}
    assert len(steps) == 1, errs
    assert [p.name for p in (out / "checkpoints").glob("step-*")] == \
        [f"step-{int(steps.pop()):07d}"]
