"""Agreement with the teacher's samples: PSNR / SSIM of deterministic DDIM samples.

Image FID / KID need Inception weights that the usual packages fetch at run time (no internet
here), so next to the validation loss each model gets this: from the same initial noise and the
same prompts, ``steps`` DDIM steps (η = 0, no guidance: a deterministic map from noise to
sample) of the model and of the teacher, compared frame by frame in pixel space (latent models:
both decoded by the teacher's autoencoder). It measures how closely a model reproduces the
teacher's outputs — not sample quality, diversity or fidelity to the data.
"""

from __future__ import annotations

import torch

from ..metrics.reconstruction import psnr, ssim
from ..models.unet import VideoUNet
from ..pipelines.latent import sample_latent
from ..pipelines.sampling import sample


def generate(model: VideoUNet, diffusion, emb: torch.Tensor, mask: torch.Tensor, steps: int,
             seed: int, codec=None, batch: int = 8) -> torch.Tensor:
    """(N, 3, T, H, W) videos in [-1, 1], N = ``emb.shape[0]``: deterministic DDIM from the
    noise of ``seed`` (sample i always gets the same noise), decoded by ``codec`` if given."""
    out = []
    for i in range(0, emb.shape[0], batch):
        e, m = emb[i:i + batch], mask[i:i + batch]
        kw = dict(diffusion=diffusion, scheduler="ddim", steps=steps, guidance_scale=1.0,
                  seed=[seed + i + j for j in range(e.shape[0])], progress=False,
                  dtype="fp32")
        if codec is None:
            out.append(sample(model, e, m, **kw).cpu())
        elif model.config.conditional:
            out.append(sample_latent(model, codec, e, m, **kw).cpu())
        else:
            out.append(sample_latent(model, codec, None, None, batch=e.shape[0], **kw).cpu())
    return torch.cat(out)


def agreement(videos: torch.Tensor, reference: torch.Tensor) -> dict:
    """``{psnr, ssim, n}`` of ``videos`` against the teacher's ``reference`` (same noise)."""
    return {"psnr": psnr(videos, reference), "ssim": ssim(videos, reference),
            "n": int(videos.shape[0])}
