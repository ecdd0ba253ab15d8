"""Reconstruction quality of an autoencoder: PSNR and SSIM of videos in [-1, 1].

Both are computed per frame on values mapped to [0, 1] (data range 1) and averaged over frames,
channels and clips. SSIM is Wang et al. (2004): an 11×11 Gaussian window with σ = 1.5 (valid
positions only), K1 = 0.01, K2 = 0.03.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _frames01(video: Tensor) -> Tensor:
    """(B, C, T, H, W) in [-1, 1] → (B·T, C, H, W) float64 in [0, 1]."""
    b, c, t, h, w = video.shape
    x = ((video.double().clamp(-1, 1) + 1) / 2)
    return x.transpose(1, 2).reshape(b * t, c, h, w)


def psnr(video: Tensor, reference: Tensor) -> float:
    """Mean per-frame PSNR (dB) of ``video`` against ``reference``, both (B, C, T, H, W)."""
    _check(video, reference)
    mse = (_frames01(video) - _frames01(reference)).square().flatten(1).mean(1)
    return float((10 * torch.log10(1.0 / mse.clamp(min=1e-12))).mean())


def _gaussian(size: int = 11, sigma: float = 1.5) -> Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return g / g.sum()


def ssim(video: Tensor, reference: Tensor, window: int = 11, sigma: float = 1.5) -> float:
    """Mean SSIM of ``video`` against ``reference`` (B, C, T, H, W); frames smaller than the
    window use a window of their size."""
    _check(video, reference)
    x, y = _frames01(video), _frames01(reference)
    n, c, h, w = x.shape
    size = min(window, h, w)
    g = _gaussian(size, sigma * size / window)
    k = (g[:, None] * g[None, :]).expand(c, 1, size, size).to(x.device)

    def blur(z: Tensor) -> Tensor:
        return F.conv2d(z, k, groups=c)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(s.mean())


def _check(a: Tensor, b: Tensor) -> None:
    if a.shape != b.shape or a.ndim != 5:
        raise ValueError(f"videos must both be (B, C, T, H, W) of one shape; got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")


def reconstruction_quality(ae, videos: Tensor, batch: int = 4) -> dict[str, float]:
    """PSNR and SSIM of ``ae``'s reconstructions (posterior mean) of ``videos`` (N, 3, T, H, W)."""
    p = next(ae.parameters())
    recs = []
    with torch.no_grad():
        for i in range(0, videos.shape[0], batch):
            v = videos[i:i + batch].to(p.device, p.dtype)
            recs.append(ae.decode(ae.encode(v).mode()).float().cpu())
    rec = torch.cat(recs)
    v = videos.float().cpu()
    out = {"psnr": psnr(rec, v), "ssim": ssim(rec, v)}
    return {k: (round(x, 4) if math.isfinite(x) else x) for k, x in out.items()}
