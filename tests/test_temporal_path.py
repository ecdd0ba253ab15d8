"""The temporal path of the video UNet, end to end (issue 31): temporal attention mixes the
frames of one pixel and nothing else, knows the frames' order, starts at zero and gets a
gradient; the frames-as-batch reshapes keep every frame in its place; the caption reaches every
frame; the sampler's noise differs per clip and per frame."""

from __future__ import annotations

import pytest
import torch

import sned
from sned.arch import BlockSpec
from sned.nn.attention import Attention
from sned.nn.blocks import DiffusionBlock
from sned.pipelines.sampling import generators, initial_noise

B, T, C, H, W = 2, 6, 16, 4, 5


def _temporal_block(seed: int = 0) -> DiffusionBlock:
    """A block holding only a temporal attention with a random (non-zero) output projection."""
    torch.manual_seed(seed)
    spec = BlockSpec("t", 0, C, C, ("temporal_attn",), 2, C, 0)
    block = DiffusionBlock(spec, emb_dim=8, text_dim=8, head_dim=8, group_size=8).eval()
    torch.nn.init.normal_(block.temporal_attn.to_out.weight, std=0.5)
    return block


def _run(block, x):
    emb, ctx = torch.zeros(B, 8), torch.zeros(B, 1, 8)
    return block(x, emb, ctx, None, frames=T)


def test_temporal_attention_mixes_the_frames_of_one_pixel_only():
    block = _temporal_block()
    x = torch.randn(B * T, C, H, W)
    y = _run(block, x)
    x2 = x.clone()
    x2[1 * T + 2, :, 1, 3] += 3.0 * torch.randn(C)   # sample 1, frame 2, pixel (1, 3)
    d = (_run(block, x2) - y).abs().amax(1).reshape(B, T, H, W)
    changed = d > 1e-6
    assert changed[1, :, 1, 3].all()       # every frame of that pixel sees it
    changed[1, :, 1, 3] = False
    assert not changed.any()               # no other pixel, no other sample


def test_temporal_attention_knows_the_order_of_the_frames():
    """Rotary positions: permuting the frames does not just permute the output."""
    block = _temporal_block()
    x = torch.randn(B * T, C, H, W)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])

    def permute(z):
        return z.reshape(B, T, C, H, W)[:, perm].reshape(B * T, C, H, W)

    assert (_run(block, permute(x)) - permute(_run(block, x))).abs().max() > 1e-3
    block.temporal_attn.use_rotary = False  # without positions: exactly equivariant
    assert torch.allclose(_run(block, permute(x)), permute(_run(block, x)), atol=1e-5)


def _fresh_supernet():
    torch.manual_seed(0)
    return sned.build_supernet("tiny-base").eval()


def test_zero_init_unet_keeps_every_frame_in_its_place():
    """At initialisation (temporal outputs zero) no layer mixes frames: a frame's output
    depends on that frame alone, and permuting the input frames permutes the output — the
    reshapes (B, C, T, H, W) ↔ (B*T, …) ↔ (B*HW, T, …) keep frame order. With a non-zero
    temporal output, the other frames matter."""
    model = _fresh_supernet()
    with torch.no_grad():  # give every other residual branch a non-zero output
        for name, p in model.named_parameters():
            if p.abs().sum() == 0 and "temporal_attn" not in name and "null_text" not in name:
                p.normal_(std=0.05)
    kw = sned.example_inputs(model, batch=2, frames=T)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    with torch.no_grad():
        y = model(**kw)
        other = dict(kw, sample=kw["sample"].clone())
        other["sample"][:, :, 1:] = torch.randn_like(other["sample"][:, :, 1:])
        assert torch.allclose(model(**other)[:, :, 0], y[:, :, 0], atol=1e-5)
        shuffled = model(**dict(kw, sample=kw["sample"][:, :, perm]))
        assert torch.allclose(shuffled, y[:, :, perm], atol=1e-5)
        for m in model.modules():
            if isinstance(m, Attention) and m.use_rotary:
                m.to_out.weight.normal_(std=0.05)
        assert (model(**other)[:, :, 0] - model(**kw)[:, :, 0]).abs().max() > 1e-4


