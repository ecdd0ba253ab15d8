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

from typing import TYPE_CHECKING

from ..arch import BlockLayout, BlockSpec
from . import checkpoint as ckpt
from .attention import Attention, FeedForward
from .elastic import ElasticConv2d, ElasticGroupNorm, ElasticLinear, call

if TYPE_CHECKING:
    from ..config import ModelConfig


class ResBlock(nn.Module):
    """GroupNorm → SiLU → conv → [+ emb] → GroupNorm → [scale-shift(t)] → SiLU → conv, + skip.

    The hidden width (conv1 out, norm2, the time-embedding projections, conv2 in) is elastic;
    the in/out widths are fixed. ``time_embedding="scale_shift"`` (ADM) applies
    ``norm2(h) * (1 + scale) + shift`` with separate scale and shift projections, so that their
    prefixes stay aligned with the hidden channels; ``"add"`` (DDPM) adds one projection
    (``emb_add``) before ``norm2``. The conv kernel size is elastic too (3×3 or its 1×1 centre,
    DiffNAS); ``kernel`` is the size a plain (extracted) ResBlock is built at.

    Norms: ``norm1`` has ``in_groups`` groups; ``norm2`` keeps ``group_size`` channels per group
    (the group size of its full width), so an extracted block of hidden ``h`` has
    ``h // group_size`` groups.
    """

    def __init__(self, in_ch: int, out_ch: int, hidden: int, emb_dim: int, group_size: int,
                 dropout: float = 0.0, elastic: bool = True, kernel: int = 3,
                 in_groups: int | None = None, eps: float = 1e-5,
                 time_embedding: str = "scale_shift") -> None:
        super().__init__()
        conv = ElasticConv2d if elastic else nn.Conv2d
        lin = ElasticLinear if elastic else nn.Linear
        self.time_embedding = time_embedding
        self.norm1 = nn.GroupNorm(in_groups or in_ch // group_size, in_ch, eps=eps)
        self.conv1 = conv(in_ch, hidden, kernel, padding=kernel // 2)
        self.norm2 = (ElasticGroupNorm(hidden, group_size, eps=eps) if elastic
                      else nn.GroupNorm(hidden // group_size, hidden, eps=eps))
        if time_embedding == "add":
            self.emb_add = lin(emb_dim, hidden)
        else:
            self.emb_scale = lin(emb_dim, hidden)
            self.emb_shift = lin(emb_dim, hidden)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv(hidden, out_ch, kernel, padding=kernel // 2)

    def forward(self, x: Tensor, emb: Tensor, frames: int, hidden: int | None = None,
                kernel: int | None = None) -> Tensor:
        """x: (B*T, in, H, W); emb: (B, emb_dim) → residual branch (B*T, out, H, W).

        ``hidden`` / ``kernel``: active hidden width and conv kernel (supernet only)."""
        h = call(self.conv1, F.silu(self.norm1(x)), None, hidden, kernel)
        e = F.silu(emb)
        if self.time_embedding == "add":
            add = call(self.emb_add, e, None, hidden).repeat_interleave(frames, 0)
            h = call(self.norm2, h + add[:, :, None, None], hidden)
        else:
            h = call(self.norm2, h, hidden)
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
                 group_size: int, dropout: float = 0.0, layout: BlockLayout | None = None,
                 cfg: "ModelConfig | None" = None) -> None:
        """``cfg`` (the model config) supplies the block options: GroupNorm groups and eps,
        the ResBlock's time-embedding form, the attention norm and q/k/v bias; None = the
        defaults (``group_size`` channels per group)."""
        super().__init__()
        elastic = layout is None
        keep = set(spec.components) if elastic else set(layout.keep)
        self.spec = spec
        self.skip = (nn.Conv2d(spec.in_ch, spec.out_ch, 1) if spec.in_ch != spec.out_ch
                     else nn.Identity())
        groups = cfg.groups if cfg is not None else (lambda width: width // group_size)
        eps = cfg.norm_eps if cfg is not None else 1e-5
        if "resblock" in keep:
            hidden = spec.resblock_hidden if elastic else layout.resblock_hidden
            hidden_gs = (cfg.group_size(spec.resblock_hidden) if cfg is not None
                         else group_size)
            self.resblock = ResBlock(
                spec.in_ch, spec.out_ch, hidden, emb_dim, hidden_gs, dropout, elastic,
                3 if elastic else layout.kernel, in_groups=groups(spec.in_ch), eps=eps,
                time_embedding=cfg.time_embedding if cfg is not None else "scale_shift")
        dim = spec.out_ch
        group_norm = cfg is not None and cfg.attention_norm == "group"
        for attn in spec.attentions:
            if attn in keep:
                heads = spec.heads if elastic else layout.heads_of(attn)
                setattr(self, attn, Attention(
                    dim, heads, head_dim, text_dim if attn == "cross_attn" else None,
                    use_rotary=attn == "temporal_attn", elastic=elastic,
                    absolute_position=(attn == "temporal_attn" and cfg is not None
                                       and cfg.frame_position == "rotary+absolute"),
                    norm_groups=groups(dim) if group_norm else 0, eps=eps,
                    bias=cfg is not None and cfg.attention_bias))
        if spec.ff_hidden and (elastic or layout.ff_hidden):
            self.ff = FeedForward(dim, spec.ff_hidden if elastic else layout.ff_hidden, elastic)
        self.checkpoint_layers: str | None = None
        """None, or ``full`` / ``selective``: each layer (ResBlock, attention, feed-forward)
        runs as its own checkpointed unit while training (:mod:`sned.nn.checkpoint`)."""

    def forward(self, x: Tensor, emb: Tensor, context: Tensor, context_mask: Tensor | None,
                frames: int, layout: BlockLayout | None = None) -> Tensor:
        """x: (B*T, in, H, W); emb: (B, E); context: (B, Lc, text_dim); context_mask: (B, Lc).

        ``layout`` selects the active subnet (supernet only); None runs what was built.
        Returns (B*T, out, H, W).
        """
        keep = self._kept(layout)
        unit = (self._unit if self.checkpoint_layers is not None and self.training
                else lambda module: module)
        h = self.skip(x)
        if "resblock" in keep:
            h = h + unit(self.resblock)(x, emb, frames,
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
            module = unit(getattr(self, attn))
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
            tokens = unit(self.ff)(tokens, None if layout is None else layout.ff_hidden)
        return tokens.transpose(1, 2).reshape(bt, c, hh, ww)

    def _unit(self, module: nn.Module):
        return ckpt.maybe(module, self.checkpoint_layers)

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
