"""Supernet ⇄ extracted model equivalence, parameter counts and the MACs cost model."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings, HealthCheck
from hypothesis import strategies as st
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import sned
from sned.nn.elastic import ElasticConv2d, ElasticGroupNorm, ElasticLinear


def _check_equivalence(model, space, arch, frames=3, batch=2):
    static = sned.extract(model, arch)
    kw = sned.example_inputs(model, batch=batch, resolution=arch.resolution, frames=frames,
                             seed=1)
    with torch.no_grad():
        ref = model(**kw, arch=arch)
        out = static(**kw)
    assert out.shape == kw["sample"].shape
    assert (out - ref).abs().max().item() <= 1e-5
    n_params = sum(p.numel() for p in static.parameters())
    assert n_params == space.cost(arch).params
    return static


@pytest.mark.parametrize("config", ["tiny-base", "tiny-ssr"])
def test_extremes_and_presets_match_supernet(config, request):
    model = request.getfixturevalue(config.replace("-", "_"))
    space = sned.search_space(config)
    archs = [space.largest(), space.smallest(), space.smallest(min_keep=1.0),
             space.uniform(0.4)] + [space.preset(p) for p in "SMLB"]
    for res in space.config.resolutions:
        for a in archs:
            a = a.at(res)
            _check_equivalence(model, space, a)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), min_keep=st.sampled_from([0.0, 0.4, 1.0]))
def test_random_archs_match_supernet_base(tiny_base, seed, min_keep):
    space = sned.search_space("tiny-base")
    arch = space.sample(np.random.default_rng(seed), min_keep=min_keep)
    _check_equivalence(tiny_base, space, arch)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1))
def test_random_archs_match_supernet_ssr(tiny_ssr, seed):
    space = sned.search_space("tiny-ssr")
    arch = space.sample(np.random.default_rng(seed), min_keep=0.0)
    _check_equivalence(tiny_ssr, space, arch, frames=2)


def test_extracted_model_is_plain_layers(tiny_base):
    space = sned.search_space("tiny-base")
    static = sned.extract(tiny_base, space.preset("S"))
    elastic = (ElasticLinear, ElasticConv2d, ElasticGroupNorm)
    assert not any(isinstance(m, elastic) for m in static.modules())
    assert any(type(m) is torch.nn.Linear for m in static.modules())
    with pytest.raises(TypeError, match="arch"):
        static(**sned.example_inputs(static), arch=space.preset("S"))


def test_full_supernet_equals_arch_B(tiny_base):
    space = sned.search_space("tiny-base")
    kw = sned.example_inputs(tiny_base, frames=2)
    with torch.no_grad():
        torch.testing.assert_close(tiny_base(**kw), tiny_base(**kw, arch=space.largest()))


@pytest.mark.parametrize("frames", [1, 5])
def test_any_frame_count_and_dropped_blocks_change_output(tiny_base, frames):
    space = sned.search_space("tiny-base")
    kw = sned.example_inputs(tiny_base, batch=1, frames=frames)
    with torch.no_grad():
        full = tiny_base(**kw)
        small = tiny_base(**kw, arch=space.smallest())
    assert full.shape == small.shape == (1, 3, frames, 16, 16)
    assert torch.isfinite(full).all() and not torch.allclose(full, small)


def test_temporal_attention_mixes_frames(tiny_base):
    kw = sned.example_inputs(tiny_base, batch=1, frames=4)
    with torch.no_grad():
        a = tiny_base(**kw)
        kw["sample"][:, :, 3] += 1.0
        b = tiny_base(**kw)
    # changing the last frame changes the prediction for the first
    assert (a[:, :, 0] - b[:, :, 0]).abs().max() > 1e-4


def _flop_macs(model, kw):
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, \
            torch.no_grad():
        model(**kw)
    return counter.get_total_flops() / 2


@pytest.mark.parametrize("config", ["tiny-base", "tiny-ssr"])
def test_macs_match_flop_counter(config, request):
    model = request.getfixturevalue(config.replace("-", "_"))
    space = sned.search_space(config)
    rng = np.random.default_rng(3)
    archs = [space.largest(), space.preset("S"), space.smallest(min_keep=0.0)]
    archs += [space.sample(rng, min_keep=0.0) for _ in range(3)]
    for arch in archs:
        for frames in (1, 4):
            static = sned.extract(model, arch)
            kw = sned.example_inputs(static, batch=1, resolution=arch.resolution, frames=frames)
            counted = _flop_macs(static, kw)
            predicted = space.cost(arch, frames=frames).macs
            assert abs(counted - predicted) <= 0.01 * counted, (arch.resolution, frames)
            # the supernet running the arch does the same work
            assert _flop_macs(model, {**kw, "arch": arch}) == counted


@pytest.mark.parametrize("config,full,presets", [
    ("pixel-base", 1.60e9, {"S": 0.64e9, "M": 0.96e9, "L": 1.28e9}),
    ("pixel-ssr", 428e6, {}),
])
def test_paper_sizes(config, full, presets):
    space = sned.search_space(config)
    model = sned.build_supernet(config, device="meta")
    counted = sum(p.numel() for p in model.parameters())
    assert counted == space.cost(space.largest()).params
    assert abs(counted / full - 1) <= 0.03
    for name, target in presets.items():
        params = space.cost(space.preset(name)).params
        assert abs(params / target - 1) <= 0.03, (name, params)


def test_presets_are_deterministic_and_ordered():
    a, b = sned.search_space("tiny-base"), sned.search_space("tiny-base")
    assert [a.preset(p) for p in "SMLB"] == [b.preset(p) for p in "SMLB"]
    params = [a.cost(a.preset(p)).params for p in "SMLB"]
    assert params == sorted(params)
    full = params[-1]
    for p, frac in zip(params, (0.4, 0.6, 0.8, 1.0)):
        assert abs(p / full - frac) <= 0.03
