"""Pooling a caption's tokens into one vector for the timestep embedding.

The pooled text path (Imagen) conditions every ResBlock on the caption through its scale/shift.
A masked *mean* of the tokens weighs every word alike, so words that a frozen encoder places
close together stay close after pooling: MiniLM's mean embedding moves 5× less for a direction
word ("left" → "right") than for a colour word (``docs/results.md``, issue 31). *Attention*
pooling (DeepFloyd IF's ``TextTimeEmbedding``, CLIP's attention pool) lets the model learn
which tokens matter: a query made from the mean (plus a learned offset) attends over the mean
and the tokens, per head. Unlike diffusers' ``AttentionPooling`` it honours the attention
mask, so a caption's pooled vector does not depend on the padding of its batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def masked_mean(tokens: Tensor, mask: Tensor) -> Tensor:
    """(B, L, D) tokens, (B, L) bool mask → (B, D): the mean of the attendable tokens."""
    w = mask.to(tokens.dtype).unsqueeze(-1)
    return (tokens * w).sum(1) / w.sum(1)


class AttentionPool(nn.Module):
    """(B, L, D) tokens + (B, L) bool mask → (B, D): multi-head attention of one query token
    (the masked mean + a learned offset) over [that token, the attendable tokens].

    Args:
        dim: token width D.
        head_dim: width of each head (D must be a multiple; 64 by default, the UNet's).
    """

    def __init__(self, dim: int, head_dim: int = 64) -> None:
        super().__init__()
        if dim % head_dim:
            raise ValueError(f"AttentionPool: dim {dim} is not a multiple of head_dim "
                             f"{head_dim}")
        self.heads, self.head_dim = dim // head_dim, head_dim
        self.query_offset = nn.Parameter(torch.randn(dim) / dim ** 0.5)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)

    def forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        b, length, dim = tokens.shape
        query = (masked_mean(tokens, mask) + self.query_offset.to(tokens.dtype)).unsqueeze(1)
        keys = torch.cat([query, tokens], dim=1)                      # (B, 1+L, D)
        attend = torch.cat([mask.new_ones(b, 1), mask], dim=1)        # the query token too

        def heads(x: Tensor) -> Tensor:                               # (B, n, D) → (B, H, n, d)
            return x.view(b, x.shape[1], self.heads, self.head_dim).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(self.q(query)), heads(self.k(keys)),
                                             heads(self.v(keys)),
                                             attn_mask=attend[:, None, None, :])
        return out.transpose(1, 2).reshape(b, dim)


def text_pool_head_dim(dim: int) -> int:
    """Head width of the attention pool over ``dim``-wide tokens: 64 where it divides ``dim``
    (MiniLM 384: 6 heads; T5 512: 8), else one head."""
    return 64 if dim % 64 == 0 else dim


def attention_pool_cost(dim: int, context: int) -> tuple[int, int]:
    """(params, MACs) of :class:`AttentionPool` over ``context`` tokens of width ``dim``: the
    query's projection, keys and values of 1 + ``context`` tokens, scores and the weighted
    sum."""
    params = 3 * (dim * dim + dim) + dim
    macs = dim * dim + 2 * (1 + context) * dim * dim + 2 * (1 + context) * dim
    return params, macs
