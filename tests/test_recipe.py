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


# ------------------------------------------------------------------ sample what you ship
def test_default_sampler_draws_the_served_family_at_m_and_l_sizes():
    """After warm-up the default sampler's draws other than the largest and the smallest are
    archs of the served family (the descent path), each the family's arch at its own param
    fraction, and >= 10 % of 400 of them lie within ±5 points of M's and of L's fraction."""
    from sned.train.arch_sampler import ArchSampler
    from sned.train.config import TrainConfig

    cfg = TrainConfig(warmup_steps=40, warmup_stages=2)
    space = SearchSpace.for_run("tiny-base", cfg)
    sampler = ArchSampler(space, cfg)
    assert cfg.sampler == "cycle" and cfg.draw == "descent"
    family = {a.blocks for a in space.descent()}
    full = space.full_params
    steps = [s for s in range(40, 840) if s % 4 in (1, 3)]  # the cycle's random positions
    draws = [sampler(s)[0][0] for s in steps]
    assert len(draws) == 400
    fracs = np.array([space.cost(a).params / full for a in draws])
    for a, f in zip(draws, fracs):
        assert a.blocks in family
        assert a == space.family_arch(f, a.resolution)
    for p in "ML":
        target = space.cost(space.preset(p)).params / full
        assert np.mean(np.abs(fracs - target) <= 0.05) >= 0.10, p
    assert fracs.min() < 0.45 and fracs.max() > 0.95  # the whole range [smallest, 1]
    # the extremes stay in the cycle; per-layer uniform draws stay an option (never on it)
    assert sampler(40)[0][0] == space.largest_under_cap(sampler(40)[0][0].resolution)
    uni = ArchSampler(space, TrainConfig(warmup_steps=0, draw="uniform"))
    assert sum(uni(s)[0][0].blocks in family for s in range(1, 81, 2)) <= 2


def test_presets_are_the_served_family_at_their_fractions():
    space = SearchSpace("tiny-base")
    for name, frac in (("S", 0.4), ("M", 0.6), ("L", 0.8), ("B", 1.0)):
        assert space.preset(name, 16) == space.family_arch(frac, 16)
    params, archs = space.family()
    assert list(params) == sorted(params, reverse=True) and archs[0] == space.largest()


def test_parent_phase_trains_the_largest_then_warms_up():
    from sned.train.arch_sampler import ArchSampler
    from sned.train.config import TrainConfig

    cfg = TrainConfig(steps=90, parent_fraction=1 / 3, warmup_steps=30, warmup_stages=2)
    space = SearchSpace.for_run("tiny-base", cfg)
    sampler = ArchSampler(space, cfg)
    assert sampler.parent_steps == 30
    for s in range(30):
        (a,), floors = sampler(s)
        assert a == space.largest_under_cap(a.resolution) and floors.min_ratio == 1.0
        assert not sampler.distilling(s)
    assert sampler(45)[1].min_ratio < 1.0 and not sampler.distilling(59)
    assert sampler.distilling(60)
    with pytest.raises(ConfigError, match="parent_fraction"):
        TrainConfig(parent_fraction=0.5, fixed_arch="B")


# ------------------------------------------------------------------ distillation, every sampler
def _one_step_setup(tmp_path, overrides):
    from sned.data.transforms import collate
    from sned.train.config import load_run_config
    from sned.train.trainer import Trainer

    run = load_run_config("tiny-base", [
        "model.frames=2", "data.num_videos=4", "train.batch_size=2", "train.warmup_steps=4",
        "train.warmup_stages=2", "model.resolutions=[16]", "train.mixed_precision='no'",
        "train.device=cpu"] + overrides)
    trainer = Trainer(run, tmp_path / "run", progress=False)
    batch = collate([trainer.task.dataset()[i] for i in range(2)])
    return trainer, batch


def _grads(model):
    return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
            for p in model.parameters()]


