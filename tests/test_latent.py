"""The latent path's models: the video autoencoder, the latent UNet configs, costs, codec."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import sned
from sned.config import ConfigError, load_config
from sned.models.autoencoder import load_autoencoder_config
from sned.cost import autoencoder_cost, decoder_cost
from sned.extract import extract
from sned.models.codec import LatentCodec, LatentStats, estimate_stats, load_codec, save_autoencoder
from sned.metrics.reconstruction import psnr, ssim
from sned.models.autoencoder import AutoencoderConfig, VideoAutoencoder
from sned.models.unet import VideoUNet
from sned.pipelines import sample_latent
from sned.space import SearchSpace

torch.set_num_threads(1)


def _ae(name="tiny-ae", seed=0, **over) -> VideoAutoencoder:
    torch.manual_seed(seed)
    cfg = load_autoencoder_config(name, [f"{k}={v}" for k, v in over.items()])
    return VideoAutoencoder(cfg).eval()


def test_latent_base_matches_lvdm_sky_unet():
    """LVDM's Sky-Timelapse UNet has 548,904,580 parameters (Table 2: 548 / 411 / 274 M)."""
    space = SearchSpace("latent-base")
    assert abs(space.full_params / 548_904_580 - 1) < 0.03
    cfg = space.config
    assert not cfg.conditional and cfg.in_channels == 4 and cfg.autoencoder == "video-ae"
    # the model builds what the cost model counts (meta device: no memory)
    with torch.device("meta"):
        net = VideoUNet(cfg)
    assert sum(p.numel() for p in net.parameters()) == space.full_params
    blocks = {s.name: s for s in space.specs}
    assert blocks["down.1.0"].components == ("resblock", "spatial_attn", "temporal_attn")
    assert blocks["down.0.0"].components == ("resblock",)
    assert blocks["mid.1"].components == ("resblock",) and blocks["mid.0"].ff_hidden == 0


def test_video_ae_shape_and_size():
    cfg = load_autoencoder_config("video-ae")
    assert isinstance(cfg, AutoencoderConfig)
    assert cfg.latent_shape(16, 256) == (4, 4, 32, 32)
    with torch.device("meta"):
        ae = VideoAutoencoder(cfg)
    n = sum(p.numel() for p in ae.parameters())
    assert abs(n / 19.5e6 - 1) < 0.03  # LVDM's AE: ~19.45 M
    enc = autoencoder_cost(cfg, "encoder", 16, 256).params
    dec = autoencoder_cost(cfg, "decoder", 16, 256).params
    assert enc + dec == n


@pytest.mark.parametrize("part", ["encoder", "decoder"])
def test_autoencoder_cost_matches_flop_counter(part):
    ae = _ae()
    cfg = ae.config
    c = autoencoder_cost(cfg, part, 8, 16)
    assert c.params == sum(p.numel() for p in getattr(ae, part).parameters())
    x = torch.randn(1, 3, 8, 16, 16) if part == "encoder" else torch.randn(1, 4, 4, 4, 4)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        getattr(ae, part)(x)
    assert fc.get_total_flops() == 2 * c.macs


def test_decoder_cost_of_a_latent_config():
    cfg = load_config("latent-base")
    c, frames, res = decoder_cost(cfg)
    assert (frames, res) == (16, 256)
    assert c == autoencoder_cost(load_autoencoder_config("video-ae"), "decoder", 16, 256)
    with pytest.raises(ValueError, match="pixel model"):
        decoder_cost(load_config("tiny-base"))


