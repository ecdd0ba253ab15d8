"""Planned training memory (sned.train.memory): the estimate against measured CPU peaks of
real training steps, `sned memory`, and the auto-checkpointing decision."""

import json

import pytest
import torch

from sned.cli import main
from sned.config import ConfigError
from sned.data.transforms import collate
from sned.train.config import load_run_config
from sned.train.memory import (GIB, MemoryEstimate, choose_checkpointing, estimate, fits,
                               level_blocks, measure_step_peak, plan_checkpointing)
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
    # the fused update: two moments (compact counts), one temporary; the legacy one kept
    # full-size counts and a second temporary
    assert off2.optimizer == 2 * off2.params and off2.update_temp == off2.params
    assert off2.ddp_buckets == 0
    legacy = estimate(load_run_config("tiny-base", ["model.frames=4", "train.update_impl=legacy"]),
                      batch=2, resolution=32, device="cpu")
    assert legacy.optimizer == 3 * legacy.params and legacy.update_temp == 2 * legacy.params
    ddp = estimate(run, batch=2, resolution=32, device="cpu", gpus=2)
    fsdp = estimate(run, batch=2, resolution=32, device="cpu", gpus=2, parallel="fsdp")
    assert ddp.ddp_buckets == 0  # gradient_as_bucket_view: the buckets are the gradients
    assert fsdp.params == off2.params // 2
    assert fsdp.fsdp_unsharded > 0 and fsdp.total < ddp.total


def test_checkpointing_levels_trade_recompute_for_memory():
    from sned.arch import unet_blocks

    run = load_run_config("tiny-base", ["model.frames=4"])
    off, one, full = (estimate(run, batch=2, resolution=32, checkpointing=c, device="cpu")
                      for c in (False, [0], True))
    assert off.recompute_macs == 0
    assert 0 < one.recompute_macs < full.recompute_macs < full.forward_macs  # stem: never
    assert full.activations <= one.activations < off.activations
    assert one.checkpointing == [0] and full.checkpointing is True
    assert level_blocks(run.model, True) is True and level_blocks(run.model, []) is False
    specs = unet_blocks(run.model)
    assert level_blocks(run.model, [0]) == {i for i, s in enumerate(specs) if s.level == 0}
    assert level_blocks(run.model, sorted({s.level for s in specs})) is True
    with pytest.raises(ConfigError, match="levels"):
        level_blocks(run.model, [7])


def test_auto_plan_picks_the_least_recompute_that_fits():
    # levels 0..2: level 0 holds most memory, level 2 most MACs (as in pixel-base)
    mem = {0: 30, 1: 15, 2: 5}
    macs = {0: 10, 1: 20, 2: 40}

    def est(c):
        chosen = {0, 1, 2} if c is True else set(c or ())
        e = _fake(60 - sum(mem[x] for x in chosen))
        e.recompute_macs = sum(macs[x] for x in chosen)
        e.checkpointing = c if isinstance(c, bool) else sorted(c)
        return e

    assert plan_checkpointing("auto", est, [0, 1, 2], 100 * GIB)[0] is False
    assert plan_checkpointing("auto", est, [0, 1, 2], 40 * GIB)[0] == [0]  # 30 GiB, 10 MACs
    assert plan_checkpointing("auto", est, [0, 1, 2], 25 * GIB)[0] == [0, 1]  # 15 GiB
    assert plan_checkpointing("auto", est, [0, 1, 2], 12 * GIB)[0] is True  # 10: all
    assert plan_checkpointing("auto", est, [0, 1, 2], 1 * GIB)[0] is True  # none fits
    assert plan_checkpointing(True, est, [0, 1, 2], 1000 * GIB)[0] is True


def test_checkpointing_some_blocks_gives_the_same_gradients():
    import sned

    torch.manual_seed(0)
    model = sned.build_supernet("tiny-base").train()
    kw = sned.example_inputs(model, batch=1, frames=2)
    grads = []
    for ckpt in (False, frozenset({0, len(model.blocks) - 1})):
        model.gradient_checkpointing = ckpt
        model.zero_grad()
        model(**kw).square().mean().backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_cli_memory_pixel_base_batch_4_fits_an_80_gb_gpu_by_default(capsys):
    assert main(["memory", "pixel-base", "--preset", "B", "--batch", "4"]) == 0
    row = json.loads(capsys.readouterr().out)
    # auto: the levels with the least recompute that fit the GPU (an 80 GB card here)
    assert row["checkpointing_setting"] == "auto" and isinstance(row["checkpointing"], list)
    assert row["total_gib"] <= 0.9 * 80e9 / GIB and row["fits"]
    assert main(["memory", "pixel-base", "--preset", "B", "--batch", "4",
                 "--checkpointing", "on"]) == 0
    on = json.loads(capsys.readouterr().out)
    assert on["checkpointing"] is True and on["total_gib"] < row["total_gib"]
    assert row["recompute_fraction"] < on["recompute_fraction"] < 1
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
