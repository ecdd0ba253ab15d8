"""The supernet recipe (issue 18): zero-init residual outputs, the size-aware sampler, the
repaired sandwich and the learning-rate schedule."""

import dataclasses
import json

import numpy as np
import pytest
import torch

import sned
from sned.config import ConfigError, load_config
from sned.models.unet import VideoUNet
from sned.space import SearchSpace


def _outputs(model, space, archs):
    kw = sned.example_inputs(model, batch=2, resolution=16, frames=2, seed=0)
    with torch.no_grad():
        return [model(**kw, arch=a) for a in archs]


def test_zero_init_makes_every_subnet_the_same_function_at_init():
    torch.manual_seed(0)
    model = sned.build_supernet("tiny-base").eval()
    space = sned.search_space("tiny-base")
    rng = np.random.default_rng(0)
    archs = [space.largest(16), space.smallest(16, 0.4, 0.0), space.preset("S", 16),
             space.sample(rng, resolution=16), space.sample(rng, resolution=16)]
    outs = _outputs(model, space, archs)
    assert outs[0].abs().max() > 0  # not a trivially zero output
    for o in outs[1:]:  # equal up to float summation order (a dropped block skips a copy)
        torch.testing.assert_close(o, outs[0], rtol=0, atol=1e-5)


def test_zero_init_off_gives_archs_different_functions_and_same_params():
    cfg = load_config("tiny-base")
    off = dataclasses.replace(cfg, zero_init_residual=False)
    torch.manual_seed(0)
    model = VideoUNet(off).eval()
    space = SearchSpace(off)
    a, b = _outputs(model, space, [space.largest(16), space.preset("S", 16)])
    assert (a - b).abs().max() > 1e-2
    on = VideoUNet(cfg)
    assert sum(p.numel() for p in on.parameters()) == sum(p.numel() for p in model.parameters())
    assert cfg.zero_init_residual and "zero_init_residual" not in cfg.to_dict()
    assert off.to_dict()["zero_init_residual"] is False


@pytest.mark.parametrize("name", ["tiny-base", "tiny-ssr", "tiny-latent", "tiny-image",
                                  "pixel-base", "pixel-ssr", "latent-base"])
def test_zero_init_is_on_in_every_builtin_unet_config(name):
    assert load_config(name).zero_init_residual is True


def test_zero_init_must_be_a_bool():
    with pytest.raises(ConfigError, match="zero_init_residual"):
        load_config("tiny-base", ["zero_init_residual=3"])


# ------------------------------------------------------------------ the size-aware sampler
def test_smallest_is_at_the_floors_with_presets_s_components_and_bounds_s():
    from sned.train.arch_sampler import ArchSampler, Floors
    from sned.train.config import TrainConfig

    space = SearchSpace.for_run("tiny-base", TrainConfig())
    sampler = ArchSampler(space, TrainConfig(warmup_steps=0))
    s = space.preset("S", 16)
    small = sampler.smallest(16, Floors(0.4, 0.4))
    assert [b.keep for b in small.blocks] == [b.keep for b in s.blocks]
    assert all(r == 0.4 for b in small.blocks for _, r in b.ratios)
    assert space.cost(small).params <= space.cost(s).params
    space.check_floors(small)  # training may sample it
    # during warm-up a higher kept-fraction floor adds components in forward order
    warm = sampler.smallest(16, Floors(0.8, 1.0))
    assert all(b.keep == spec.components for b, spec in zip(warm.blocks, space.specs))


def _train(tmp_path, overrides):
    from sned.train.config import load_run_config
    from sned.train.trainer import Trainer

    run = load_run_config("tiny-base", [
        "model.frames=2", "data.num_videos=8", "train.batch_size=1", "train.warmup_steps=8",
        "train.warmup_stages=2", "train.ema_decay=0.9", "model.resolutions=[16]",
        "train.checkpoint_every=1000"] + overrides)
    Trainer(run, tmp_path / "run", progress=False).fit()
    return [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]


def test_default_sampler_trains_both_ends_of_the_size_range(tmp_path):
    """After warm-up, >= 15 % of steps train >= 90 % of the supernet's params and >= 15 %
    train <= 45 % (``params`` in metrics.jsonl) — the uniform sampler reaches neither."""
    rows = _train(tmp_path, ["train.steps=24"])
    full = SearchSpace("tiny-base").full_params
    after = [r["params"] / full for r in rows if r["step"] > 8]
    assert np.mean([f >= 0.9 for f in after]) >= 0.15
    assert np.mean([f <= 0.45 for f in after]) >= 0.15
    from sned.train.arch_sampler import ArchSampler
    from sned.train.config import TrainConfig

    space = SearchSpace.for_run("tiny-base", TrainConfig())
    uni = ArchSampler(space, TrainConfig(sampler="uniform", warmup_steps=0))
    fracs = [space.cost(uni(s)[0][0]).params / full for s in range(400)]
    assert np.mean([f >= 0.9 for f in fracs]) < 0.05 and np.mean([f <= 0.45 for f in fracs]) < 0.05


# ------------------------------------------------------------------ the repaired sandwich
def test_sandwich_distills_only_after_warmup_and_keeps_ground_truth(tmp_path):
    rows = _train(tmp_path, ["train.steps=12", "train.sampler=sandwich", "train.sandwich_k=1",
                             "train.distill_weight=0.5"])
    assert all("distill_loss" not in r for r in rows if r["step"] <= 8)
    assert all(r["distill_loss"] >= 0 for r in rows if r["step"] > 8)
    for r in rows:  # logged losses are every arch's ground-truth loss
        assert len(r["losses"]) == 3


def test_sandwich_with_an_ema_teacher_trains(tmp_path):
    rows = _train(tmp_path, ["train.steps=11", "train.sampler=sandwich", "train.sandwich_k=1",
                             "train.distill_teacher=ema"])
    assert all(np.isfinite(r["distill_loss"]) for r in rows if r["step"] > 8)


def test_ema_teacher_needs_ema():
    from sned.train.config import load_run_config

    with pytest.raises(ConfigError, match="distill_teacher"):
        load_run_config("tiny-base", ["train.distill_teacher=ema", "train.ema_decay=0"])


# ------------------------------------------------------------------ learning-rate schedule
def test_cosine_schedule_decays_to_the_floor_and_constant_stays():
    from sned.train.lr_schedule import lr_factor

    cos = lr_factor("cosine", steps=100, warmup=10, floor=0.05)
    assert cos(0) == pytest.approx(0.1) and cos(9) == pytest.approx(1.0)
    values = [cos(s) for s in range(9, 100)]
    assert values == sorted(values, reverse=True)
    assert cos(99) == pytest.approx(0.05) and cos(500) == pytest.approx(0.05)
    assert cos(54) == pytest.approx(0.05 + 0.95 * 0.5, abs=0.02)
    const = lr_factor("constant", steps=100, warmup=10)
    assert [const(s) for s in (9, 50, 99)] == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("fixed", [[], ["train.fixed_arch=M"]])
def test_trainer_logs_the_cosine_lr_for_supernet_and_standalone(tmp_path, fixed):
    rows = _train(tmp_path, ["train.steps=10", "train.lr=1e-3", "train.lr_warmup_steps=2",
                             "train.lr_floor=0.1"] + fixed)
    lrs = [r["lr"] for r in rows]  # the lr after each step: the next step's
    assert lrs[0] == pytest.approx(1e-3) and lrs[-2] == pytest.approx(1e-4)
    assert lrs[1:-1] == sorted(lrs[1:-1], reverse=True)