def test_autoencoder_is_temporally_shift_equivariant():
    """Shifting a clip by the temporal factor shifts its interior latents by exactly one.

    With replicate padding, a latent position touches the padding iff it depends on the clip's
    first (or last) frame; "interior" = positions unchanged when those frames are perturbed.
    """
    ae = _ae()
    ft = ae.config.temporal_factor
    g = torch.Generator().manual_seed(0)
    n = 48  # the receptive field spans ~±14 frames: the interior needs a long clip
    long = torch.randn(1, 3, n + ft, 8, 8, generator=g)
    a, b = long[:, :, :n], long[:, :, ft:n + ft]

    def enc(x):
        with torch.no_grad():
            return ae.encode(x).mode()

    def interior(x):
        base = enc(x)
        y = x.clone()
        y[:, :, 0] += 1.0
        y[:, :, -1] -= 1.0
        changed = (enc(y) - base).abs().amax(dim=(0, 1, 3, 4)) > 0
        return base, (~changed).nonzero().flatten().tolist()

    za, ia = interior(a)
    zb, ib = interior(b)
    assert za.shape[2] == n // ft
    both = [k for k in ib if k + 1 in ia]
    assert len(both) >= 3, (ia, ib)  # a real interior exists
    for k in both:
        torch.testing.assert_close(zb[:, :, k], za[:, :, k + 1], rtol=0, atol=1e-5)
    # ...and a clip-wide normalisation would break it: the boundary positions do differ
    assert not torch.allclose(zb[:, :, 0], za[:, :, 1], atol=1e-3)


def test_autoencoder_rejects_bad_frames_and_configs():
    ae = _ae()
    with pytest.raises(ValueError, match="frames 7 is not a multiple"):
        ae.encode(torch.zeros(1, 3, 7, 16, 16))
    with pytest.raises(ConfigError, match="temporal factor"):
        load_autoencoder_config("tiny-ae", ["downsample=[1, 4, 4]"])
    with pytest.raises(ConfigError, match="'bogus'"):
        load_autoencoder_config("tiny-ae", ["bogus=1"])


def test_codec_roundtrip_and_folder(tmp_path):
    ae = _ae()
    videos = [torch.rand(2, 3, 8, 16, 16) * 2 - 1 for _ in range(2)]
    stats = estimate_stats(ae, videos)
    z = torch.cat([ae.encode(v).mode() for v in videos]).detach()
    assert stats.shift == pytest.approx(-z.double().mean().item(), rel=1e-6)
    assert stats.scale == pytest.approx(1 / z.double().std(unbiased=False).item(), rel=1e-6)
    codec = LatentCodec(ae, stats)
    norm = codec.encode(videos[0])
    torch.testing.assert_close(codec.decode(norm), ae.decode(ae.encode(videos[0]).mode()),
                               rtol=1e-4, atol=1e-5)
    save_autoencoder(ae, tmp_path / "dec", stats, parts=("decoder",))
    loaded = load_codec(tmp_path / "dec")
    assert loaded.ae.parts == ("decoder",) and loaded.stats == stats
    torch.testing.assert_close(loaded.decode(norm), codec.decode(norm))
    with pytest.raises(TypeError, match="decoder-only"):
        loaded.ae.encode(videos[0])


def _tiny_latent():
    torch.manual_seed(0)
    cfg = load_config("tiny-latent")
    net = VideoUNet(cfg).eval()
    with torch.no_grad():  # non-zero everywhere so dropped parts would show
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return net, SearchSpace(cfg)


def test_extraction_exact_on_tiny_latent():
    net, space = _tiny_latent()
    rng = np.random.default_rng(0)
    archs = [space.preset(p, r) for p in ("S", "B") for r in space.config.resolutions]
    archs += [space.sample(rng) for _ in range(4)]
    for arch in archs:
        r = arch.resolution
        x = torch.randn(2, 4, 4, r, r)
        t = torch.tensor([10, 500])
        with torch.no_grad():
            want = net(x, t, None, arch=arch)
            got = extract(net, arch)(x, t, None)
        assert (want - got).abs().max() <= 1e-5


def test_sample_latent_writes_requested_frames_and_pixel_resolution():
    net, space = _tiny_latent()
    codec = LatentCodec(_ae(), LatentStats(0.5, 0.1))
    arch = space.preset("S", 8)
    video = sample_latent(net, codec, batch=2, arch=arch, steps=2, frames=6, progress=False)
    assert video.shape == (2, 3, 6, 32, 32)
    assert video.abs().max() <= 1
    with pytest.raises(ValueError, match="frames=5 is not a multiple"):
        sample_latent(net, codec, batch=1, arch=arch, steps=1, frames=5, progress=False)


