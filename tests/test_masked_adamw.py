"""Exact freezing: the masked AdamW against torch's AdamW, and bitwise-frozen inactive weights."""

import itertools

import numpy as np
import pytest
import torch

import sned
from sned.train.masked_adamw import ActivityTracker, MaskedAdamW, disjoint_boxes


def test_full_regions_equal_torch_adamw():
    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.GELU(), torch.nn.Linear(5, 2))
    b = [p.detach().clone().requires_grad_(True) for p in a.parameters()]
    ref = torch.optim.AdamW(b, lr=1e-2, weight_decay=0.1, foreach=False)
    opt = MaskedAdamW(a.parameters(), lr=1e-2, weight_decay=0.1)
    for _ in range(5):
        x = torch.randn(4, 6)
        for params, o in ((list(a.parameters()), opt), (b, ref)):
            o.zero_grad()
            h = torch.nn.functional.gelu(x @ params[0].T + params[1])
            (h @ params[2].T + params[3]).square().sum().backward()
            o.step()
    for p, q in zip(a.parameters(), b):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("boxes", [
    {(3, 5)}, {(3, 5), (6, 2)}, {(2, 8), (5, 5), (7, 1), (4, 6)}, {(4, 4), (4, 4)}, {(8, 8), (2, 3)}])
def test_disjoint_boxes_cover_union_exactly(boxes):
    shape = torch.Size((8, 8, 3))
    count = torch.zeros(shape, dtype=torch.int32)
    for idx in disjoint_boxes({b + (3,) for b in boxes}, shape):
        count[idx] += 1
    union = torch.zeros(shape, dtype=torch.bool)
    for a, b in boxes:
        union[:a, :b] = True
    assert count.max() <= 1  # no element updated twice
    assert torch.equal(count.bool(), union)


def _state_snapshot(model, opt):
    out = {}
    for name, p in model.named_parameters():
        st = opt.state.get(p, {})
        out[name] = (p.detach().clone(),
                     st.get("exp_avg", torch.zeros_like(p)).clone(),
                     st.get("exp_avg_sq", torch.zeros_like(p)).clone())
    return out


def _inactive_mask(p, regions):
    mask = torch.ones_like(p, dtype=torch.bool)
    for idx in regions.get(p, []):
        mask[idx] = False
    return mask


@pytest.mark.parametrize("exact", [True, False])
def test_inactive_weights_and_moments_stay_bitwise_frozen(exact):
    torch.manual_seed(0)
    model = sned.build_supernet("tiny-base").train()
    space = sned.search_space("tiny-base")
    params = list(model.parameters())
    opt = (MaskedAdamW(params, lr=1e-3, weight_decay=0.1) if exact
           else torch.optim.AdamW(params, lr=1e-3, weight_decay=0.1))
    tracker = ActivityTracker(model)
    rng = np.random.default_rng(0)
    # warm the moments with the full arch so they are non-zero everywhere
    archs = [space.largest()] + [space.sample(rng) for _ in range(3)]
    changed_inactive = 0
    for i, arch in enumerate(archs):
        before = _state_snapshot(model, opt)
        kw = sned.example_inputs(model, batch=1, resolution=arch.resolution, frames=2, seed=i)
        tracker.reset()
        opt.zero_grad(set_to_none=True)
        model(**kw, arch=arch).square().mean().backward()
        regions = tracker.regions()
        opt.step(regions=regions) if exact else opt.step()
        if i == 0:
            continue
        after = _state_snapshot(model, opt)
        for (name, p) in model.named_parameters():
            inactive = _inactive_mask(p, regions)
            for old, new in zip(before[name], after[name]):
                if exact:
                    assert torch.equal(old[inactive], new[inactive]), name
                else:
                    changed_inactive += int(not torch.equal(old[inactive], new[inactive]))
            if exact and p in regions:
                active = ~inactive
                assert not torch.equal(before[name][0][active], after[name][0][active]), name
    if not exact:  # the ablation: plain AdamW moves weights the subnet never used
        assert changed_inactive > 0


def test_tracker_sees_exactly_the_slices_forward_used():
    model = sned.build_supernet("tiny-base")
    space = sned.search_space("tiny-base")
    tracker = ActivityTracker(model)
    arch = space.preset("S")
    model(**sned.example_inputs(model, batch=1, frames=2), arch=arch)
    static = sned.extract(model, arch)
    static_shapes = dict(static.named_parameters())
    sup = dict(model.named_parameters())
    seen = {name for name, p in sup.items() if p in tracker.extents}
    assert seen == set(static_shapes)  # active params are exactly the extracted model's
    for name in seen:
        (shape,) = tracker.extents[sup[name]]
        assert shape == tuple(static_shapes[name].shape), name
