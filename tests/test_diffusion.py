"""The diffusion process: Imagen's dynamic thresholding, timestep spacing of every sampler and
the SSR condition (upsample, then noise), each against an independent computation."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sned.diffusion import SAMPLERS, DiffusionConfig, Objective, make_scheduler


def _imagen_threshold(x0: np.ndarray, p: float) -> np.ndarray:
    """Imagen (Saharia et al. 2022, §2.3): s = max(1, percentile(|x0|, p)) per sample,
    x0 <- clip(x0, -s, s) / s."""
    flat = x0.reshape(x0.shape[0], -1)
    s = np.maximum(1.0, np.percentile(np.abs(flat), 100 * p, axis=1))[:, None]
    return (np.clip(flat, -s, s) / s).reshape(x0.shape)


def _x0_batch() -> torch.Tensor:
    """(3, 3, 2, 4, 4): one sample inside [-1, 1], two far outside (s = 1 vs s > 1)."""
    g = torch.Generator().manual_seed(0)
    scale = torch.tensor([0.3, 2.0, 5.0]).view(3, 1, 1, 1, 1)
    return torch.randn(3, 3, 2, 4, 4, generator=g, dtype=torch.float64) * scale


@pytest.mark.parametrize("kind", SAMPLERS)
def test_dynamic_thresholding_is_imagens_rule(kind):
    cfg = DiffusionConfig(prediction_type="epsilon", beta_schedule="linear")
    sched = make_scheduler(cfg, kind, dynamic_threshold=0.9)
    sched.set_timesteps(10)
    t = int(sched.timesteps[3])
    ac = float(sched.alphas_cumprod[t])
    x0 = _x0_batch()
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    xt = ac ** 0.5 * x0 + (1 - ac) ** 0.5 * eps
    out = sched.step(eps, t, xt)
    # DPM-Solver++ keeps the model output converted to the (thresholded) x0 for its history
    got = sched.model_outputs[-1] if kind == "dpm" else out.pred_original_sample
    ref = _imagen_threshold(x0.numpy(), 0.9)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-5)  # fp32 alphas
    # the rule really rescales: a sample far outside [-1, 1] is not merely clipped
    assert np.abs(ref[2]).max() == pytest.approx(1.0) and (np.abs(ref[2]) < 0.99).mean() > 0.5


@pytest.mark.parametrize("kind", SAMPLERS)
@pytest.mark.parametrize("steps", [10, 50, 7])
def test_every_sampler_uses_trailing_spacing(kind, steps):
    """Each sampler starts at t = T-1 on pure noise and steps down in equal strides."""
    sched = make_scheduler(DiffusionConfig(), kind)
    sched.set_timesteps(steps)
    ts = sched.timesteps.tolist()
    expected = np.round(np.arange(1000, 0, -1000 / steps)).astype(int) - 1
    assert ts == expected.tolist()
    assert ts[0] == 999


def test_ssr_condition_upsamples_then_noises():
    """Imagen augments the condition at the target resolution: noise(upsample(low))."""
    cfg = DiffusionConfig()
    obj = Objective(cfg)
    g = torch.Generator().manual_seed(0)
    low = torch.rand(2, 3, 2, 8, 8, generator=g) * 2 - 1
    noise = torch.randn(2, 3, 2, 16, 16, generator=g)
    level = torch.tensor([0.0, 0.6])
    got = obj.augment_lowres(low, level, noise)
    assert got.shape == (2, 3, 2, 16, 16)
    # independent: bilinear antialiased upsampling per frame, then q(x_t | x_0) by hand
    frames = low.transpose(1, 2).reshape(4, 3, 8, 8)
    up = F.interpolate(frames, size=(16, 16), mode="bilinear", align_corners=False,
                       antialias=True).reshape(2, 2, 3, 16, 16).transpose(1, 2)
    t = (level * 999).round().long()
    ac = obj.scheduler.alphas_cumprod[t].view(2, 1, 1, 1, 1)
    ref = ac.sqrt() * up + (1 - ac).sqrt() * noise
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


def test_trainer_noises_the_upsampled_condition(tmp_path):
    """The trainer's SSR condition is at the target resolution, and what remains after removing
    the upsampled clean part is unit-variance white noise (noise drawn at low resolution and then
    upsampled would be smoothed to a clearly smaller variance)."""
    from sned.train.config import load_run_config
    from sned.data.transforms import resize_video
    from sned.train.trainer import Trainer

    run = load_run_config("tiny-ssr", ["model.frames=2", "train.batch_size=4"])
    tr = Trainer(run, tmp_path / "run", progress=False)
    g = torch.Generator().manual_seed(0)
    video = torch.rand(4, 3, 2, 64, 64, generator=g) * 2 - 1
    emb, mask = torch.zeros(4, 16, 384), torch.ones(4, 16, dtype=torch.bool)
    inputs, _, _ = tr.noised_inputs(video, emb, mask, 0)
    cond, level = inputs["lowres"], inputs["noise_aug_level"]
    assert cond.shape == video.shape
    up = resize_video(resize_video(video, 32), 64)
    t = (level * 999).round().long()
    ac = tr.objective.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1, 1)
    implied = (cond - ac.sqrt() * up) / (1 - ac).sqrt()
    checked = [i for i in range(4) if level[i] > 0.1]
    assert checked
    for i in checked:
        assert abs(implied[i].std().item() - 1.0) < 0.05 and abs(implied[i].mean()) < 0.05
    out = tr.model(**inputs)  # the model consumes the condition at its own resolution
    assert out.shape == video.shape
