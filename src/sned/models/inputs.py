"""Example forward inputs for any sned model (tests, benchmarks, smoke checks)."""

from __future__ import annotations

import torch

from .unet import VideoUNet


def example_inputs(model: VideoUNet, batch: int = 2, resolution: int | None = None,
                   frames: int | None = None, seed: int = 0, text_len: int | None = None
                   ) -> dict[str, torch.Tensor]:
    """Keyword arguments of a valid ``model(**kwargs)`` call, on the model's device and dtype.

    Returns ``sample`` (B, C, T, H, W), ``timestep`` (B,), ``encoder_hidden_states``
    (B, L, text_dim), ``encoder_attention_mask`` (B, L) with some padding, and for SSR models
    ``lowres`` (B, C, T, H, W) (the upsampled, noised condition) and ``noise_aug_level`` (B,).
    ``resolution`` defaults to the extracted model's arch resolution, else the config's first.
    """
    cfg = model.config
    p = next(model.parameters())
    if resolution is None:
        resolution = model.arch.resolution if model.arch is not None else cfg.resolutions[0]
    frames = cfg.frames if frames is None else frames
    length = cfg.text_len if text_len is None else text_len
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g).to(device=p.device, dtype=p.dtype)

    mask = torch.ones(batch, length, dtype=torch.bool)
    for i in range(batch):  # later samples get shorter captions
        mask[i, max(1, length - i * max(1, length // 4)):] = False
    kw = {
        "sample": randn(batch, cfg.in_channels, frames, resolution, resolution),
        "timestep": torch.randint(0, 1000, (batch,), generator=g).to(p.device),
        "encoder_hidden_states": randn(batch, length, cfg.text_dim),
        "encoder_attention_mask": mask.to(p.device),
    }
    if cfg.kind == "ssr":
        kw["lowres"] = randn(batch, cfg.in_channels, frames, resolution, resolution)
        kw["noise_aug_level"] = torch.rand(batch, generator=g).to(device=p.device, dtype=p.dtype)
    return kw
