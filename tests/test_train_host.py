"""The host side of a training step: buffered log, background checkpoint writes, worker
defaults, stop signals, and the FSDP box arithmetic (no model needed)."""

import json
import signal

import pytest
import torch

from sned.config import ConfigError
from sned.store.checkpoint import BackgroundWriter
from sned.train.config import DataConfig, load_run_config
from sned.train.data import num_workers
from sned.train.metrics_log import MetricsLog
from sned.train.parallel import _local_box
from sned.train.preempt import StopSignal


def test_log_rows_stay_on_device_until_every_nth_step(tmp_path, monkeypatch):
    reads = {"n": 0}
    real = torch.Tensor.tolist

    def counting(self):
        reads["n"] += 1
        return real(self)

    monkeypatch.setattr(torch.Tensor, "tolist", counting)
    log = MetricsLog(tmp_path, None, every=3, full_params=100)
    for step in range(1, 6):
        log.add({"step": step, "loss": torch.tensor(step / 10, dtype=torch.float64),
                 "losses": torch.tensor([1.0, 2.0]), "params": 50, "skipped": False})
        written = (tmp_path / "metrics.jsonl").read_text().splitlines() \
            if (tmp_path / "metrics.jsonl").exists() else []
        assert len(written) == (3 if step >= 3 else 0)
    assert reads["n"] == 1  # one read for three rows
    log.flush()
    rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[1]["loss"] == 0.2 and rows[4]["losses"] == [1.0, 2.0]
    assert log.last["step"] == 5 and reads["n"] == 2


def test_background_writer_runs_in_order_and_reraises():
    done = []
    w = BackgroundWriter(True)
    w.submit(done.append, 1)
    w.submit(done.append, 2)  # waits for the first
    w.wait()
    assert done == [1, 2]

    def fail():
        raise OSError("disk full")

    w.submit(fail)
    with pytest.raises(OSError, match="disk full"):
        w.wait()
    w.wait()  # reported once
    sync = BackgroundWriter(False)
    sync.submit(done.append, 3)
    assert done == [1, 2, 3]


def test_num_workers_auto_and_bad_values():
    assert DataConfig().num_workers == "auto"
    assert num_workers(DataConfig(), torch.device("cpu")) == 0
    assert num_workers(DataConfig(num_workers=3), torch.device("cpu")) == 3
    assert load_run_config("tiny-base", ["data.num_workers=2"]).data.num_workers == 2
    for bad in ("many", "-1"):
        with pytest.raises(ConfigError, match="data.num_workers"):
            load_run_config("tiny-base", [f"data.num_workers={bad}"])
    with pytest.raises(ConfigError, match="train.parallel"):
        load_run_config("tiny-base", ["train.parallel=zero3"])


def test_stop_signal_sets_a_flag_then_a_second_stops_now():
    previous = signal.getsignal(signal.SIGINT)  # SIG_IGN when started in the background
    stop = StopSignal(world=1)
    stop.install()
    try:
        signal.raise_signal(signal.SIGTERM)
        assert stop.caught and stop.signum == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    finally:
        stop.restore()
    assert signal.getsignal(signal.SIGINT) is previous  # the handler from before, restored
    relayed = StopSignal(world=2)  # torchrun relays the terminal's Ctrl-C as SIGTERM
    relayed.install()
    try:
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGTERM)  # within relay_s: the same request
        assert relayed.signum == signal.SIGINT
    finally:
        relayed.restore()


def test_fsdp_local_boxes_cover_exactly_the_rows_a_rank_holds():
    """A global box over a (7, 3) parameter sharded 4 + 3 rows (torch.chunk): each rank's
    local box selects exactly its rows of the box, and together they are the box."""
    full = torch.arange(7 * 3).reshape(7, 3)
    box = (slice(0, 5), slice(0, 2))
    parts = [full[a:b][_local_box(box, 7, (a, b))] for a, b in ((0, 4), (4, 7))]
    assert torch.equal(parts[0], full[0:4, 0:2]) and torch.equal(parts[1], full[4:5, 0:2])
    assert torch.equal(torch.cat(parts), full[box])
    assert _local_box((slice(None), slice(1, 3)), 7, (4, 7)) == (slice(0, 3), slice(1, 3))
    assert _local_box((slice(0, 2),), 7, (4, 7)) == (slice(0, 0),)  # outside: empty


