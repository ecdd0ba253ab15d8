"""sned.pipelines.sampling: seeding, schedulers, CFG, thresholding, SSR, supernet vs extracted."""

from __future__ import annotations

import pytest
import torch

import sned
from sned.diffusion import DiffusionConfig, make_scheduler
from sned.pipelines import generators, initial_noise, sample

KW = dict(steps=3, frames=2, progress=False)


@pytest.fixture(scope="module")
def text():
    g = torch.Generator().manual_seed(123)
    emb = torch.randn(2, 6, 384, generator=g)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 3:] = False
    return emb, mask


def test_shape_range_and_determinism(tiny_base, text):
    a = sample(tiny_base, *text, seed=7, **KW)
    b = sample(tiny_base, *text, seed=7, **KW)
    assert a.shape == (2, 3, 2, 16, 16) and a.dtype == torch.float32
    assert a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b)
    c = sample(tiny_base, *text, seed=8, **KW)
    assert (a - c).abs().max() > 1e-3
    d = sample(tiny_base, *text, seed=7, resolution=32, **KW)
    assert d.shape == (2, 3, 2, 32, 32)


def test_seed_rule_and_cpu_noise():
    gens = generators(5, 3)
    noise = initial_noise((3, 2, 4), gens)
    for i in range(3):
        ref = torch.randn((1, 2, 4), generator=torch.Generator().manual_seed(5 + i))
        assert torch.equal(noise[i:i + 1], ref)
    assert len(generators([1, 2], 2)) == 2
    g = torch.Generator().manual_seed(0)
    assert generators(g, 3) == [g, g, g]
    with pytest.raises(ValueError, match="2 seeds"):
        generators([1, 2], 3)
    with pytest.raises(TypeError):
        generators("0", 1)


@pytest.mark.parametrize("kind", ["ddim", "dpm", "ddpm"])
def test_batch_sample_i_equals_alone_with_seed_plus_i(tiny_base, text, kind):
    emb, mask = text
    both = sample(tiny_base, emb, mask, scheduler=kind, seed=11, guidance_scale=2.0,
                  clamp=False, **KW)
    assert torch.isfinite(both).all()
    for i in range(2):
        alone = sample(tiny_base, emb[i:i + 1], mask[i:i + 1], scheduler=kind, seed=11 + i,
                       guidance_scale=2.0, clamp=False, **KW)
        torch.testing.assert_close(both[i:i + 1], alone, atol=1e-4, rtol=0)


def _reference(model, emb, mask, scale, seed, steps=3, frames=2, res=16):
    """Plain DDIM loop with cond / uncond as two separate forwards."""
    sched = make_scheduler(DiffusionConfig(), "ddim")
    sched.set_timesteps(steps)
    x = torch.cat([torch.randn((1, 3, frames, res, res), generator=torch.Generator()
                               .manual_seed(seed + i)) for i in range(len(emb))])
    for t in sched.timesteps:
        tt = t.expand(len(emb))
        cond = model(x, tt, emb, mask)
        if scale != 1.0:
            uncond = model(x, tt, emb, torch.zeros_like(mask))
            cond = uncond + scale * (cond - uncond)
        x = sched.step(cond, t, x).prev_sample
    return x


@pytest.mark.parametrize("scale", [1.0, 4.0])
def test_cfg_matches_reference_and_batches_branches(tiny_base, text, scale):
    emb, mask = text
    calls = []
    hook = tiny_base.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    try:
        out = sample(tiny_base, emb, mask, guidance_scale=scale, seed=3, clamp=False, **KW)
    finally:
        hook.remove()
    # one forward per step; CFG puts cond and uncond in the same batch of 2B
    assert calls == [4 if scale != 1.0 else 2] * 3
    with torch.no_grad():
        ref = _reference(tiny_base, emb, mask, scale, seed=3)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)
    if scale != 1.0:
        plain = sample(tiny_base, emb, mask, seed=3, clamp=False, **KW)
        assert (plain - out).abs().max() > 1e-3


@pytest.mark.parametrize("kind", ["ddim", "dpm", "ddpm"])
def test_dynamic_threshold_keeps_range(tiny_base, text, kind):
    free = sample(tiny_base, *text, scheduler=kind, clamp=False, **KW)
    assert free.abs().max() > 1.0  # random weights overshoot without thresholding
    thr = sample(tiny_base, *text, scheduler=kind, dynamic_threshold=0.995, clamp=False, **KW)
    assert thr.abs().max() <= 1.0 + 1e-6


