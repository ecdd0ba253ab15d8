"""What a training step no longer recomputes: rotary tables and the caption's additive mask
are made once and give the same attention as computing them in every layer (issue 25)."""

import torch
import torch.nn.functional as F

from sned.nn import attention
from sned.nn.attention import Attention, additive_mask, rotary_tables


def test_additive_mask_gives_the_bool_masks_attention_and_is_made_once():
    torch.manual_seed(0)
    layer = Attention(16, heads=2, head_dim=8, context_dim=12)
    x, ctx = torch.randn(3, 5, 16), torch.randn(3, 4, 12)
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 1], [1, 1, 1, 1]], dtype=torch.bool)
    q = k = v = torch.randn(3, 2, 5, 8)
    ref = F.scaled_dot_product_attention(q, k[:, :, :4], v[:, :, :4],
                                         attn_mask=mask[:, None, None, :])
    got = F.scaled_dot_product_attention(q, k[:, :, :4], v[:, :, :4],
                                         attn_mask=additive_mask(mask, q.dtype))
    torch.testing.assert_close(got, ref)
    first = additive_mask(mask, torch.float32)
    assert additive_mask(mask, torch.float32) is first  # the same tensor for every layer
    assert additive_mask(mask, torch.bfloat16) is not first
    mask[0, 2] = True  # changed in place: converted again
    assert bool(additive_mask(mask, torch.float32)[0, 0, 0, 2] == 0)
    out = layer(x, ctx, mask)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_rotary_tables_are_cached_per_shape_and_equal_a_fresh_computation():
    attention._ROTARY.clear()
    cos, sin = rotary_tables(6, 4, torch.device("cpu"), torch.float32)
    assert rotary_tables(6, 4, torch.device("cpu"), torch.float32)[0] is cos
    angles = torch.arange(6.0)[:, None] * torch.exp(-torch.arange(4.0)
                                                    * (torch.log(torch.tensor(1e4)) / 4))
    torch.testing.assert_close(cos, angles.cos())
    torch.testing.assert_close(sin, angles.sin())
    assert len(attention._ROTARY) == 1
    rotary_tables(7, 4, torch.device("cpu"), torch.float32)
    assert len(attention._ROTARY) == 2


def _rotary_by_halves(x):
    """The textbook rotary (halves rotated separately): the reference."""
    half = x.shape[-1] // 2
    cos, sin = rotary_tables(x.shape[2], half, x.device, x.dtype, cache=False)
    x1, x2 = x[..., :half], x[..., half:2 * half]
    out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return torch.cat([out, x[..., 2 * half:]], dim=-1)


def test_rotary_equals_the_rotation_by_halves_bitwise_values_and_gradients():
    torch.manual_seed(0)
    for d in (8, 7):  # even; odd: the last channel passes through
        x = torch.randn(2, 3, 5, d, requires_grad=True)
        ref_x = x.detach().clone().requires_grad_(True)
        out, ref = attention.rotary(x), _rotary_by_halves(ref_x)
        assert torch.equal(out, ref), d
        g = torch.randn_like(out)
        out.backward(g)
        ref.backward(g)
        assert torch.equal(x.grad, ref_x.grad), d
    assert attention.rotary(torch.ones(1, 1, 1, 8)).eq(1).all()  # position 0: identity