# --------------------------------------------------------------- device RNG, old-format resume
_FAST = ["model.frames=2", "data.num_videos=8", "train.batch_size=2", "train.warmup_steps=2",
         "train.warmup_stages=1", "train.log_every=1", "train.ema_decay=0.99",
         "train.checkpoint_every=100"]


def test_noise_is_drawn_on_the_device_and_a_resumed_run_draws_it_bitwise(tmp_path, monkeypatch):
    from sned.train.trainer import Trainer

    run = load_run_config("tiny-base", _FAST)
    first = Trainer(run, tmp_path / "a", progress=False).fit(2)
    video = torch.randn(2, 3, 2, 16, 16)
    emb, mask = torch.randn(2, 8, run.model.text_dim), torch.ones(2, 8, dtype=torch.bool)
    moves = {"n": 0}
    real_to = torch.Tensor.to

    def counting_to(self, *a, **k):  # copies made by the trainer itself (before: 4 per call)
        import sys

        moves["n"] += sys._getframe(1).f_code.co_filename.endswith("trainer.py")
        return real_to(self, *a, **k)

    monkeypatch.setattr(torch.Tensor, "to", counting_to)
    inputs, target, t = first.noised_inputs(video, emb, mask, 1)
    monkeypatch.undo()
    assert moves["n"] == 0  # drawn where they are used: no host→device copy
    assert first.generator(0).device == first.device
    resumed = Trainer(run, tmp_path / "a", resume=True, progress=False)
    assert resumed.step == first.step == 2
    again, target2, t2 = resumed.noised_inputs(video, emb, mask, 1)
    assert torch.equal(t, t2) and torch.equal(target, target2)
    assert torch.equal(inputs["sample"], again["sample"])
    assert torch.equal(inputs["encoder_attention_mask"], again["encoder_attention_mask"])
    other, _, _ = resumed.noised_inputs(video, emb, mask, 0)  # another micro-batch differs
    assert not torch.equal(other["sample"], inputs["sample"])


def test_a_run_of_the_previous_optimizer_resumes_under_the_fused_update(tmp_path):
    """An old-format checkpoint (``step`` per tensor, full-size counts: written by
    ``train.update_impl=legacy``, the previous code) resumes with compact counts and goes on
    as the previous code would have (to float rounding)."""
    from safetensors.torch import load_file

    from sned.train.trainer import Trainer

    legacy = load_run_config("tiny-base", _FAST + ["train.update_impl=legacy"])
    fused = load_run_config("tiny-base", _FAST)
    straight = Trainer(legacy, tmp_path / "a", progress=False).fit(4)
    Trainer(legacy, tmp_path / "b", progress=False).fit(2)
    old = load_file(tmp_path / "b" / "checkpoints" / "latest" / "optimizer.safetensors")
    assert any(k.startswith("step/") for k in old)
    resumed = Trainer(fused, tmp_path / "b", resume=True, progress=False).fit(4)
    new = load_file(tmp_path / "b" / "checkpoints" / "latest" / "optimizer.safetensors")
    assert not any(k.startswith("step/") for k in new)
    params = dict(straight.model.named_parameters())
    full = compact_total = 0
    for name, p in resumed.model.named_parameters():
        torch.testing.assert_close(p, params[name], rtol=1e-5, atol=1e-6)
        counts = new[f"active_steps/{name}"]
        ref = straight.optimizer.state[params[name]]["active_steps"]
        assert torch.equal(counts.expand(ref.shape), ref), name
        full, compact_total = full + p.numel(), compact_total + counts.numel()
    assert compact_total < 0.05 * full
