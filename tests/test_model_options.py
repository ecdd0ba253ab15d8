"""Model options: Imagen's pooled text embedding and residual super-resolution (SSR)."""

import dataclasses

import pytest
import torch

import sned
from sned.config import ConfigError, LevelConfig, ModelConfig, config_from_dict
from sned.cost import model_cost
from sned.data.synthetic import SyntheticVideoDataset
from sned.data.transforms import resize_video
from sned.diffusion import DiffusionConfig, Objective, make_scheduler
from sned.models.unet import VideoUNet
from sned.pipelines.sampling import sample

NO_CROSS = ("resblock", "temporal_attn", "spatial_attn")


def _no_cross_attention(pooled: bool, pool: str = "mean") -> VideoUNet:
    cfg = ModelConfig(name="t", model_channels=16, levels=(LevelConfig(1, 1, NO_CROSS),),
                      mid_components=NO_CROSS, heads=(1,), head_dim=8, norm_group_size=8,
                      text_dim=12, time_embed_dim=32, frames=2, resolutions=(8,),
                      pooled_text=pooled, text_pool=pool)
    torch.manual_seed(0)
    model = VideoUNet(cfg).eval()
    for p in model.parameters():  # zero-initialised out layers would hide the caption
        torch.nn.init.normal_(p, std=0.2)
    return model


def _forward(model, text, mask):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 2, 8, 8, generator=g)
    with torch.no_grad():
        return model(x, torch.tensor([10, 500]), text, mask)


@pytest.mark.parametrize("pool", ["mean", "attention"])
def test_pooled_text_conditions_a_model_without_cross_attention(pool):
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 2, 5, 12, generator=g)
    mask = torch.ones(2, 5, dtype=torch.bool)
    plain = _no_cross_attention(pooled=False)
    assert torch.equal(_forward(plain, a, mask), _forward(plain, b, mask))  # deaf to text
    pooled = _no_cross_attention(pooled=True, pool=pool)
    assert (_forward(pooled, a, mask) - _forward(pooled, b, mask)).abs().max() > 1e-3
    # a dropped caption pools to the null token alone, whatever its (masked) tokens are
    off = torch.zeros_like(mask)
    assert torch.allclose(_forward(pooled, a, off), _forward(pooled, b, off), atol=1e-6)
    # padding does not change the pooled embedding
    pad = torch.cat([a, torch.randn(2, 3, 12, generator=g)], dim=1)
    pad_mask = torch.cat([mask, torch.zeros(2, 3, dtype=torch.bool)], dim=1)
    assert torch.allclose(_forward(pooled, a, mask), _forward(pooled, pad, pad_mask), atol=1e-5)


def test_attention_pool_tells_apart_captions_whose_mean_is_equal():
    """The point of ``text_pool: attention`` (issue 31): two captions with the same mean token
    (the same words in another order and weight, as "left" and "right" nearly are for MiniLM)
    pool alike under the mean and apart under attention; the cost model counts it."""
    g = torch.Generator().manual_seed(2)
    a = torch.randn(2, 5, 12, generator=g)
    b = a.flip(1) * torch.tensor([1.0, -1.0, 0.0, -1.0, 1.0]).view(1, 5, 1)
    b = b + (a.mean(1, keepdim=True) - b.mean(1, keepdim=True))  # same mean, other tokens
    mask = torch.ones(2, 5, dtype=torch.bool)
    mean, att = _no_cross_attention(True, "mean"), _no_cross_attention(True, "attention")
    assert torch.allclose(_forward(mean, a, mask), _forward(mean, b, mask), atol=1e-5)
    assert (_forward(att, a, mask) - _forward(att, b, mask)).abs().max() > 1e-3
    extra = sum(p.numel() for p in att.text_attention_pool.parameters())
    assert sum(p.numel() for p in att.parameters()) == sum(
        p.numel() for p in mean.parameters()) + extra
    assert model_cost(att.config, None, 8, 2).params - model_cost(mean.config, None, 8, 2).params == extra


