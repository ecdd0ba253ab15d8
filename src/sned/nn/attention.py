"""Multi-head attention with a fixed head dimension and an elastic (prefix) number of heads.

q, k and v are separate projections so that keeping the first ``h`` heads is a prefix slice of
each (a prefix of a fused qkv weight would mix q, k and v rows). The output projection is sliced
on its input dimension.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .elastic import ElasticLinear, call
from .sinusoid import sinusoidal_embedding


def rotary(x: Tensor) -> Tensor:
    """Rotary position embedding over the sequence axis.

    x: (N, heads, L, head_dim) with even head_dim → same shape, rotated by position: halves
    (x1, x2) → (x1·cos − x2·sin, x1·sin + x2·cos), computed as ``x·[cos, cos] + roll(x)·[−sin,
    sin]`` — 4 ops and their backward instead of 9 (bitwise the same values: a negated
    product and a commuted sum are exact). An odd last channel passes through unrotated.
    """
    n, h, length, d = x.shape
    half = d // 2
    cache = type(x) is Tensor
    if d == 2 * half:
        c, s = rotary_tables(length, half, x.device, x.dtype, cache=cache, paired=True)
        return x * c + x.roll(half, -1) * s
    cos, sin = rotary_tables(length, half, x.device, x.dtype, cache=cache)
    x1, x2 = x[..., :half], x[..., half:2 * half]
    out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return torch.cat([out, x[..., 2 * half:]], dim=-1)


_ROTARY: dict[tuple, tuple[Tensor, Tensor]] = {}


def rotary_tables(length: int, half: int, device: torch.device, dtype: torch.dtype,
                  cache: bool = True, paired: bool = False) -> tuple[Tensor, Tensor]:
    """cos, sin (length, half) of the rotary angles — ``paired``: ``[cos, cos]`` and ``[−sin,
    sin]`` (length, 2·half), what :func:`rotary` multiplies by — computed once per (length,
    half, device, dtype) and reused by every attention layer of every forward (while
    compiling, or for fake / subclass tensors — ``cache=False`` — computed inline)."""
    key = (length, half, device, dtype, paired)
    cache = cache and not torch.compiler.is_compiling()
    hit = _ROTARY.get(key) if cache else None
    if hit is not None:
        return hit
    if paired:
        cos, sin = rotary_tables(length, half, device, dtype, cache)
        tables = torch.cat([cos, cos], dim=-1), torch.cat([-sin, sin], dim=-1)
    else:
        freqs = torch.exp(-torch.arange(half, device=device, dtype=torch.float32)
                          * (torch.log(torch.tensor(10000.0)) / half))
        angles = torch.arange(length, device=device, dtype=torch.float32)[:, None] * freqs
        tables = angles.cos().to(dtype), angles.sin().to(dtype)
    if cache:
        if len(_ROTARY) > 64:
            _ROTARY.clear()
        _ROTARY[key] = tables
    return tables


_MASK: list = [None, None, None, None]  # the last (bool mask, its version, dtype, additive)


def additive_mask(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """(N, Lc) bool, True = attend → (N, 1, 1, Lc) additive float mask of ``dtype`` (0 or
    −inf), converted once per mask tensor and dtype: every cross-attention layer of a forward
    gets the same mask, which SDPA would otherwise convert in each call. Rows are never fully
    masked (the UNet prepends an always-attendable null token)."""
    cache = (type(mask) is Tensor and not torch.compiler.is_compiling()
             and not mask.is_inference())  # inference tensors have no version counter
    if (cache and _MASK[0] is mask
            and _MASK[1] == mask._version and _MASK[2] == dtype):
        return _MASK[3]
    out = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(
        ~mask.bool(), float("-inf"))[:, None, None, :]
    if cache:
        _MASK[:] = [mask, mask._version, dtype, out]
    return out


MAX_SDPA_BATCH = 65535
"""cuDNN's fused attention fails beyond 65,535 sequences (e.g. temporal attention over every
pixel of a 256×256 video); larger batches are run in chunks."""


def _sdpa(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None,
          max_batch: int | None = None) -> Tensor:
    """Scaled dot-product attention on (N, heads, L, d), in chunks of ``max_batch`` sequences
    (default: MAX_SDPA_BATCH on CUDA, unchunked elsewhere)."""
    n = q.shape[0]
    max_batch = max_batch or (MAX_SDPA_BATCH if q.is_cuda else n)
    if n <= max_batch:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    outs = []
    for i in range(0, n, max_batch):
        sl = slice(i, i + max_batch)
        outs.append(F.scaled_dot_product_attention(
            q[sl], k[sl], v[sl], attn_mask=None if mask is None else mask[sl]))
    return torch.cat(outs)


class Attention(nn.Module):
    """Pre-norm residual attention: ``x + out(attn(norm(x), context))``.

    Args:
        dim: residual width (fixed).
        heads: number of heads built (full width for a supernet, active for an extracted model).
        head_dim: fixed head dimension.
        context_dim: width of the context for cross-attention (None = self-attention).
        use_rotary: rotary position embedding on q and k (temporal attention over frames).
        elastic: build elastic layers (supernet) or plain ``nn.Linear`` (extracted model).
        norm_groups: 0 = LayerNorm pre-norm; N = GroupNorm with N groups over the channels
            (diffusers' UNet2DModel attention), ``eps`` its epsilon.
        bias: q, k, v projections with a bias.
        absolute_position: add a fixed sinusoidal embedding of the position in the sequence
            (:func:`~sned.nn.sinusoid.sinusoidal_embedding`) to the normed input
            (self-attention over frames: ``frame_position: rotary+absolute``).
    """

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int | None = None,
                 use_rotary: bool = False, elastic: bool = True, norm_groups: int = 0,
                 eps: float = 1e-5, bias: bool = False, absolute_position: bool = False) -> None:
        super().__init__()
        lin = ElasticLinear if elastic else nn.Linear
        inner = heads * head_dim
        self.heads, self.head_dim, self.use_rotary = heads, head_dim, use_rotary
        self.absolute_position = absolute_position
        self.norm = nn.GroupNorm(norm_groups, dim, eps=eps) if norm_groups else nn.LayerNorm(dim)
        self.to_q = lin(dim, inner, bias=bias)
        self.to_k = lin(context_dim or dim, inner, bias=bias)
        self.to_v = lin(context_dim or dim, inner, bias=bias)
        self.to_out = lin(inner, dim)

    def forward(self, x: Tensor, context: Tensor | None = None, mask: Tensor | None = None,
                heads: int | None = None) -> Tensor:
        """x: (N, L, dim); context: (N, Lc, context_dim) or None; mask: (N, Lc) bool, True =
        attend; heads: active heads (None = all built). Returns (N, L, dim)."""
        h = self.heads if heads is None else heads
        inner = None if heads is None else h * self.head_dim
        if isinstance(self.norm, nn.GroupNorm):  # over channels: (N, L, C) → (N, C, L)
            y = self.norm(x.transpose(1, 2)).transpose(1, 2)
        else:
            y = self.norm(x)
        if self.absolute_position:  # (L, dim) table of the sequence positions
            y = y + sinusoidal_embedding(torch.arange(y.shape[1], device=y.device),
                                         y.shape[2]).to(y.dtype)
        ctx = y if context is None else context
        q = call(self.to_q, y, None, inner)
        k = call(self.to_k, ctx, None, inner)
        v = call(self.to_v, ctx, None, inner)
        q, k, v = (t.unflatten(-1, (h, self.head_dim)).transpose(1, 2) for t in (q, k, v))
        if self.use_rotary:
            q, k = rotary(q), rotary(k)
        attn_mask = None if mask is None else additive_mask(mask, q.dtype)
        o = _sdpa(q, k, v, attn_mask)
        o = o.transpose(1, 2).flatten(2)
        return x + call(self.to_out, o, inner, None)


class FeedForward(nn.Module):
    """Pre-norm residual MLP ``x + fc2(gelu(fc1(norm(x))))`` with an elastic hidden width."""

    def __init__(self, dim: int, hidden: int, elastic: bool = True) -> None:
        super().__init__()
        lin = ElasticLinear if elastic else nn.Linear
        self.norm = nn.LayerNorm(dim)
        self.fc1 = lin(dim, hidden)
        self.fc2 = lin(hidden, dim)

    def forward(self, x: Tensor, hidden: int | None = None) -> Tensor:
        """x: (N, L, dim) → (N, L, dim)."""
        y = F.gelu(call(self.fc1, self.norm(x), None, hidden))
        return x + call(self.fc2, y, hidden, None)