@pytest.mark.parametrize("teacher", ["largest", "ema"])
def test_cycle_child_learns_ground_truth_plus_weighted_teacher_term(tmp_path, teacher):
    """A cycle step past the warm-up that draws a child: its gradient is that of
    mse(child, target) + w × mse(child, teacher) with the teacher's prediction computed by
    hand on the same batch, noise and timesteps; train_macs adds the teacher's forward."""
    trainer, batch = _one_step_setup(tmp_path, ["train.distill_weight=0.3",
                                                f"train.distill_teacher={teacher}"])
    model, task = trainer.model, trainer.task
    with torch.no_grad():  # weights away from zero-init, and an EMA unlike them
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    trainer.step = 5  # past the warm-up, position 1 of the cycle: a random draw
    (child,), _ = task.sampler(5)
    top = task.sampler.teacher(16)
    assert child != top and task.sampler.distilling(5)
    model.zero_grad(set_to_none=True)
    out = task.backward(trainer, batch)
    got = _grads(model)

    model.zero_grad(set_to_none=True)
    video = task.to_model_space(batch["video"][:2], 16)
    emb, mask = trainer.encode(batch["caption"][:2])
    inputs, target, t = trainer.noised_inputs(video, emb, mask, 0)
    with torch.no_grad():
        if teacher == "ema":
            ema = VideoUNet(trainer.run.model)
            ema.load_state_dict(model.state_dict())
            trainer.ema.copy_to(ema.parameters())
            want_teacher = ema.eval()(**inputs, arch=top)
        else:
            want_teacher = model(**inputs, arch=top)
    pred = model(**inputs, arch=child)
    w_t = trainer.objective.weights(t)
    gt = ((pred - target) ** 2).flatten(1).mean(1) * w_t
    kd = ((pred - want_teacher) ** 2).flatten(1).mean(1) * w_t
    (gt.mean() + 0.3 * kd.mean()).backward()
    want = _grads(model)
    assert float(out.losses[0]) == pytest.approx(float(gt.detach().mean()), rel=1e-5)
    assert float(out.extras["distill_loss"]) == pytest.approx(float(kd.detach().mean()), rel=1e-5)
    assert float(kd.detach().mean()) > 1e-4  # the teacher term is not trivially zero
    for g, h in zip(got, want):
        torch.testing.assert_close(g, h, rtol=1e-4, atol=1e-7)
    space = task.space
    assert out.train_macs == 3 * 2 * space.cost(child).macs + 2 * space.cost(top).macs


def test_no_distillation_before_warmup_or_when_off_or_for_the_teacher(tmp_path):
    trainer, batch = _one_step_setup(tmp_path, ["train.inplace_distill=false"])
    trainer.step = 5
    out = trainer.task.backward(trainer, batch)
    (child,), _ = trainer.task.sampler(5)
    assert "distill_loss" not in out.extras
    assert out.train_macs == 3 * 2 * trainer.task.space.cost(child).macs
    trainer, batch = _one_step_setup(tmp_path / "b", [])
    trainer.step = 4  # position 0 of the cycle: the largest (the teacher) itself
    out = trainer.task.backward(trainer, batch)
    assert "distill_loss" not in out.extras
    trainer.step = 1  # inside the warm-up
    assert "distill_loss" not in trainer.task.backward(trainer, batch).extras


def test_the_teacher_forward_leaves_exact_freezing_intact(tmp_path):
    """A distilling child step updates exactly the elements the same step without
    distillation updates: the teacher's forward (no gradient) activates no weight."""
    changed = []
    for i, distill in enumerate(("true", "false")):
        trainer, batch = _one_step_setup(tmp_path / str(i),
                                         [f"train.inplace_distill={distill}"])
        trainer.step = 5  # a child, past the warm-up
        before = [p.detach().clone() for p in trainer.model.parameters()]
        out = trainer.train_step(batch)
        assert ("distill_loss" in out.extras) == (distill == "true")
        changed.append([(p.detach() != b) for p, b in zip(trainer.model.parameters(), before)])
    assert sum(int(m.sum()) for m in changed[0]) > 0
    for on, off in zip(*changed):
        assert torch.equal(on, off)
