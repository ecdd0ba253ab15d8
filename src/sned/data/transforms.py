"""Frame transforms shared by the datasets: uint8 frames → model-range video tensors."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def resize_center_crop(frames: Tensor, resolution: int) -> Tensor:
    """Resize the short side to ``resolution`` (antialiased bilinear), then center-crop square.

    Args:
        frames: (T, C, H, W) float tensor.
        resolution: output side.
    Returns:
        (T, C, resolution, resolution) float tensor.
    """
    t, c, h, w = frames.shape
    scale = resolution / min(h, w)
    nh, nw = max(resolution, round(h * scale)), max(resolution, round(w * scale))
    if (nh, nw) != (h, w):
        frames = F.interpolate(frames, size=(nh, nw), mode="bilinear", align_corners=False,
                               antialias=True)
    top, left = (nh - resolution) // 2, (nw - resolution) // 2
    return frames[:, :, top:top + resolution, left:left + resolution]


def resize_video(video: Tensor, size: int) -> Tensor:
    """Antialiased bilinear resize of (B, C, T, H, W) to (B, C, T, size, size)."""
    b, c, t, h, w = video.shape
    if (h, w) == (size, size):
        return video
    frames = video.transpose(1, 2).reshape(b * t, c, h, w)
    frames = F.interpolate(frames, size=(size, size), mode="bilinear", align_corners=False,
                           antialias=True)
    return frames.reshape(b, t, c, size, size).transpose(1, 2)


def frames_to_video(frames: np.ndarray | Tensor, resolution: int) -> Tensor:
    """uint8 RGB frames → model input video.

    Args:
        frames: (T, H, W, 3) uint8 array/tensor.
        resolution: output side.
    Returns:
        (3, T, resolution, resolution) float32 in [-1, 1].
    """
    x = torch.as_tensor(np.ascontiguousarray(frames) if isinstance(frames, np.ndarray)
                        else frames)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected (T, H, W, 3) frames, got shape {tuple(x.shape)}")
    x = x.permute(0, 3, 1, 2).to(torch.float32)          # (T, 3, H, W) in [0, 255]
    x = resize_center_crop(x, resolution)
    return (x / 127.5 - 1.0).clamp_(-1.0, 1.0).permute(1, 0, 2, 3).contiguous()


def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch dataset items: ``video`` → (B, 3, T, H, W) tensor; every other key → a list.

    Unlike ``torch.utils.data.default_collate`` this keeps ``attributes`` dicts (whose object
    lists differ in length between items) and strings as plain Python lists.
    """
    if not batch:
        raise ValueError("cannot collate an empty batch")
    out: dict[str, Any] = {"video": torch.stack([item["video"] for item in batch])}
    for key in batch[0]:
        if key != "video":
            out[key] = [item[key] for item in batch]
    return out
