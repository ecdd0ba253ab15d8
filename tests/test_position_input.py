"""``model.position_input: xyt`` (issue 31): coordinate planes into the first convolution, so a
UNet fed pure noise can place an object by its caption. The planes' values and layout, the
model's loss of translation invariance (and of frame symmetry) with them, the cost model,
extraction, save/load, and a clear error for a bad value."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import sned
from sned.config import ConfigError, config_from_dict
from sned.cost import model_cost
from sned.extract import extract
from sned.nn.coordinates import coordinate_planes


def test_coordinate_planes_values_and_layout():
    """(B*T, 3, H, W), frame-major within each clip like the UNet's frames-as-batch layout."""
    p = coordinate_planes(2, 3, 4, 5, torch.zeros(1, dtype=torch.float64))
    assert p.shape == (6, 3, 4, 5) and p.dtype == torch.float64
    torch.testing.assert_close(p[0, 0, 2], torch.linspace(-1, 1, 5, dtype=torch.float64))
    torch.testing.assert_close(p[4, 1, :, 3], torch.linspace(-1, 1, 4, dtype=torch.float64))
    frame = p[:, 2, 0, 0].reshape(2, 3)
    torch.testing.assert_close(frame, torch.tensor([[-1.0, 0.0, 1.0]] * 2, dtype=torch.float64))
    assert bool((p[:, 2] == p[:, 2, :1, :1]).all())             # constant over each frame
    assert bool((coordinate_planes(1, 1, 2, 2, torch.zeros(1))[:, 2] == 0).all())


def _models():
    torch.manual_seed(0)
    plain = sned.build_supernet("tiny-base", ["frames=4"]).eval()
    torch.manual_seed(0)
    xyt = sned.build_supernet("tiny-base", ["frames=4", "position_input=xyt"]).eval()
    return plain, xyt


def test_position_input_breaks_translation_and_frame_symmetry():
    """A clip of one constant colour: without coordinates the first convolution's output is
    the same at every interior pixel (only padding tells the border), and the model's output
    is the same in every frame; with them, position shows from the first layer on, and the
    frames' outputs differ."""
    plain, xyt = _models()
    assert xyt.conv_in.in_channels == plain.conv_in.in_channels + 3
    x = torch.full((1, 3, 4, 16, 16), 0.3)
    ctx, t = torch.randn(1, 5, 384, generator=torch.Generator().manual_seed(1)), torch.tensor([900])
    first = {}
    for name, model in (("plain", plain), ("xyt", xyt)):
        hook = model.conv_in.register_forward_hook(lambda m, i, o, n=name: first.update({n: o}))
        with torch.no_grad():
            first[name + "_out"] = model(x, t, ctx, None)
        hook.remove()
    inner = (slice(None), slice(None), slice(1, 15), slice(1, 15))   # (B*T, C, H, W)
    spread = {k: float((first[k][inner] - first[k][inner][..., :1, :1]).abs().amax())
              for k in ("plain", "xyt")}
    assert spread["plain"] < 1e-6 and spread["xyt"] > 1e-2
    a, b = first["plain_out"], first["xyt_out"]                      # (B, C, T, H, W)
    assert (a - a[:, :, :1]).abs().amax() < 1e-5
    assert (b - b[:, :, :1]).abs().amax() > 1e-3


def test_cost_model_counts_the_planes_like_the_flop_counter():
    plain, xyt = _models()
    x, ctx, t = torch.randn(1, 3, 4, 16, 16), torch.randn(1, 5, 384), torch.tensor([10])
    counted = []
    for model in (plain, xyt):
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            model(x, t, ctx, None)
        counted.append(fc.get_total_flops() // 2)
    c0 = xyt.conv_in.out_channels
    extra = 3 * c0 * 9 * 16 * 16 * 4
    assert counted[1] - counted[0] == extra
    cost = [model_cost(m.config, None, 16, 4) for m in (plain, xyt)]
    assert cost[1].macs - cost[0].macs == extra
    assert cost[1].params - cost[0].params == 3 * c0 * 9
    assert cost[1].params == sum(p.numel() for p in xyt.parameters())


def test_extracted_subnet_and_saved_model_keep_the_planes(tmp_path):
    _, xyt = _models()
    for p in xyt.parameters():  # zero-initialised outputs would hide any mistake
        torch.nn.init.normal_(p, std=0.05)
    arch = sned.search_space(xyt.config).preset("S")
    x, ctx, t = torch.randn(2, 3, 4, 16, 16), torch.randn(2, 5, 384), torch.tensor([10, 700])
    with torch.no_grad():
        ref = xyt(x, t, ctx, None, arch=arch)
        small = extract(xyt, arch).eval()
        torch.testing.assert_close(small(x, t, ctx, None), ref, rtol=1e-4, atol=1e-5)
    sned.save_pretrained(small, tmp_path / "s")
    loaded = sned.load_pretrained(tmp_path / "s").eval()
    assert loaded.config.position_input == "xyt"
    with torch.no_grad():
        assert torch.equal(loaded(x, t, ctx, None), small(x, t, ctx, None))


def test_bad_position_input_names_the_key():
    with pytest.raises(ConfigError, match="position_input"):
        config_from_dict({"kind": "base", "position_input": "xy"})
