"""The diffusion block: ResBlock → temporal attn → cross attn → spatial attn → feed-forward.

One implementation serves the supernet (elastic layers at full size, driven by a
:class:`~sned.arch.BlockLayout` at call time) and the extracted model (plain layers built at the
layout's sizes, called with ``layout=None``). Dropped components are identities; a dropped
ResBlock returns its skip path (a 1×1 projection when the widths differ).

Hidden states are frames-as-batch: ``(B*T, C, H, W)``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..arch import BlockLayout, BlockSpec
from .attention import Attention, FeedForward
from .elastic import ElasticConv2d, ElasticGroupNorm, ElasticLinear, call


class ResBlock(nn.Module):
    """GroupNorm → SiLU → conv(1×3×3) → GroupNorm → scale-shift(t) → SiLU → conv(1×3×3), + skip.

    The hidden width (conv1 out, norm2, the time-embedding scale/shift, conv2 in) is elastic; the
    in/out widths are fixed. Scale and shift are separate projections so that their prefixes
    stay aligned with the hidden channels. The conv kernel size is elastic too (3×3 or its
    1×1 centre, DiffNAS); ``kernel`` is the size a plain (extracted) ResBlock is built at.
    """

    def __init__(self, in_ch: int, out_ch: int, hidden: int, emb_dim: int, group_size: int,
                 dropout: float = 0.0, elastic: bool = True, kernel: int = 3) -> None:
        super().__init__()
        conv = ElasticConv2d if elastic else nn.Conv2d
        lin = ElasticLinear if elastic else nn.Linear
        self.norm1 = nn.GroupNorm(in_ch // group_size, in_ch)
        self.conv1 = conv(in_ch, hidden, kernel, padding=kernel // 2)
        self.norm2 = (ElasticGroupNorm(hidden, group_size) if elastic
                      else nn.GroupNorm(hidden // group_size, hidden))
        self.emb_scale = lin(emb_dim, hidden)
        self.emb_shift = lin(emb_dim, hidden)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv(hidden, out_ch, kernel, padding=kernel // 2)

    def forward(self, x: Tensor, emb: Tensor, frames: int, hidden: int | None = None,
                kernel: int | None = None) -> Tensor:
        """x: (B*T, in, H, W); emb: (B, emb_dim) → residual branch (B*T, out, H, W).

        ``hidden`` / ``kernel``: active hidden width and conv kernel (supernet only)."""
        h = call(self.conv1, F.silu(self.norm1(x)), None, hidden, kernel)
        h = call(self.norm2, h, hidden)
        e = F.silu(emb)
        scale = call(self.emb_scale, e, None, hidden).repeat_interleave(frames, 0)
        shift = call(self.emb_shift, e, None, hidden).repeat_interleave(frames, 0)
        h = h * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
        h = self.dropout(F.silu(h))
        return call(self.conv2, h, hidden, None, kernel)


class DiffusionBlock(nn.Module):
    """One diffusion block of the video UNet.

    Args:
        spec: the block's full-size description.
        layout: None → a supernet block holding every component at full width (elastic);
            a BlockLayout → an extracted block holding only the kept components at exactly the
            layout's widths (plain layers).
    """

    def __init__(self, spec: BlockSpec, emb_dim: int, text_dim: int, head_dim: int,
                 group_size: int, dropout: float = 0.0, layout: BlockLayout | None = None
                 ) -> None:
        super().__init__()
        elastic = layout is None
        keep = set(spec.components) if elastic else set(layout.keep)
        self.spec = spec
        self.skip = (nn.Conv2d(spec.in_ch, spec.out_ch, 1) if spec.in_ch != spec.out_ch
                     else nn.Identity())
        if "resblock" in keep:
            hidden = spec.resblock_hidden if elastic else layout.resblock_hidden
            self.resblock = ResBlock(spec.in_ch, spec.out_ch, hidden, emb_dim, group_size,
                                     dropout, elastic, 3 if elastic else layout.kernel)
        dim = spec.out_ch
        for attn in spec.attentions:
            if attn in keep:
                heads = spec.heads if elastic else layout.heads_of(attn)
                setattr(self, attn, Attention(dim, heads, head_dim,
                                              text_dim if attn == "cross_attn" else None,
                                              use_rotary=attn == "temporal_attn", elastic=elastic))
        if spec.ff_hidden and (elastic or layout.ff_hidden):
            self.ff = FeedForward(dim, spec.ff_hidden if elastic else layout.ff_hidden, elastic)

    def forward(self, x: Tensor, emb: Tensor, context: Tensor, context_mask: Tensor | None,
                frames: int, layout: BlockLayout | None = None) -> Tensor:
        """x: (B*T, in, H, W); emb: (B, E); context: (B, Lc, text_dim); context_mask: (B, Lc).

        ``layout`` selects the active subnet (supernet only); None runs what was built.
        Returns (B*T, out, H, W).
        """
        keep = self._kept(layout)
        h = self.skip(x)
        if "resblock" in keep:
            h = h + self.resblock(x, emb, frames,
                                  *(() if layout is None else (layout.resblock_hidden,
                                                               layout.kernel)))
        attns = [a for a in self.spec.attentions if a in keep]
        if not attns:
            return h
        bt, c, hh, ww = h.shape
        b = bt // frames
        tokens = h.flatten(2).transpose(1, 2)  # (B*T, HW, C)
        for attn in attns:
            heads = None if layout is None else layout.heads_of(attn)
            module = getattr(self, attn)
            if attn == "spatial_attn":
                tokens = module(tokens, heads=heads)
            elif attn == "temporal_attn":  # sequences over frames at each pixel
                seq = tokens.unflatten(0, (b, frames)).transpose(1, 2).flatten(0, 1)
                seq = module(seq, heads=heads)
                tokens = seq.unflatten(0, (b, hh * ww)).transpose(1, 2).flatten(0, 1)
            else:  # cross-attention: all frames of a sample attend to the same text tokens
                flat = tokens.reshape(b, frames * hh * ww, c)
                tokens = module(flat, context, context_mask, heads=heads).reshape(bt, hh * ww, c)
        if hasattr(self, "ff"):
            tokens = self.ff(tokens, None if layout is None else layout.ff_hidden)
        return tokens.transpose(1, 2).reshape(bt, c, hh, ww)

    def _kept(self, layout: BlockLayout | None) -> frozenset[str] | set[str]:
        if layout is not None:
            return layout.keep
        return {c for c in self.spec.components if hasattr(self, c)}


def zero_init_residual_outputs(model: nn.Module) -> int:
    """Zero the last layer of every residual branch in ``model`` — each ResBlock's ``conv2``,
    each attention's ``to_out`` and each feed-forward's ``fc2`` (weight and bias) — so every
    block starts as its skip path (``ModelConfig.zero_init_residual``). Returns how many
    layers were zeroed."""
    import torch

    layers = [m.conv2 for m in model.modules() if isinstance(m, ResBlock)]
    layers += [m.to_out for m in model.modules() if isinstance(m, Attention)]
    layers += [m.fc2 for m in model.modules() if isinstance(m, FeedForward)]
    with torch.no_grad():
        for layer in layers:
            layer.weight.zero_()
            if layer.bias is not None:
                layer.bias.zero_()
    return len(layers)
