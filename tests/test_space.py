"""Search-space sampling, serialisation and the errors for bad archs and configs."""

import json

import numpy as np
import pytest

import sned
from sned import Arch, ArchError, ConfigError
from sned.config import COMPONENTS


@pytest.fixture(scope="module")
def space():
    return sned.search_space("tiny-base")


def test_sample_is_deterministic_per_seed(space):
    a = space.sample(np.random.default_rng(7))
    b = space.sample(np.random.default_rng(7))
    c = space.sample(np.random.default_rng(8))
    assert a == b and a != c


def test_sample_respects_floors(space):
    rng = np.random.default_rng(0)
    for _ in range(200):
        a = space.sample(rng, min_ratio=0.7, min_keep=0.75)
        for spec, b in zip(space.specs, a.blocks):
            assert all(r >= 0.7 for _, r in b.ratios)
            assert len(b.keep) >= np.ceil(0.75 * len(spec.components) - 1e-9)
    full = [space.sample(rng, min_ratio=1.0, min_keep=1.0) for _ in range(5)]
    assert all(a.blocks == space.largest().blocks for a in full)


def test_sample_covers_choices(space):
    rng = np.random.default_rng(1)
    ratios, kept, res = set(), set(), set()
    for _ in range(300):
        a = space.sample(rng, min_keep=0.0)
        res.add(a.resolution)
        for b in a.blocks:
            ratios.update(r for _, r in b.ratios)
            kept.add(len(b.keep))
    assert ratios == set(space.config.ratios)
    assert kept == {0, 1, 2, 3, 4} and res == set(space.config.resolutions)


def test_arch_json_roundtrip(space, tmp_path):
    a = space.sample(np.random.default_rng(2))
    path = tmp_path / "a.json"
    a.save(path)
    assert Arch.load(path) == a
    assert Arch.from_dict(json.loads(a.to_json())) == a


def _mutate(arch, i, **kw):
    blocks = list(arch.blocks)
    blocks[i] = sned.BlockArch(kw.get("keep", blocks[i].keep), kw.get("ratios", blocks[i].ratios))
    return Arch(arch.resolution, tuple(blocks), arch.config)


def test_illegal_archs_name_the_problem(space):
    a = space.largest()
    with pytest.raises(ArchError, match="ratio resblock=0.33"):
        space.validate(_mutate(a, 0, ratios=(("resblock", 0.33),) + a.blocks[0].ratios[1:]))
    with pytest.raises(ArchError, match="unknown component 'mlp'"):
        space.validate(_mutate(a, 0, keep=("mlp",)))
    with pytest.raises(ArchError, match="does not exist in this block"):
        space.validate(_mutate(a, 0, keep=("spatial_attn",)))  # level 0 has no spatial attn
    with pytest.raises(ArchError, match="has 3 blocks but config 'tiny-base' has 11"):
        space.validate(Arch(a.resolution, a.blocks[:3], a.config))
    with pytest.raises(ArchError, match="resolution 48 is not served"):
        space.validate(Arch(48, a.blocks, a.config))
    with pytest.raises(ArchError, match="for config 'tiny-ssr'"):
        space.validate(Arch(a.resolution, a.blocks, "tiny-ssr"))
    with pytest.raises(ArchError, match="unknown preset 'XL'"):
        space.preset("XL")
    with pytest.raises(ArchError, match="'blocks' must be a list"):
        Arch.from_dict({"resolution": 16, "blocks": 3})


def test_cost_cap_rejects_and_sampling_redraws(tmp_path):
    base = sned.search_space("tiny-base")
    cap = base.cost(base.preset("L"), resolution=32).macs
    cfg = sned.load_config("tiny-base", [f"max_cost={{32: {{macs: {cap}}}}}"])
    space = sned.search_space(cfg)
    with pytest.raises(ArchError, match="over the cap"):
        space.preset("B", resolution=32)
    assert space.preset("B", resolution=16).resolution == 16  # uncapped resolution
    rng = np.random.default_rng(0)
    draws = [space.sample(rng, resolution=32) for _ in range(30)]
    assert all(space.cost(a).macs <= cap for a in draws)


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown config 'nope'"):
        sned.load_config("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: base\nmodel_channel: 32\n")
    with pytest.raises(ConfigError, match=r"'model_channel'.*bad.yaml"):
        sned.load_config(bad)
    with pytest.raises(ConfigError, match="resolutions"):
        sned.load_config("tiny-base", ["resolutions=[18]"])
    with pytest.raises(ConfigError, match="unknown component"):
        sned.load_config("tiny-base", ["mid_components=[resblock, mlp]"])
    with pytest.raises(ConfigError, match="min_ratio"):
        sned.load_config("tiny-base", ["min_ratio=0.3"])
    assert sned.load_config("tiny-base", ["frames=4"]).frames == 4


def test_forward_input_errors(tiny_base):
    kw = sned.example_inputs(tiny_base, batch=1, resolution=16, frames=2)
    kw["sample"] = kw["sample"][..., :10, :10]
    with pytest.raises(ValueError, match="10x10 is not divisible"):
        tiny_base(**kw)
    with pytest.raises(ValueError, match="frames must be >= 1"):
        sned.model_cost(tiny_base.config, frames=0)


def test_log10_size_counts_every_choice():
    space = sned.search_space("tiny-base")
    n = len(space.config.ratios)
    expected = np.log10(len(space.config.resolutions))
    for spec in space.specs:
        attns = [c for c in spec.components if c != "resblock"]
        total = 0
        for mask in range(2 ** len(spec.components)):
            kept = [c for i, c in enumerate(spec.components) if mask >> i & 1]
            total += n ** (len(kept) + any(c in attns for c in kept))
        expected += np.log10(total)
    assert space.log10_size() == pytest.approx(expected)
    assert set(COMPONENTS) == {"resblock", "temporal_attn", "cross_attn", "spatial_attn"}
