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
