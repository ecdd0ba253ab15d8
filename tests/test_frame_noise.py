"""Noise shared between the frames of a clip (``diffusion.frame_noise_share``, PYoCo's mixed
prior): unit variance, the asked-for correlation between frames, none between clips, and the
same stream as before when off — for training, the validation loss and sampling alike."""

from __future__ import annotations

import pytest
import torch

import sned
from sned.diffusion import DiffusionConfig, Objective, frame_noise
from sned.pipelines.sampling import generators, initial_noise
from sned.search.proxy import ValLossProxy


def test_off_is_exactly_the_old_stream():
    a = frame_noise((2, 3, 4, 5, 5), 0.0, torch.Generator().manual_seed(1))
    assert torch.equal(a, torch.randn((2, 3, 4, 5, 5), generator=torch.Generator().manual_seed(1)))


@pytest.mark.parametrize("share", [0.3, 0.7])
def test_frames_share_the_asked_for_variance(share):
    x = frame_noise((64, 3, 4, 16, 16), share, torch.Generator().manual_seed(0))
    assert float(x.var()) == pytest.approx(1.0, abs=0.02)
    frames = x.transpose(1, 2).reshape(64, 4, -1)                  # (clip, frame, values)
    same_clip = (frames[:, 0] * frames[:, 1]).mean()
    other_clip = (frames[:-1, 0] * frames[1:, 1]).mean()
    assert float(same_clip) == pytest.approx(share, abs=0.03)
    assert abs(float(other_clip)) < 0.03


def test_config_validates_the_share():
    with pytest.raises(ValueError, match="frame_noise_share must be in"):
        DiffusionConfig(frame_noise_share=1.0)


def test_sampling_and_val_loss_draw_the_models_noise():
    gens = generators(0, 2)
    x = initial_noise((2, 3, 4, 8, 8), gens, frame_share=0.6)
    ref = [frame_noise((1, 3, 4, 8, 8), 0.6, g) for g in generators(0, 2)]
    assert torch.equal(x, torch.cat(ref))
    model = sned.build_supernet("tiny-base", ["frames=4"]).eval()
    videos = torch.zeros(3, 3, 4, 16, 16)                           # x_t is then pure noise
    text = (torch.zeros(3, 2, 384), torch.ones(3, 2, dtype=torch.bool))
    diff = DiffusionConfig(frame_noise_share=0.6)
    proxy = ValLossProxy(model, diff, videos, text, seed=5)
    g = torch.Generator().manual_seed(5)
    torch.rand(3, generator=g), torch.randperm(3, generator=g)      # the timesteps' draws
    noise = Objective(diff).noise(videos.shape, g)
    assert torch.allclose(proxy.xt, Objective(diff).noisy(videos, noise, proxy.t)[0])
