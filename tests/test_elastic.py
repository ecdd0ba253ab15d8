"""Elastic layers against independent references built from sliced copies of the weights."""

import torch
import torch.nn.functional as F
from torch import nn

from sned.nn.attention import Attention
from sned.nn.elastic import ElasticConv2d, ElasticGroupNorm, ElasticLinear


def _static_like(layer, *widths):
    """A plain layer filled from the elastic layer's active views (what extraction does)."""
    w, b = layer.active_weights(*widths)
    if isinstance(layer, ElasticLinear):
        m = nn.Linear(w.shape[1], w.shape[0])
    elif isinstance(layer, ElasticConv2d):
        m = nn.Conv2d(w.shape[1], w.shape[0], w.shape[-1], padding=layer._padding(w.shape[-1]))
    else:
        m = nn.GroupNorm(w.shape[0] // layer.group_size, w.shape[0], eps=layer.eps)
    with torch.no_grad():
        m.weight.copy_(w)
        m.bias.copy_(b)
    return m


def test_linear_slices_prefix_and_static_copy_matches():
    torch.manual_seed(0)
    layer = ElasticLinear(12, 10)
    x = torch.randn(3, 7)
    ref = x @ layer.weight.detach()[:4, :7].T + layer.bias.detach()[:4]
    torch.testing.assert_close(layer(x, 7, 4), ref)
    static = _static_like(layer, 7, 4)
    assert isinstance(static, nn.Linear) and type(static) is nn.Linear
    assert static.weight.shape == (4, 7)
    torch.testing.assert_close(static(x), ref)
    # full width is the plain layer
    x = torch.randn(3, 12)
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))


def test_conv_slices_prefix():
    torch.manual_seed(0)
    conv = ElasticConv2d(8, 6, 3, padding=1)
    x = torch.randn(2, 5, 9, 9)
    ref = F.conv2d(x, conv.weight.detach()[:3, :5].clone(), conv.bias.detach()[:3].clone(),
                   padding=1)
    torch.testing.assert_close(conv(x, 5, 3), ref)
    torch.testing.assert_close(_static_like(conv, 5, 3)(x), ref)


def test_groupnorm_keeps_channels_per_group_fixed():
    torch.manual_seed(0)
    gn = ElasticGroupNorm(32, group_size=8)
    with torch.no_grad():
        gn.weight.normal_()
        gn.bias.normal_()
    x = torch.randn(2, 32, 5, 5)
    wide = gn(x)
    narrow = gn(x[:, :16], 16)
    # a narrow subnet's groups are exactly the first groups of the wide one
    torch.testing.assert_close(narrow, wide[:, :16])
    static = _static_like(gn, 16)
    assert static.num_groups == 2 and static.num_channels == 16
    torch.testing.assert_close(static(x[:, :16]), narrow)


def _reference_attention(x, ctx, wq, wk, wv, wo, bo, heads, head_dim, norm):
    y = norm(x)
    ctx = y if ctx is None else ctx
    q = (y @ wq.T).view(*y.shape[:2], heads, head_dim)
    k = (ctx @ wk.T).view(*ctx.shape[:2], heads, head_dim)
    v = (ctx @ wv.T).view(*ctx.shape[:2], heads, head_dim)
    att = torch.einsum("nqhd,nkhd->nhqk", q, k) / head_dim ** 0.5
    o = torch.einsum("nhqk,nkhd->nqhd", att.softmax(-1), v).reshape(*y.shape[:2], -1)
    return x + o @ wo.T + bo


def test_attention_keeps_prefix_of_heads_per_projection():
    torch.manual_seed(0)
    hd, full = 4, 5
    attn = Attention(dim=16, heads=full, head_dim=hd, context_dim=6)
    x, ctx = torch.randn(2, 7, 16), torch.randn(2, 3, 6)
    for h in (1, 3, 5):
        n = h * hd
        ref = _reference_attention(x, ctx, attn.to_q.weight[:n], attn.to_k.weight[:n],
                                   attn.to_v.weight[:n], attn.to_out.weight[:, :n],
                                   attn.to_out.bias, h, hd, attn.norm)
        torch.testing.assert_close(attn(x, ctx, heads=h), ref, atol=1e-5, rtol=1e-5)


def test_attention_mask_excludes_padded_tokens():
    torch.manual_seed(0)
    attn = Attention(dim=8, heads=2, head_dim=4, context_dim=5)
    x, ctx = torch.randn(1, 3, 8), torch.randn(1, 4, 5)
    mask = torch.tensor([[True, True, False, False]])
    changed = ctx.clone()
    changed[:, 2:] = 100.0
    torch.testing.assert_close(attn(x, ctx, mask), attn(x, changed, mask))
    torch.testing.assert_close(attn(x, ctx, mask), attn(x, ctx[:, :2]))


def test_chunked_attention_equals_one_call():
    from sned.nn.attention import _sdpa

    torch.manual_seed(0)
    q, k, v = (torch.randn(7, 2, 5, 4) for _ in range(3))
    mask = torch.rand(7, 1, 1, 5) > 0.3
    mask[:, ..., 0] = True
    torch.testing.assert_close(_sdpa(q, k, v, mask, max_batch=3), _sdpa(q, k, v, mask))
