"""Cascade consistency: does an SSR stage keep what it was conditioned on?

The SSR output, downsampled back to its input resolution with the same antialiased resize that
makes the training pairs (:func:`sned.data.transforms.resize_video`), is compared with the video
the stage was conditioned on. High PSNR = the super-resolved video is a faithful upsampling;
low PSNR = the SSR stage changed the content (colour, position, motion).
"""

from __future__ import annotations

import numpy as np
import torch

from ..data.transforms import resize_video


def _float01(video_u8: np.ndarray) -> torch.Tensor:
    """uint8 (N, T, H, W, 3) → float32 (N, 3, T, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(video_u8)).permute(0, 4, 1, 2, 3).float() / 255


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-video PSNR in dB of (N, ...) tensors in [0, 1]: ``10 log10(1 / MSE)`` (capped at
    100 dB for identical videos)."""
    mse = (a - b).flatten(1).square().mean(1)
    return (10 * torch.log10(1.0 / mse.clamp_min(1e-10))).clamp(max=100.0)


def ssr_consistency(output_u8: np.ndarray, input_u8: np.ndarray) -> np.ndarray:
    """PSNR (dB, per video) of the SSR output downsampled to its input's size vs the input.

    Args:
        output_u8: (N, T, 2h, 2w, 3) uint8 SSR output.
        input_u8: (N, T, h, w, 3) uint8 video it was conditioned on.
    Returns:
        (N,) float64.
    """
    out, inp = _float01(output_u8), _float01(input_u8)
    if out.shape[:3] != inp.shape[:3]:
        raise ValueError(f"output {tuple(output_u8.shape)} and input {tuple(input_u8.shape)} "
                         f"differ in videos or frames")
    down = resize_video(out, inp.shape[-1]).clamp(0, 1)
    return psnr(down, inp).double().numpy()