def test_supernet_arch_equals_extracted(tiny_base, text):
    space = sned.search_space("tiny-base")
    for name, res in [("S", 16), ("M", 32)]:
        arch = space.preset(name, res)
        static = sned.extract(tiny_base, arch)
        for kind in ["ddim", "ddpm"]:
            a = sample(tiny_base, *text, arch=arch, scheduler=kind, seed=5, clamp=False,
                       guidance_scale=3.0, **KW)
            b = sample(static, *text, scheduler=kind, seed=5, clamp=False, guidance_scale=3.0,
                       **KW)
            assert a.shape == b.shape == (2, 3, 2, res, res)
            assert (a - b).abs().max() <= 1e-4
    full = sample(tiny_base, *text, seed=5, clamp=False, **KW)
    small = sample(tiny_base, *text, arch=space.preset("S"), seed=5, clamp=False, **KW)
    assert (full - small).abs().max() > 1e-3  # the arch is really used


def test_ssr_sampling(tiny_ssr, text):
    emb, mask = text
    low = torch.rand(2, 3, 2, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with pytest.raises(ValueError, match="lowres"):
        sample(tiny_ssr, emb, mask, **KW)
    out = sample(tiny_ssr, emb, mask, lowres=low, seed=2, clamp=False, **KW)
    assert out.shape == (2, 3, 2, 32, 32)
    again = sample(tiny_ssr, emb, mask, lowres=low, seed=2, clamp=False, **KW)
    assert torch.equal(out, again)
    alone = sample(tiny_ssr, emb[1:], mask[1:], lowres=low[1:], seed=3, clamp=False, **KW)
    torch.testing.assert_close(out[1:], alone, atol=1e-4, rtol=0)
    other = sample(tiny_ssr, emb, mask, lowres=low, seed=2, aug_level=0.6, clamp=False, **KW)
    assert (other - out).abs().max() > 1e-3
    arch = sned.search_space("tiny-ssr").preset("S", 64)
    up = sample(tiny_ssr, emb, mask, lowres=out.clamp(-1, 1), arch=arch, **KW)
    assert up.shape == (2, 3, 2, 64, 64)
    with pytest.raises(ValueError, match="frames"):
        sample(tiny_ssr, emb, mask, lowres=low, **{**KW, "frames": 3})


def test_errors(tiny_base, text):
    emb, mask = text
    space = sned.search_space("tiny-base")
    static = sned.extract(tiny_base, space.preset("S"))
    with pytest.raises(TypeError, match="extracted"):
        sample(static, emb, mask, arch=space.preset("S"), **KW)
    with pytest.raises(ValueError, match="resolution"):
        sample(tiny_base, emb, mask, arch=space.preset("S", 16), resolution=32, **KW)
    with pytest.raises(ValueError, match="scheduler"):
        sample(tiny_base, emb, mask, scheduler="euler", **KW)
    with pytest.raises(ValueError, match="only for SSR"):
        sample(tiny_base, emb, mask, lowres=torch.zeros(2, 3, 2, 8, 8), **KW)
    with pytest.raises(ValueError, match="text_embeds"):
        sample(tiny_base, emb[..., :10], mask, **KW)
    with pytest.raises(ValueError, match="dtype"):
        sample(tiny_base, emb, mask, dtype="int8", **KW)


def test_train_mode_restored_and_bf16_autocast(tiny_base, text):
    tiny_base.train()
    try:
        out = sample(tiny_base, *text, dtype="bf16", **KW)
    finally:
        was_training = tiny_base.training
        tiny_base.eval()
    assert was_training
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_benchmark_script_smoke(capsys):
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_sampling.py"
    spec = importlib.util.spec_from_file_location("bench_sampling", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    small = ["--device", "cpu", "--steps", "1", "--frames", "2", "--repeats", "1", "--warmup",
             "0", "--presets", "SB", "--json"]
    for extra in ([], ["--cascade"]):
        assert bench.main(small + extra) == 0
        out = json.loads(capsys.readouterr().out)
        rows = {r["preset"]: r for r in out["rows"]}
        assert set(rows) == {"S", "B"} and rows["B"]["speedup_vs_B_extracted"] == 1.0
        assert all(r["supernet_ms"] > 0 and r["extracted_ms"] > 0 for r in rows.values())
        assert rows["S"]["resolution"] == (64 if extra else 16)
