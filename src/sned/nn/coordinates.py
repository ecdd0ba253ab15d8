"""Coordinate planes for the first convolution (``position_input: xyt``; CoordConv, Liu et al.
2018): a convolutional UNet fed pure noise knows where it is only from zero padding, so it cannot
place an object by its caption at the noise levels where sampling decides the layout."""

from __future__ import annotations

import torch
from torch import Tensor

from ..config import POSITION_CHANNELS  # noqa: F401  (the planes below: x, y, frame index)


def coordinate_planes(batch: int, frames: int, height: int, width: int,
                      like: Tensor) -> Tensor:
    """(batch * frames, 3, height, width) planes in [−1, 1], frame-major within each clip like
    the UNet's (B*T, C, H, W) layout: x grows left → right, y top → bottom, and the third plane
    is the frame's index in the clip (−1 first, +1 last; 0 for a single frame). dtype and
    device follow ``like``."""
    def axis(n: int) -> Tensor:
        if n == 1:
            return torch.zeros(1, device=like.device, dtype=like.dtype)
        return torch.linspace(-1.0, 1.0, n, device=like.device, dtype=like.dtype)

    x = axis(width).view(1, 1, width).expand(1, height, width)
    y = axis(height).view(1, height, 1).expand(1, height, width)
    space = torch.cat([x, y]).unsqueeze(0).expand(batch * frames, 2, height, width)
    f = axis(frames).repeat(batch).view(batch * frames, 1, 1, 1).expand(-1, 1, height, width)
    return torch.cat([space, f], dim=1)
