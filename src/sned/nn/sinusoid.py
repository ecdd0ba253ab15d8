"""The sinusoidal embedding of a position or timestep: the timestep embedding and the absolute
frame positions of temporal attention (``frame_position: rotary+absolute``) share it."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """t: (N,) float or int → (N, dim) float32: ``[cos(t·f_i), sin(t·f_i)]`` with
    f_i = max_period^(−i/half), i < half = dim // 2; an odd last channel is 0."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device,
                                                           dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))
