"""sned.pipelines.cascade: base → SSR → SSR with tiny configs (random weights)."""

from __future__ import annotations

import pytest
import torch

import sned
from sned.arch import ResolutionError
from sned.pipelines import CascadeError, Stage, cascade_resolutions, generate, sample

KW = dict(steps=2, frames=2, progress=False)


@pytest.fixture(scope="module")
def text():
    g = torch.Generator().manual_seed(7)
    return torch.randn(1, 5, 384, generator=g), torch.ones(1, 5, dtype=torch.bool)


@pytest.fixture(scope="module")
def spaces():
    return sned.search_space("tiny-base"), sned.search_space("tiny-ssr")


@pytest.mark.parametrize("final,expected", [(16, [16]), (32, [16, 32]), (64, [16, 32, 64])])
def test_stage_shapes(tiny_base, tiny_ssr, text, final, expected):
    video, stages = generate(*text, base=Stage(tiny_base), ssr=Stage(tiny_ssr),
                             final_resolution=final, return_stages=True, **KW)
    assert [s.shape[-1] for s in stages] == expected
    assert all(s.shape == (1, 3, 2, r, r) for s, r in zip(stages, expected))
    assert video is stages[-1] and video.min() >= -1 and video.max() <= 1


def test_deterministic_and_seed_rule(tiny_base, tiny_ssr, text):
    run = dict(base=Stage(tiny_base), ssr=Stage(tiny_ssr), final_resolution=32, **KW)
    a, stages = generate(*text, seed=4, return_stages=True, **run)
    assert torch.equal(a, generate(*text, seed=4, **run))
    assert (a - generate(*text, seed=5, **run)).abs().max() > 1e-3
    # stage 1 is exactly sample(base, seed); stage 2 upsamples it with seed + SEED_STRIDE
    base_only = sample(tiny_base, *text, seed=4, **KW)
    assert torch.equal(stages[0], base_only)
    from sned.pipelines import SEED_STRIDE
    up = sample(tiny_ssr, *text, lowres=base_only, seed=4 + SEED_STRIDE, **KW)
    assert torch.equal(a, up)


def test_per_stage_archs(tiny_base, tiny_ssr, text, spaces):
    bspace, sspace = spaces
    seen = []

    def spy(module, args, kwargs):
        seen.append((kwargs["arch"], args[0].shape[-1]))
    hook = tiny_ssr.register_forward_pre_hook(spy, with_kwargs=True)
    try:
        s_then_b = generate(*text, base=Stage(tiny_base, bspace.preset("S")),
                            ssr=[Stage(tiny_ssr, sspace.preset("S", 32)),
                                 Stage(tiny_ssr, sspace.preset("B"))],  # re-targeted to 64
                            final_resolution=64, seed=1, **KW)
    finally:
        hook.remove()
    assert [(a.resolution, r) for a, r in seen] == [(32, 32)] * 2 + [(64, 64)] * 2
    assert seen[0][0].blocks == sspace.preset("S").blocks
    assert seen[2][0].blocks == sspace.preset("B").blocks
    b_both = generate(*text, base=Stage(tiny_base, bspace.preset("S")),
                      ssr=Stage(tiny_ssr, sspace.preset("B")), final_resolution=64, seed=1,
                      **KW)
    assert s_then_b.shape == b_both.shape == (1, 3, 2, 64, 64)
    assert (s_then_b - b_both).abs().max() > 1e-4


def test_extracted_stages_match_supernet(tiny_base, tiny_ssr, text, spaces):
    bspace, sspace = spaces
    barch, sarch = bspace.preset("M"), sspace.preset("L", 32)
    sup = generate(*text, base=Stage(tiny_base, barch), ssr=Stage(tiny_ssr, sarch),
                   final_resolution=64, seed=2, guidance_scale=[3.0, 2.0, 1.0], **KW)
    ext = generate(*text, base=Stage(sned.extract(tiny_base, barch)),
                   ssr=Stage(sned.extract(tiny_ssr, sarch)), final_resolution=64, seed=2,
                   guidance_scale=[3.0, 2.0, 1.0], **KW)
    assert ext.shape == (1, 3, 2, 64, 64)
    assert (sup - ext).abs().max() <= 1e-4


def test_base_resolution_from_arch(tiny_base, tiny_ssr, text, spaces):
    bspace, _ = spaces
    res, stages = cascade_resolutions(Stage(tiny_base, bspace.preset("B", 32)), Stage(tiny_ssr))
    assert res == [32, 64] and len(stages) == 1
    assert cascade_resolutions(Stage(tiny_base), [Stage(tiny_ssr)] * 2)[0] == [16, 32, 64]
    assert cascade_resolutions(Stage(tiny_base))[0] == [16]


def test_resolution_errors(tiny_base, tiny_ssr, spaces):
    bspace, _ = spaces
    base, ssr = Stage(tiny_base), Stage(tiny_ssr)
    with pytest.raises(CascadeError, match=r"final_resolution 48 .*base resolution 16"):
        cascade_resolutions(base, ssr, 48)
    with pytest.raises(CascadeError, match=r"final_resolution 8"):
        cascade_resolutions(base, ssr, 8)
    with pytest.raises(ResolutionError, match=r"resolution 128 .*tiny-ssr.*\[32, 64\]"):
        cascade_resolutions(base, ssr, 128)
    with pytest.raises(ResolutionError, match=r"resolution 128 .*\[32, 64\]"):
        cascade_resolutions(Stage(tiny_base, bspace.preset("B", 32)), ssr, 128)
    with pytest.raises(CascadeError, match="no `ssr`"):
        cascade_resolutions(base, None, 32)
    with pytest.raises(CascadeError, match="1 SSR stages for 2"):
        cascade_resolutions(base, [ssr], 64)
    with pytest.raises(CascadeError, match="base"):
        cascade_resolutions(ssr, ssr, 64)
    with pytest.raises(CascadeError, match="SSR model"):
        cascade_resolutions(base, base, 32)
    with pytest.raises(CascadeError, match="steps has 2 entries for 3 stages"):
        generate(torch.zeros(1, 2, 384), base=base, ssr=ssr, final_resolution=64,
                 steps=[1, 1], progress=False)


def test_from_denoiser(tiny_base):
    from sned.diffusion import DiffusionConfig
    from sned.pipelines.loading import Denoiser
    den = Denoiser(tiny_base, None, DiffusionConfig(prediction_type="epsilon"), "mem", "B")
    st = Stage.from_denoiser(den)
    assert st.model is tiny_base and st.diffusion.prediction_type == "epsilon"
    assert st.name() == "B"