def test_zero_init_temporal_outputs_get_a_gradient():
    """The zero-initialised temporal output projections are not stuck: every one gets a
    non-zero gradient from the first step's loss."""
    model = _fresh_supernet().train()
    kw = sned.example_inputs(model, batch=2)
    model(**kw).square().mean().backward()
    temporal = [m for m in model.modules() if isinstance(m, Attention) and m.use_rotary]
    assert len(temporal) == 11
    for m in temporal:
        assert float(m.to_out.weight.detach().abs().sum()) == 0.0
        assert float(m.to_out.weight.grad.abs().sum()) > 0.0


def test_the_caption_reaches_every_frame(tiny_base):
    kw = sned.example_inputs(tiny_base, batch=1, frames=T)
    other = dict(kw, encoder_hidden_states=torch.randn_like(kw["encoder_hidden_states"]))
    with torch.no_grad():
        d = (tiny_base(**kw) - tiny_base(**other)).abs().amax((1, 3, 4))   # (1, T)
    assert (d > 1e-4).all()


@pytest.mark.parametrize("seed", [0, 7])
def test_sampler_noise_differs_per_clip_and_per_frame(seed):
    x = initial_noise((3, 3, T, 8, 8), generators(seed, 3))
    flat = x.transpose(1, 2).reshape(3 * T, -1)
    dist = torch.cdist(flat, flat) + torch.eye(3 * T) * 1e9
    assert dist.min() > 1.0                # no two frames of any clips share their noise


def test_sinusoidal_embedding_matches_the_transformer_formula():
    import numpy as np

    from sned.nn.sinusoid import sinusoidal_embedding

    table = sinusoidal_embedding(torch.arange(8), 7).numpy()
    p, i = np.arange(8)[:, None], np.arange(3)[None, :]
    angle = p / 10000 ** (i / 3)  # 3 channel pairs of a 7-wide table; channel 6 stays 0
    assert np.allclose(table[:, :3], np.cos(angle), atol=1e-6)
    assert np.allclose(table[:, 3:6], np.sin(angle), atol=1e-6)
    assert not table[:, 6].any()


def test_absolute_frame_position_tells_the_frames_of_a_still_clip_apart():
    """A still clip (every frame equal): with relative positions only, every frame gets the
    same output (the values are equal, whatever the weights); with ``rotary+absolute`` each
    frame knows where it is, so a frame-constant input can become a frame-dependent output."""
    block = _temporal_block()
    still = torch.randn(B, 1, C, H, W).expand(B, T, C, H, W).reshape(B * T, C, H, W)
    per_frame = _run(block, still).reshape(B, T, C, H, W)
    assert torch.allclose(per_frame, per_frame[:, :1].expand_as(per_frame), atol=1e-5)
    block.temporal_attn.absolute_position = True
    per_frame = _run(block, still).reshape(B, T, C, H, W)
    assert (per_frame[:, 1:] - per_frame[:, :1]).abs().amax() > 1e-2


def test_frame_position_option_builds_saves_and_loads(tmp_path):
    torch.manual_seed(0)
    model = sned.build_supernet("tiny-base", ["frame_position=rotary+absolute"]).eval()
    temporal = [m for n, m in model.named_modules() if n.endswith("temporal_attn")]
    assert temporal and all(m.absolute_position for m in temporal)
    assert not any(m.absolute_position for n, m in model.named_modules()
                   if n.endswith(("spatial_attn", "cross_attn")))
    sned.save_pretrained(model, tmp_path / "m")
    loaded = sned.load_pretrained(tmp_path / "m").eval()
    assert loaded.config.frame_position == "rotary+absolute"
    x, ctx = torch.randn(1, 3, 4, 16, 16), torch.randn(1, 3, 384)
    t = torch.tensor([300])
    assert torch.equal(model(x, t, ctx, None), loaded(x, t, ctx, None))
    with pytest.raises(Exception, match="frame_position"):
        sned.build_supernet("tiny-base", ["frame_position=absolute"])
