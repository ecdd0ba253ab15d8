"""Elastic ResBlock kernel size (DiffNAS): centre slice, exact extraction, cost, JSON, masks."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import sned
from sned.arch import Arch, ArchError, BlockArch
from sned.nn.elastic import ElasticConv2d
from sned.train.masked_adamw import ActivityTracker, MaskedAdamW

SMALL = ["frames=2", "resolutions=[16]", "model_channels=16", "heads=[1,2,2]",
         "time_embed_dim=32"]


def _with_kernels(arch: Arch, kernels: dict[int, int]) -> Arch:
    blocks = tuple(BlockArch(b.keep, b.ratios, kernels.get(i, b.kernel))
                   for i, b in enumerate(arch.blocks))
    return Arch(arch.resolution, blocks, arch.config)


def test_conv_kernel_is_centre_slice_with_same_padding():
    torch.manual_seed(0)
    conv = ElasticConv2d(6, 5, 3, padding=1)
    x = torch.randn(2, 4, 7, 7)
    y = conv(x, 4, 3, 1)
    ref = F.conv2d(x, conv.weight[:3, :4, 1:2, 1:2], conv.bias[:3])  # independent reference
    assert y.shape == (2, 3, 7, 7)
    torch.testing.assert_close(y, ref)
    w, b = conv.active_weights(4, 3, 1)
    assert w.shape == (3, 4, 1, 1) and conv._padding(1) == (0, 0)
    with pytest.raises(ValueError, match="kernel"):
        conv(x, 4, 3, 2)


def test_kernel_one_arch_extracts_exactly_and_costs_match():
    torch.manual_seed(0)
    sup = sned.build_supernet("tiny-base", SMALL).eval()
    space = sned.search_space(sup.config)
    arch = _with_kernels(space.preset("S"), {0: 1, 3: 1, 5: 1})
    static = sned.extract(sup, arch)
    kw = sned.example_inputs(sup, batch=2)
    with torch.no_grad():
        torch.testing.assert_close(static(**kw), sup(**kw, arch=arch), rtol=1e-5, atol=1e-5)
    assert static.blocks[0].resblock.conv1.kernel_size == (1, 1)
    assert static.blocks[1].resblock.conv1.kernel_size == (3, 3)
    cost = space.cost(arch)
    assert cost.params == sum(p.numel() for p in static.parameters())
    # what the 1×1 kernels save, counted on real forwards = what the cost model predicts
    full = _with_kernels(arch, {0: 3, 3: 3, 5: 3})
    one = {k: v[:1] for k, v in kw.items()}
    counted = []
    for a in (arch, full):
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            sned.extract(sup, a)(**one)
        counted.append(fc.get_total_flops() // 2)
    saved = space.cost(full).macs - cost.macs
    assert saved > 0 and counted[1] - counted[0] == saved


def test_kernel_json_is_backward_compatible(tmp_path):
    space = sned.search_space("tiny-base")
    arch = space.preset("M")
    assert all("kernel" not in b for b in arch.to_dict()["blocks"])  # unchanged JSON
    small = _with_kernels(arch, {2: 1})
    d = small.to_dict()
    assert d["blocks"][2]["kernel"] == 1 and "kernel" not in d["blocks"][1]
    assert Arch.from_dict(json.loads(small.to_json())) == small
    d["blocks"][2]["kernel"] = 2
    with pytest.raises(ArchError, match="kernel 2"):
        space.validate(Arch.from_dict(d))
    d["blocks"][2]["kernel"] = "1"
    with pytest.raises(ArchError, match=r"blocks\[2\].kernel"):
        Arch.from_dict(d)


def _changed_by_one_step(out_ch: int, calls) -> torch.Tensor:
    """Which weights of a 3×3 ElasticConv2d(4, out_ch) one masked AdamW step changes after
    the forwards ``calls(conv, x)`` (their summed squares are the loss)."""
    torch.manual_seed(0)
    conv = ElasticConv2d(4, out_ch, 3, padding=1)
    before = conv.weight.detach().clone()
    tracker = ActivityTracker(conv)
    opt = MaskedAdamW(conv.parameters(), lr=0.1, weight_decay=0.1)
    sum(y.square().sum() for y in calls(conv, torch.randn(2, 4, 5, 5))).backward()
    opt.step(regions=tracker.regions())
    return conv.weight.detach() != before


def test_masked_adamw_updates_only_the_kernel_centre():
    changed = _changed_by_one_step(4, lambda conv, x: [conv(x, None, 2, 1)])
    expected = torch.zeros_like(changed)
    expected[:2, :, 1, 1] = True  # the ring of the 3×3 kernel and channels 2, 3: untouched
    assert torch.equal(changed, expected)


def test_masked_adamw_union_of_kernels_updates_exactly_the_touched_weights():
    changed = _changed_by_one_step(6, lambda conv, x: [conv(x, None, 5, 3),
                                                       conv(x[:, :2], 2, None, 1)])
    expected = torch.zeros_like(changed)
    expected[:5] = True            # 3×3 kernel, 5 outputs, all inputs
    expected[:, :2, 1, 1] = True   # 1×1 centre, all outputs, 2 inputs
    assert torch.equal(changed, expected)