def test_text_conditional_latent_config():
    cfg = load_config("tiny-latent", ["conditional=true",
                                      "levels.1.components=[resblock, spatial_attn, "
                                      "temporal_attn, cross_attn]"])
    assert cfg.conditional
    net = VideoUNet(cfg)
    space = SearchSpace(cfg)
    assert space.full_params == sum(p.numel() for p in net.parameters())
    out = net(torch.randn(1, 4, 4, 8, 8), torch.tensor([3]), torch.randn(1, 5, cfg.text_dim),
              arch=space.preset("M", 8))
    assert out.shape == (1, 4, 4, 8, 8)
    with pytest.raises(ConfigError, match="conditional"):
        load_config("tiny-latent", ["levels.1.components=[resblock, cross_attn]"])


def test_existing_configs_serialise_unchanged():
    d = load_config("tiny-base").to_dict()
    assert not {"attention_order", "conditional", "autoencoder"} & set(d)
    assert sned.load_config(d) == load_config("tiny-base")


def _ssim_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Independent SSIM of two (H, W) float64 images in [0, 1] (valid 11x11 Gaussian, σ 1.5)."""
    from scipy.signal import convolve2d

    ax = np.arange(11) - 5.0
    g = np.exp(-ax ** 2 / (2 * 1.5 ** 2))
    w = np.outer(g, g) / np.outer(g, g).sum()

    def f(img):
        return convolve2d(img, w[::-1, ::-1], mode="valid")

    mx, my = f(x), f(y)
    vx, vy, cxy = f(x * x) - mx ** 2, f(y * y) - my ** 2, f(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    return float((((2 * mx * my + c1) * (2 * cxy + c2))
                  / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))).mean())


def test_psnr_and_ssim_against_reference():
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(1, 1, 1, 24, 24, generator=g) * 2 - 1
    noisy = (ref + 0.1 * torch.randn(ref.shape, generator=g)).clamp(-1, 1)
    a, b = ((noisy[0, 0, 0].double() + 1) / 2).numpy(), ((ref[0, 0, 0].double() + 1) / 2).numpy()
    mse = ((a - b) ** 2).mean()
    assert psnr(noisy, ref) == pytest.approx(10 * np.log10(1 / mse), rel=1e-9)
    assert ssim(noisy, ref) == pytest.approx(_ssim_reference(a, b), rel=1e-9)
    assert ssim(ref, ref) == pytest.approx(1.0)


def test_ae_losses_adversarial_and_perceptual(tmp_path):
    """Before ``disc_start`` no adversarial terms; after it the discriminator's gradient is that
    of its hinge loss alone (the generator term trains only the AE); a local TorchScript
    perceptual network adds its term."""
    from sned.train.tasks import AutoencoderTrainee

    class L1Net(torch.nn.Module):
        def forward(self, x, y):
            return (x - y).abs().flatten(1).mean(1)

    torch.jit.script(L1Net()).save(str(tmp_path / "lpips.pt"))
    cfg = load_autoencoder_config("tiny-ae", ["disc_start=2", "disc_layers=2", "disc_channels=8"])
    torch.manual_seed(0)
    net = AutoencoderTrainee(cfg)
    x = torch.rand(1, 3, 4, 16, 16) * 2 - 1
    before = net(x, step=1)
    assert "d" not in before and before["loss"].item() == pytest.approx(before["ae_loss"].item())
    out = net(x, step=2, generator=torch.Generator().manual_seed(0),
              perceptual=torch.jit.load(str(tmp_path / "lpips.pt")))
    assert {"g", "d", "perceptual"} <= set(out) and out["perceptual"] > 0
    out["loss"].backward()
    total = [p.grad.clone() for p in net.disc.parameters()]
    net.zero_grad()
    recon, _ = net.ae(x, generator=torch.Generator().manual_seed(0))
    d = 0.5 * (torch.relu(1 - net.disc(x)).mean() + torch.relu(1 + net.disc(recon.detach())).mean())
    d.backward()
    for a, b in zip(total, (p.grad for p in net.disc.parameters())):
        torch.testing.assert_close(a, b)
