"""Latent sampling: denoise latents with :func:`~sned.pipelines.sampling.sample`, then decode.

The denoiser (supernet + arch, or extracted model) runs on normalised latents; the codec's
decoder turns them into a video at the pixel resolution. Frames are given in *video* frames and
must be a multiple of the autoencoder's temporal factor.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..models.codec import LatentCodec
from ..models.unet import VideoUNet
from .sampling import sample

__all__ = ["sample_latent"]


@torch.no_grad()
def sample_latent(model: VideoUNet, codec: LatentCodec, text_embeds: Tensor | None = None,
                  text_mask: Tensor | None = None, *, batch: int | None = None,
                  frames: int | None = None, clamp: bool = True, **kw) -> Tensor:
    """Generate ``batch`` videos (unconditional models) or one per caption.

    Args:
        model / codec: the latent denoiser and its autoencoder + latent normalisation.
        text_embeds / text_mask: (B, L, D) captions for text-conditional models; unconditional
            models take None and ``batch``.
        frames: video frames (default: the config's latent frames × the temporal factor).
        **kw: everything else :func:`sample` takes (``arch``, ``resolution`` — the *latent*
            side —, ``steps``, ``scheduler``, ``seed``, ...).
    Returns:
        (B, 3, T, H, W) float32 video in [-1, 1] (when ``clamp``), H = latent side × the
        autoencoder's spatial factor.
    """
    cfg = model.config
    if cfg.in_channels != codec.config.latent_channels:
        raise ValueError(f"model {cfg.name!r} takes {cfg.in_channels} channels but the "
                         f"autoencoder's latents have {codec.config.latent_channels}")
    latent_frames = None if frames is None else codec.latent_frames(int(frames))
    if text_embeds is None:
        if cfg.conditional:
            raise ValueError(f"model {cfg.name!r} is text-conditional: pass text embeddings")
        if batch is None or batch < 1:
            raise ValueError(f"an unconditional model needs batch >= 1 (got {batch!r})")
        text_embeds = torch.zeros(batch, 1, cfg.text_dim)
        kw["guidance_scale"] = 1.0
    elif not cfg.conditional:
        kw["guidance_scale"] = 1.0  # nothing to guide: the model ignores text
    latents = sample(model, text_embeds, text_mask, frames=latent_frames, clamp=False, **kw)
    video = codec.decode(latents)
    return video.clamp(-1.0, 1.0) if clamp else video
