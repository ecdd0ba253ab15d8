"""Planned training memory (sned.train.memory): the estimate against measured CPU peaks of
real training steps, `sned memory`, and the auto-checkpointing decision."""

import json

import pytest

from sned.cli import main
from sned.config import ConfigError
from sned.data.transforms import collate
from sned.train.config import load_run_config
from sned.train.memory import (GIB, MemoryEstimate, choose_checkpointing, estimate, fits,
                               measure_step_peak)
from sned.train.trainer import Trainer


def _steps_at(trainer, resolution, start):
    """Steps from ``start`` whose sampled resolution is ``resolution``."""
    return (s for s in range(start, start + 100) if trainer.sampler(s)[0][0].resolution ==
            resolution)


@pytest.mark.parametrize("config,batch,ckpt", [("tiny-base", 2, False), ("tiny-base", 2, True),
                                               ("tiny-ssr", 1, False), ("tiny-ssr", 1, True)])
def test_estimate_is_within_15_percent_of_the_measured_cpu_peak(tmp_path, config, batch, ckpt):
    over = [f"train.batch_size={batch}", "model.frames=4", "train.fixed_arch=B",
            f"train.gradient_checkpointing={str(ckpt).lower()}", "train.ema_decay=0.99",
            "data.num_videos=8"]
    run = load_run_config(config, over)
    trainer = Trainer(run, tmp_path / "run", progress=False)
    assert trainer.model.gradient_checkpointing is ckpt
    ds = trainer.task.dataset()
    b1, b2 = collate([ds[i] for i in range(batch)]), collate([ds[i] for i in range(batch, 2 * batch)])
    top = max(run.model.resolutions)
    steps = _steps_at(trainer, top, 0)
    trainer.step = next(steps)
    trainer.train_step(b1)  # allocates the optimizer state
    trainer.step = next(steps)
    trainer.encode(b2["caption"])  # text encoding is host-side work: not in the peak
    measured = measure_step_peak(trainer, b2)
    est = estimate(run, resolution=top, checkpointing=ckpt, device="cpu")
    assert est.batch == batch and est.resolution == top
    assert abs(est.total / measured - 1) <= 0.15, (est.to_dict(), measured / GIB)


def _fake(total_gib):
    b = int(total_gib * GIB)
    return MemoryEstimate(params=0, grads=0, optimizer=0, ema=0, ddp_buckets=0, fsdp_unsharded=0,
                          activations=b, workspace=0, update_temp=0, backward=b,
                          checkpointing=False, batch=1, resolution=16, frames=4)


def test_auto_checkpointing_turns_on_exactly_when_the_estimate_does_not_fit():
    calls = []

    def off():
        calls.append(1)
        return _fake(50)

    assert choose_checkpointing("auto", off, 80 * GIB) is False
    assert choose_checkpointing("auto", off, 40 * GIB) is True
    assert choose_checkpointing("auto", lambda: _fake(75), 80 * GIB) is True  # 10 % headroom
    assert choose_checkpointing(True, off, 1000 * GIB) is True
    assert choose_checkpointing(False, off, 1) is False
    assert len(calls) == 2  # explicit settings never estimate
    with pytest.raises(ConfigError, match="gradient_checkpointing"):
        choose_checkpointing("sometimes", off, 1)
    assert fits(90, 100) and not fits(91, 100)


def test_gradient_checkpointing_config_values():
    assert load_run_config("tiny-base").train.gradient_checkpointing == "auto"
    assert load_run_config("tiny-base", ["gradient_checkpointing=true"]).train \
        .gradient_checkpointing is True
    with pytest.raises(ConfigError, match="train.gradient_checkpointing"):
        load_run_config("tiny-base", ["gradient_checkpointing=maybe"])


def test_checkpointing_shrinks_activations_and_parts_scale_with_batch():
    run = load_run_config("tiny-base", ["model.frames=4"])
    off1, off2 = (estimate(run, batch=b, resolution=32, device="cpu") for b in (1, 2))
    on2 = estimate(run, batch=2, resolution=32, checkpointing=True, device="cpu")
    assert on2.activations < off2.activations / 2
    assert 1.8 < off2.activations / off1.activations < 2.2
    assert off2.params == off1.params == on2.params  # weights do not depend on the batch
    # per-element Adam counts (the default): moments + counts, two update temporaries
    assert off2.optimizer == 3 * off2.params and off2.update_temp == 2 * off2.params
    assert off2.ddp_buckets == 0
    tensor = estimate(load_run_config("tiny-base", ["model.frames=4", "train.adam_counts=tensor"]),
                      batch=2, resolution=32, device="cpu")
    assert tensor.optimizer == 2 * tensor.params and tensor.update_temp == tensor.params
    ddp = estimate(run, batch=2, resolution=32, device="cpu", gpus=2)
    fsdp = estimate(run, batch=2, resolution=32, device="cpu", gpus=2, parallel="fsdp")
    assert ddp.ddp_buckets == ddp.params and fsdp.params == off2.params // 2
    assert fsdp.fsdp_unsharded > 0 and fsdp.total < ddp.total


def test_cli_memory_pixel_base_batch_4_fits_an_80_gb_gpu_by_default(capsys):
    assert main(["memory", "pixel-base", "--preset", "B", "--batch", "4"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["checkpointing_setting"] == "auto" and row["checkpointing"] is True
    assert row["total_gib"] <= 80 and row["fits"]
    parts = ("params", "grads", "optimizer", "ema", "ddp_buckets", "fsdp_unsharded")
    assert row["total_gib"] == pytest.approx(
        sum(row[f"{k}_gib"] for k in parts if k != "grads")
        + max(row["backward_gib"], row["grads_gib"] + row["update_temp_gib"]), abs=0.01)
    assert main(["memory", "pixel-base", "--preset", "B", "--batch", "4",
                 "--checkpointing", "off"]) == 0
    off = json.loads(capsys.readouterr().out)
    assert off["checkpointing"] is False and off["total_gib"] > 80 and not off["fits"]


@pytest.mark.parametrize("argv,msg", [
    (["memory", "tiny-base", "--batch", "0"], "--batch 0"),
    (["memory", "tiny-base", "--resolution", "24"], "24"),
    (["memory", "tiny-ae"], "autoencoder"),
    (["memory", "tiny-base", "--device-memory", "-1"], "--device-memory"),
])
def test_cli_memory_bad_input_exits_2(capsys, argv, msg):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1
