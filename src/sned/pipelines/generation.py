"""Sample prompts through a loaded cascade and write the videos (what ``sned sample`` does).

File names: ``<prompt-slug>_<labels>_<R>px_seed<N>.<fmt>`` where ``<labels>`` joins the stages'
labels (preset names, also for extracted model folders) with ``-``; plus one PNG grid per call.
Prompt ``i`` is seeded with ``seed + i``. Latent models (a base with a codec) denoise latents and
decode them through their autoencoder; unconditional ones take no prompts (``uncond`` in file
names, ``num`` videos).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..models.codec import to_latent
from ..text import TextEncoder
from ..video_io import to_uint8, write_frame_grid, write_video
from . import sample_latent
from .cascade import Stage, generate
from .loading import Denoiser

FORMATS = ("mp4", "gif", "png")


def slug(text: str, limit: int = 40) -> str:
    """File-name-safe lower-case slug of ``text`` (at most ``limit`` characters)."""
    s = re.sub(r"[^a-zA-Z0-9]+", "-", text.strip().lower()).strip("-")
    return s[:limit] or "empty"


def generate_videos(base: Denoiser, ssr: list[Denoiser], prompts: list[str], out: Path, *,
                    resolution: int | None = None, frames: int | None = None, steps: int = 50,
                    scheduler: str = "ddim", cfg: float = 5.0,
                    dynamic_threshold: float | None = None, aug_level: float = 0.2,
                    seed: int = 0, dtype: torch.dtype | str | None = "auto",
                    formats=FORMATS, fps: float = 8, progress: bool = True,
                    num: int | None = None) -> list[Path]:
    """Sample ``prompts`` through ``base`` → ``ssr`` (from :func:`sned.loading.load_cascade`)
    and write one file per prompt and video format, plus a PNG grid of all prompts.

    ``num``: videos of an unconditional latent model (default 1); an unconditional model given
    prompts, or a conditional one given ``num``, is a ValueError (nothing is ignored)."""
    device = next(base.model.parameters()).device
    if not base.config.conditional and prompts:
        raise ValueError(f"--prompt: {base.source} is an unconditional model (it takes no "
                         f"text); leave out --prompt and pass --num N for N videos")
    if base.config.conditional and num is not None:
        raise ValueError(f"--num {num}: {base.source} is text-conditional; it makes one video "
                         f"per --prompt")
    if not base.config.conditional:
        prompts = ["uncond"] * (num or 1)
        emb, mask = None, None
    elif not prompts:
        raise ValueError(f"no prompts: {base.source} is text-conditional; pass --prompt TEXT")
    else:
        text = TextEncoder(max_length=base.config.text_len, device=str(device))
        emb, mask = text.encode(prompts)
    if base.codec is not None:
        video = _sample_latent(base, emb, mask, len(prompts), resolution, frames, steps,
                               scheduler, cfg, dynamic_threshold, seed, progress, dtype)
    else:
        video = generate(emb, mask, base=Stage.from_denoiser(base),
                         ssr=[Stage.from_denoiser(s) for s in ssr] or None,
                         final_resolution=resolution, steps=steps, scheduler=scheduler,
                         guidance_scale=cfg, dynamic_threshold=dynamic_threshold,
                         aug_level=aug_level, seed=seed, frames=frames, progress=progress,
                         dtype=dtype)
    frames_u8 = to_uint8(video)
    res = video.shape[-1]
    tag = "-".join([base.label] + [s.label for s in ssr])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for i, prompt in enumerate(prompts):
        stem = f"{slug(prompt)}_{tag}_{res}px_seed{seed + i}"
        for fmt in formats:
            if fmt in ("mp4", "gif"):
                files.append(write_video(out / f"{stem}.{fmt}", frames_u8[i], fps=fps))
    if "png" in formats:
        files.append(write_frame_grid(out / f"grid_{tag}_{res}px_seed{seed}.png", frames_u8))
    return [Path(f) for f in files]


def _sample_latent(base: Denoiser, emb, mask, n: int, resolution, frames, steps, scheduler,
                   cfg, dynamic_threshold, seed, progress, dtype):
    """A latent base: denoise latents at the arch's (or, extracted, the asked) resolution and
    decode them (:func:`sned.pipelines.sample_latent`)."""
    latent_res = None
    if base.arch is None and resolution is not None:
        latent_res, _ = to_latent(base.config, resolution)
    return sample_latent(base.model, base.codec, emb, mask, batch=n, arch=base.arch,
                         resolution=latent_res, diffusion=base.diffusion, frames=frames,
                         steps=steps, scheduler=scheduler, guidance_scale=cfg,
                         dynamic_threshold=dynamic_threshold, seed=seed, progress=progress,
                         dtype=dtype)