@pytest.mark.parametrize("raw,key", [
    ({"kind": "base", "pooled_text": "yes"}, "pooled_text"),
    ({"kind": "base", "pooled_text": True, "text_pool": "max"}, "text_pool"),
    ({"kind": "base", "pooled_text": False, "text_pool": "attention"}, "text_pool"),
    ({"kind": "base", "conditional": False, "mid_components": list(NO_CROSS),
      "levels": [{"mult": 1, "blocks": 1, "components": list(NO_CROSS)}], "heads": [1],
      "pooled_text": True}, "pooled_text"),
    ({"kind": "base", "ssr_residual": True}, "ssr_residual"),
    ({"kind": "ssr", "ssr_residual": True, "ssr_residual_scale": 0}, "ssr_residual_scale"),
])
def test_bad_option_values_name_the_key(raw, key):
    with pytest.raises(ConfigError, match=key):
        config_from_dict(raw)


def test_ssr_pair_residual_adds_back_exactly():
    video = torch.stack([SyntheticVideoDataset(2, 3, 32, seed=4)[i]["video"] for i in range(2)])
    obj = Objective(DiffusionConfig())
    low, x0 = obj.ssr_pair(video)
    assert low.shape == (2, 3, 3, 16, 16) and torch.equal(x0, video)
    low_r, res = obj.ssr_pair(video, residual_scale=1.0)
    assert torch.equal(low_r, low)
    assert torch.allclose(res + obj.ssr_base(low, 32), video, atol=1e-6)
    assert res.std() < 0.5 * video.std()  # the residual is the detail, not the picture
    assert torch.allclose(low, resize_video(video, 16))
    _, scaled = obj.ssr_pair(video, residual_scale=0.1)
    assert torch.allclose(scaled, res / 0.1, atol=1e-5)
    assert torch.allclose(obj.ssr_output(scaled, low, 0.1), video, atol=1e-5)
    assert torch.equal(obj.ssr_output(video, low, None), video)


def _ideal_zero_residual(model, diffusion):
    """Make ``model`` predict v for a clean residual of exactly 0 (x_t = σ_t ε)."""
    ac = make_scheduler(diffusion, "ddpm").alphas_cumprod

    def forward(sample, timestep, *args, **kwargs):
        a = ac[timestep.long()].sqrt().view(-1, 1, 1, 1, 1)
        s = (1 - ac[timestep.long()]).sqrt().view(-1, 1, 1, 1, 1)
        return a * sample / s  # v = α ε − σ x0 with x0 = 0, ε = x_t / σ

    model.forward = forward
    return model


@pytest.mark.parametrize("residual", [False, True])
def test_residual_ssr_sampling_adds_the_upsampled_input(residual):
    cfg = dataclasses.replace(sned.load_config("tiny-ssr"), ssr_residual=residual,
                              ssr_residual_scale=0.25)
    model = _ideal_zero_residual(VideoUNet(cfg), DiffusionConfig())
    g = torch.Generator().manual_seed(0)
    low = torch.rand(2, 3, 2, 16, 16, generator=g) * 2 - 1
    out = sample(model, torch.zeros(2, 4, cfg.text_dim), steps=8, lowres=low,
                 resolution=32, progress=False, clamp=False)
    up = Objective.ssr_base(low, 32)
    if residual:  # the ideal denoiser says "no detail": the output is the upsampled input
        assert torch.allclose(out, up, atol=1e-3)
    else:  # without the residual, x0 = 0 is a grey video
        assert out.abs().max() < 1e-3


def test_trainer_diffuses_the_residual(tmp_path, monkeypatch):
    from sned.train.config import load_run_config
    from sned.train.trainer import Trainer

    run = load_run_config("tiny-ssr", ["model.frames=2", "data.num_videos=4",
                                       "train.batch_size=2", "train.warmup_steps=0",
                                       "model.ssr_residual=true",
                                       "model.ssr_residual_scale=0.5"])
    pair, noisy = Objective.ssr_pair, Objective.noisy
    clips, diffused = [], []
    monkeypatch.setattr(Objective, "ssr_pair", lambda self, v, residual=False: (
        clips.append(v.detach().clone()), pair(self, v, residual))[1])
    monkeypatch.setattr(Objective, "noisy", lambda self, x0, noise, t: (
        diffused.append(x0.detach().clone()), noisy(self, x0, noise, t))[1])
    Trainer(run, tmp_path / "r", progress=False).fit(1)
    clip = clips[0]
    low = resize_video(clip, clip.shape[-1] // 2)
    assert torch.allclose(diffused[0], (clip - resize_video(low, clip.shape[-1])) / 0.5,
                          atol=1e-5)
