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


# ------------------------------------------------------------------ presets inside training
BUILTIN = ("tiny-base", "tiny-ssr", "pixel-base", "pixel-ssr")


def _inside_trained_distribution(space, arch, min_ratio=0.4, min_keep=0.4):
    """What training samples after warm-up: ratios >= the floor, each block keeping at least
    ceil(min_keep x n) of its n components."""
    for spec, b in zip(space.specs, arch.blocks):
        assert min(r for _, r in b.ratios) >= min_ratio - 1e-9, spec.name
        assert len(b.keep) >= np.ceil(min_keep * len(spec.components) - 1e-9), (spec.name, b.keep)


@pytest.mark.parametrize("config", BUILTIN)
def test_presets_lie_inside_what_training_samples(config):
    space = sned.search_space(config)
    for name in ("S", "M", "L", "B", 0.1, "0.25", 0.5, "0.75"):
        _inside_trained_distribution(space, space.preset(name))


def test_widths_never_round_below_the_ratio():
    """6 heads x 0.4 = 2.4 must keep 3 heads (2 would be 33 % < the 40 % floor); channels too."""
    from sned.arch import slot_width
    for config in BUILTIN:
        space = sned.search_space(config)
        cfg = space.config
        for spec in space.specs:
            for slot in spec.slots:
                full = slot_width(cfg, spec, slot, 1.0)
                for r in cfg.ratios:
                    w = slot_width(cfg, spec, slot, r)
                    assert r * full - 1e-9 <= w <= full, (config, spec.name, slot, r, w, full)
    pixel = sned.search_space("pixel-base")
    spec = next(s for s in pixel.specs if s.heads == 6 and s.attentions)
    assert slot_width(pixel.config, spec, "temporal_attn", 0.4) == 3


@pytest.mark.parametrize("config", ["tiny-base", "pixel-base"])
def test_fraction_presets(config):
    space = sned.search_space(config)
    full = space.full_params
    for name, f in (("S", 0.4), ("M", 0.6), ("L", 0.8), ("B", 1.0)):
        assert space.preset(name) == space.preset(f) == space.preset(str(f))
    assert space.preset("1") == space.preset("B") == space.largest()
    tol = 0.02 if config == "pixel-base" else 0.06
    for f in (0.5, 0.75, 0.9):
        a = space.preset(f)
        assert space.preset(f"{f}") == a and a.resolution == space.config.resolutions[0]
        assert abs(space.cost(a).params / full - f) <= tol, (f, space.cost(a).params / full)
    fracs = [space.cost(space.preset(f)).params for f in (0.45, 0.55, 0.65, 0.75, 0.85, 0.95)]
    assert fracs == sorted(fracs)
    assert space.preset("0.75", resolution=space.config.resolutions[-1]).resolution == \
        space.config.resolutions[-1]


def test_fraction_preset_is_the_closest_on_the_descent():
    """Not just the first arch under the target: the closer of the two that bracket it."""
    from sned.space import parse_preset
    space = sned.search_space("tiny-base")
    full = space.full_params
    for f in np.linspace(0.42, 0.98, 15):
        got = space.cost(space.preset(float(f))).params
        path = [space.cost(a).params for a in space.descent()]
        best = min(path, key=lambda p: abs(p - f * full))
        assert abs(got - f * full) == abs(best - f * full)
    assert parse_preset("S") == ("S", 0.4) and parse_preset(" 0.75") == ("0.75", 0.75)
    assert parse_preset(0.5) == ("0.5", 0.5) and parse_preset("1.0") == ("1", 1.0)


@pytest.mark.parametrize("bad", ["XL", "0", "1.5", "-0.2", "nan", "inf", "", 0.0, 2, True,
                                 None])
def test_bad_presets_name_the_value(bad):
    space = sned.search_space("tiny-base")
    with pytest.raises(ArchError, match="preset"):
        space.preset(bad)


def test_cost_cli_takes_a_fraction(capsys):
    from sned.cli import main
    assert main(["cost", "tiny-base", "--preset", "0.75"]) == 0
    got = json.loads(capsys.readouterr().out)
    space = sned.search_space("tiny-base")
    assert got["arch"] == "0.75" and got["params"] == space.cost(space.preset(0.75)).params
    assert main(["cost", "tiny-base", "--preset", "1.5"]) == 2
    assert "unknown preset '1.5'" in capsys.readouterr().err
