"""Elastic layers: each owns the FULL weight and runs on a view of its active part.

Every elastic layer has one ``active_weights(...)`` method that returns the sliced parameter
views. ``forward`` uses it, and so does extraction (:func:`sned.extract.weight_pairs` copies
those views into the plain ``nn.Conv2d`` / ``nn.Linear`` / ``nn.GroupNorm`` of an extracted
model) — export can never drift from training. Slices are prefixes (``weight[:out, :in]``), so the active part of a narrow subnet
is exactly the first channels of the wide one.

Called without widths, an elastic layer behaves exactly like its static counterpart.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ElasticLinear(nn.Linear):
    """``nn.Linear`` whose input and/or output features can be a prefix of the full ones."""

    def active_weights(self, in_features: int | None = None, out_features: int | None = None
                       ) -> tuple[Tensor, Tensor | None]:
        """Views ``weight[:out, :in]`` (out, in) and ``bias[:out]`` (out,)."""
        o = self.out_features if out_features is None else out_features
        i = self.in_features if in_features is None else in_features
        _check_width(self, "out_features", o, self.out_features)
        _check_width(self, "in_features", i, self.in_features)
        bias = None if self.bias is None else self.bias[:o]
        return self.weight[:o, :i], bias

    def forward(self, x: Tensor, in_features: int | None = None,
                out_features: int | None = None) -> Tensor:
        """x: (..., in) → (..., out)."""
        w, b = self.active_weights(in_features, out_features)
        return F.linear(x, w, b)



class ElasticConv2d(nn.Conv2d):
    """``nn.Conv2d`` (used per frame: a 1×3×3 video conv) with elastic in/out channels and an
    elastic (odd, square) kernel size.

    A smaller kernel is the CENTRE slice of the full kernel (once-for-all), run with its padding
    reduced by the same amount, so a "same" conv stays "same". Groups must be 1; stride and
    dilation are those of the full layer.
    """

    def active_weights(self, in_channels: int | None = None, out_channels: int | None = None,
                       kernel: int | None = None) -> tuple[Tensor, Tensor | None]:
        """Views ``weight[:out, :in, c-k//2:c+k//2+1, c-k//2:c+k//2+1]`` (out, in, k, k) and
        ``bias[:out]``."""
        o = self.out_channels if out_channels is None else out_channels
        i = self.in_channels if in_channels is None else in_channels
        _check_width(self, "out_channels", o, self.out_channels)
        _check_width(self, "in_channels", i, self.in_channels)
        bias = None if self.bias is None else self.bias[:o]
        w = self.weight[:o, :i]
        if kernel is not None and kernel != self.kernel_size[0]:
            lo = self._kernel_offset(kernel)
            w = w[:, :, lo:lo + kernel, lo:lo + kernel]
        return w, bias

    def _kernel_offset(self, kernel: int) -> int:
        full = self.kernel_size[0]
        if self.kernel_size[0] != self.kernel_size[1] or kernel % 2 == 0 or not 1 <= kernel <= full:
            raise ValueError(f"{type(self).__name__}: active kernel {kernel} must be odd and in "
                             f"[1, {full}] for a square {full}x{full} layer")
        return (full - kernel) // 2

    def _padding(self, kernel: int) -> tuple[int, int]:
        """Padding of the active kernel: the full padding less the trimmed border."""
        lo = self._kernel_offset(kernel)
        return (self.padding[0] - lo, self.padding[1] - lo)

    def forward(self, x: Tensor, in_channels: int | None = None,
                out_channels: int | None = None, kernel: int | None = None) -> Tensor:
        """x: (N, in, H, W) → (N, out, H', W')."""
        w, b = self.active_weights(in_channels, out_channels, kernel)
        return F.conv2d(x, w, b, self.stride, self._padding(w.shape[-1]), self.dilation)



class ElasticGroupNorm(nn.GroupNorm):
    """GroupNorm with a FIXED number of channels per group; the number of groups is elastic.

    A narrow subnet's groups are then exactly the first groups of the wide one, so its
    statistics match the wide layer's statistics on those channels.
    """

    def __init__(self, num_channels: int, group_size: int, eps: float = 1e-5, **kw) -> None:
        if num_channels % group_size:
            raise ValueError(f"ElasticGroupNorm: {num_channels} channels is not a multiple of "
                             f"group size {group_size}")
        super().__init__(num_channels // group_size, num_channels, eps=eps, **kw)
        self.group_size = group_size

    def active_weights(self, num_channels: int | None = None) -> tuple[Tensor, Tensor]:
        """Views ``weight[:c]``, ``bias[:c]`` (c,)."""
        c = self.num_channels if num_channels is None else num_channels
        _check_width(self, "num_channels", c, self.num_channels)
        if c % self.group_size:
            raise ValueError(f"{type(self).__name__}: active width {c} is not a multiple of the "
                             f"group size {self.group_size}")
        return self.weight[:c], self.bias[:c]

    def forward(self, x: Tensor, num_channels: int | None = None) -> Tensor:
        """x: (N, c, ...) → same shape."""
        w, b = self.active_weights(num_channels)
        return F.group_norm(x, w.shape[0] // self.group_size, w, b, self.eps)



def _check_width(layer: nn.Module, name: str, active: int, full: int) -> None:
    if not (1 <= active <= full):
        raise ValueError(f"{type(layer).__name__}: active {name}={active} outside [1, {full}]")


def call(layer: nn.Module, x: Tensor, *widths: int | None) -> Tensor:
    """Run ``layer`` at the given active widths, or plainly when all widths are None.

    Lets one block implementation drive both elastic supernet layers (widths from the arch)
    and the plain layers of an extracted model (widths None).
    """
    if all(w is None for w in widths):
        return layer(x)
    return layer(x, *widths)
