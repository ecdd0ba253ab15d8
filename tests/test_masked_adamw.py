"""Exact freezing: the masked AdamW against torch's AdamW, and bitwise-frozen inactive weights."""

import itertools

import numpy as np
import pytest
import torch

import sned
from sned.train.masked_adamw import (ActivityTracker, MaskedAdamW, box_index, compact,
                                     disjoint_boxes)


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
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)  # steps of lr=3e-3


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


def _adamw_on_active_steps(p0, grads, active, lrs, wd, betas=(0.9, 0.999), eps=1e-8):
    """Reference: one scalar element run through torch's AdamW on its active steps only."""
    w = torch.tensor([float(p0)], dtype=torch.float32, requires_grad=True)
    opt = torch.optim.AdamW([w], lr=lrs[0], betas=betas, eps=eps, weight_decay=wd,
                            foreach=False)
    for g, on, lr in zip(grads, active, lrs):
        if on:
            opt.param_groups[0]["lr"] = lr
            w.grad = torch.tensor([float(g)])
            opt.step()
    return float(w.detach())


@pytest.mark.parametrize("kind", ["constant", "random"])
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_per_element_counts_equal_adamw_on_each_elements_active_steps(kind, wd):
    """Slices active k of t steps (prefix boxes of different sizes per step) follow plain
    AdamW run on their own active steps — moments, bias correction and decay alike."""
    torch.manual_seed(0)
    shape, t = (6, 5), 40
    gen = torch.Generator().manual_seed(1)
    p = torch.nn.Parameter(torch.randn(shape, generator=gen))
    p0 = p.detach().clone()
    opt = MaskedAdamW([p], lr=0.05, weight_decay=wd)
    rng = np.random.default_rng(0)
    grads, masks, lrs = [], [], []
    for step in range(t):
        a, b = int(rng.integers(1, 7)), int(rng.integers(1, 6))  # this step's prefix box
        g = (torch.full(shape, 0.3) if kind == "constant"
             else torch.randn(shape, generator=gen))
        lr = 0.05 * (1 - step / (2 * t))  # a decaying schedule, as the trainer's
        opt.param_groups[0]["lr"] = lr
        p.grad = g.clone()
        opt.step(regions={p: [(slice(0, a), slice(0, b))]})
        m = torch.zeros(shape, dtype=torch.bool)
        m[:a, :b] = True
        grads.append(g), masks.append(m), lrs.append(lr)
    active = torch.stack(masks).sum(0)
    assert active.min() < t // 2 < active.max()  # the test covers rarely and often active
    for i, j in itertools.product(range(shape[0]), range(shape[1])):
        ref = _adamw_on_active_steps(p0[i, j], [g[i, j] for g in grads],
                                     [bool(m[i, j]) for m in masks], lrs, wd)
        assert float(p.detach()[i, j]) == pytest.approx(ref, rel=1e-5, abs=1e-6), (i, j)


def test_per_tensor_counts_overstate_a_rarely_active_slices_steps():
    """The ablation (per-tensor counts): a slice active in 1 of 5 steps under a constant
    gradient moves further than AdamW on its active steps alone (the issue's 68 vs 40)."""
    moved = {}
    for per_element in (True, False):
        p = torch.nn.Parameter(torch.zeros(10))
        opt = MaskedAdamW([p], lr=1.0, weight_decay=0.0, per_element=per_element)
        for step in range(200):
            p.grad = torch.ones(10)
            opt.step(regions={p: [(slice(0, 10 if step % 5 == 0 else 2),)]})
        moved[per_element] = -float(p.detach()[5])
    assert moved[True] == pytest.approx(40.0, rel=1e-4)  # 40 active steps, |update| = lr
    assert moved[False] > 1.3 * moved[True]


def test_per_element_state_round_trips_through_a_checkpoint(tmp_path):
    from sned.store.checkpoint import load_training_state, save_checkpoint

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = MaskedAdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    for k in range(3):
        model(torch.randn(2, 4)).sum().backward()
        opt.step(regions={model.weight: [(slice(0, 1 + k), slice(0, 4))]})
        opt.zero_grad()
    folder = save_checkpoint(tmp_path, 3, model, opt, None, sched, {}, 1)
    fresh = torch.nn.Linear(4, 3)
    opt2 = MaskedAdamW(fresh.parameters(), lr=1e-2)
    load_training_state(folder, fresh, opt2, None, torch.optim.lr_scheduler.LambdaLR(
        opt2, lambda s: 1.0))
    counts = opt2.state[fresh.weight]["active_steps"]
    assert counts[:, 0].tolist() == [3.0, 2.0, 1.0]
    for m in (model, fresh):  # the same next step from both
        torch.manual_seed(5)
        m(torch.randn(2, 4)).sum().backward()
    opt.step(regions={model.weight: [(slice(0, 2), slice(0, 4))]})
    opt2.step(regions={fresh.weight: [(slice(0, 2), slice(0, 4))]})
    assert torch.equal(model.weight, fresh.weight)


def test_a_per_tensor_state_continues_with_per_element_counts():
    """An optimizer state saved before per-element counts (only ``step``) resumes: every
    element is taken to have had the tensor's steps."""
    p = torch.nn.Parameter(torch.zeros(3))
    opt = MaskedAdamW([p], lr=0.1, per_element=False)
    for _ in range(4):
        p.grad = torch.ones(3)
        opt.step()
    state = {k: v.clone() for k, v in opt.state[p].items()}
    opt2 = MaskedAdamW([p], lr=0.1)
    opt2.state[p].update(state)
    p.grad = torch.ones(3)
    opt2.step(regions={p: [(slice(0, 1),)]})
    assert opt2.state[p]["active_steps"].tolist() == [5.0, 4.0, 4.0]


# ----------------------------------------------------------------- the fused update (issue 25)
def _twin_models(name="tiny-base"):
    torch.manual_seed(0)
    a = sned.build_supernet(name).train()
    b = sned.build_supernet(name).train()
    b.load_state_dict(a.state_dict())
    return a, b


@pytest.mark.parametrize("per_element", [True, False])
def test_fused_update_equals_the_slice_reference_over_random_arch_sequences(per_element):
    """Compact counts equal the per-element counts and the trajectory equals the previous
    (slice-based, full-size counts) implementation over a random arch sequence (sandwich
    steps with several archs included), fed the same gradients."""
    torch.manual_seed(0)
    model = sned.build_supernet("tiny-base").train()
    space = sned.search_space("tiny-base")
    twin = {p: p.detach().clone().requires_grad_(True) for p in model.parameters()}
    ref = MaskedAdamW(model.parameters(), lr=3e-3, weight_decay=0.1, per_element=per_element,
                      impl="slices")
    fused = MaskedAdamW(list(twin.values()), lr=3e-3, weight_decay=0.1,
                        per_element=per_element)
    tracker = ActivityTracker(model)
    rng = np.random.default_rng(3)
    for i in range(6):
        archs = [space.sample(rng) for _ in range(1 + i % 3)]  # 1-3 archs: unions of boxes
        tracker.reset()
        ref.zero_grad(set_to_none=True)
        for j, arch in enumerate(archs):
            kw = sned.example_inputs(model, batch=1, resolution=arch.resolution, frames=2,
                                     seed=10 * i + j)
            model(**kw, arch=arch).square().mean().backward()
        for p, q in twin.items():
            q.grad = None if p.grad is None else p.grad.clone()
        for opt in (ref, fused):
            for g in opt.param_groups:
                g["lr"] = 3e-3 * (1 - i / 16)
        ref.step(regions=tracker.regions())
        fused.step(boxes={twin[p]: b for p, b in tracker.extents.items()})
    sizes = {"full": 0, "compact": 0}
    for name, p in model.named_parameters():
        q = twin[p]
        torch.testing.assert_close(q, p, rtol=1e-6, atol=1e-7)
        if p not in ref.state:
            assert q not in fused.state, name
            continue
        st, sr = fused.state[q], ref.state[p]
        torch.testing.assert_close(st["exp_avg"], sr["exp_avg"], rtol=1e-6, atol=1e-12)
        torch.testing.assert_close(st["exp_avg_sq"], sr["exp_avg_sq"], rtol=1e-6, atol=1e-14)
        counts = st["active_steps"]
        if per_element:
            assert torch.equal(counts.expand(p.shape), sr["active_steps"]), name
        else:
            assert counts.numel() == 1 and float(counts) == float(sr["step"]), name
        assert "step" not in st
        sizes["full"] += p.numel()
        sizes["compact"] += counts.numel()
    assert sizes["compact"] < 0.05 * sizes["full"]  # compact: a few % of a full-size copy


def test_fused_update_leaves_masked_elements_exactly_even_with_gradients_there():
    """Gradients outside the region (not produced by a forward) still change nothing there,
    and a never-active element's zero counts give no NaN."""
    gen = torch.Generator().manual_seed(0)
    p = torch.nn.Parameter(torch.randn(6, 5, 3, 3, generator=gen))
    opt = MaskedAdamW([p], lr=0.1, weight_decay=0.1)
    boxes = [{(4, 5, 3, 3)}, {(6, 2, 1, 1)}, {(2, 5, 3, 3), (6, 3, 3, 3)}]
    for box in boxes:
        before = p.detach().clone()
        m0 = opt.state[p]["exp_avg"].clone() if p in opt.state else torch.zeros_like(p)
        p.grad = torch.randn(p.shape, generator=gen)
        opt.step(boxes={p: box})
        active = torch.zeros(p.shape, dtype=torch.bool)
        for b in box:
            active[box_index(b, p.shape)] = True
        assert torch.equal(p.detach()[~active], before[~active])
        assert torch.equal(opt.state[p]["exp_avg"][~active], m0[~active])
        assert bool((p.detach()[active] != before[active]).all())
        assert torch.isfinite(p).all()
    counts = opt.state[p]["active_steps"]
    assert counts.shape == (6, 5, 3, 3)  # the kernel centre made all four dims vary
    assert float(counts[5, 4, 0, 0]) == 0.0 and float(counts[0, 0, 1, 1]) == 3.0


def test_compact_counts_grow_only_along_the_dimensions_that_vary():
    p = torch.nn.Parameter(torch.zeros(8, 6))
    opt = MaskedAdamW([p], lr=0.1)
    p.grad = torch.ones(8, 6)
    opt.step()
    assert opt.state[p]["active_steps"].shape == (1, 1)
    opt.step(boxes={p: {(8, 6)}})
    assert opt.state[p]["active_steps"].shape == (1, 1)
    opt.step(boxes={p: {(3, 6)}})
    assert opt.state[p]["active_steps"].shape == (8, 1)
    assert opt.state[p]["active_steps"].flatten().tolist() == [3.0] * 3 + [2.0] * 5
    opt.step(boxes={p: {(8, 2)}})
    assert opt.state[p]["active_steps"].shape == (8, 6)
    assert float(opt.state[p]["active_steps"][7, 5]) == 2.0


def test_masks_are_built_once_per_region_and_the_step_reads_nothing_on_the_host(monkeypatch):
    model = sned.build_supernet("tiny-base").train()
    space = sned.search_space("tiny-base")
    opt = MaskedAdamW(model.parameters(), lr=1e-3)
    tracker = ActivityTracker(model)
    arch = space.preset("S")

    def run_step():
        tracker.reset()
        opt.zero_grad(set_to_none=True)
        model(**sned.example_inputs(model, batch=1, frames=2), arch=arch).mean().backward()
        opt.step(boxes=tracker.extents)

    run_step()
    cached = len(opt._masks)
    assert cached == len(opt.state)

    def refuse(*_a, **_k):
        raise AssertionError("a host read inside the optimizer step")

    tracker.reset()
    opt.zero_grad(set_to_none=True)
    model(**sned.example_inputs(model, batch=1, frames=2), arch=arch).mean().backward()
    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    opt.step(boxes=tracker.extents)
    monkeypatch.undo()
    assert len(opt._masks) == cached  # the same arch again: no mask built


def test_an_old_format_checkpoint_resumes_with_compact_counts(tmp_path):
    """A checkpoint written by the previous optimizer (``step`` per tensor, full-size
    ``active_steps``) resumes in the fused one: counts converted exactly, same next steps."""
    from sned.store.checkpoint import load_training_state, save_checkpoint

    torch.manual_seed(0)
    model = torch.nn.Linear(6, 4)
    old = MaskedAdamW(model.parameters(), lr=1e-2, weight_decay=0.1, impl="slices")
    sched = torch.optim.lr_scheduler.LambdaLR(old, lambda s: 1.0)
    for k in range(3):
        model(torch.randn(2, 6)).sum().backward()
        old.step(regions={model.weight: [(slice(0, 2 + k), slice(0, 6))],
                          model.bias: [(slice(0, 2 + k),)]})
        old.zero_grad()
    assert old.state[model.weight]["active_steps"].shape == (4, 6)  # the old, full-size format
    folder = save_checkpoint(tmp_path, 3, model, old, None, sched, {}, 1)
    fresh = torch.nn.Linear(6, 4)
    new = MaskedAdamW(fresh.parameters(), lr=1e-2, weight_decay=0.1)
    load_training_state(folder, fresh, new, None,
                        torch.optim.lr_scheduler.LambdaLR(new, lambda s: 1.0))
    for k in range(3):
        for m in (model, fresh):
            torch.manual_seed(10 + k)
            m(torch.randn(2, 6)).sum().backward()
        region = {model.weight: [(slice(0, 1 + k), slice(0, 6))], model.bias: [(slice(0, 1 + k),)]}
        old.step(regions=region)
        new.step(boxes={fresh.weight: {(1 + k, 6)}, fresh.bias: {(1 + k,)}})
        old.zero_grad(), new.zero_grad()
    counts = new.state[fresh.weight]["active_steps"]
    assert counts.shape == (4, 1) and "step" not in new.state[fresh.weight]
    assert torch.equal(counts.expand(4, 6), old.state[model.weight]["active_steps"])
    torch.testing.assert_close(fresh.weight, model.weight, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(fresh.bias, model.bias, rtol=1e-6, atol=1e-8)


def test_compact_is_exact():
    t = torch.tensor([[1., 1, 1], [2, 2, 2]])[:, :, None].expand(2, 3, 4)
    c = compact(t)
    assert c.shape == (2, 1, 1) and torch.equal(c.expand(2, 3, 4), t)
    r = torch.arange(6.).reshape(2, 3)
    assert torch.equal(compact(r), r)


def test_lerp_ema_equals_diffusers_ema_model():
    from diffusers.training_utils import EMAModel

    from sned.train.ema import LerpEMA

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.LayerNorm(4))
    model[1].bias.requires_grad_(False)  # a frozen parameter is copied, as diffusers does
    ours, theirs = (cls(model.parameters(), decay=0.99, foreach=True)
                    for cls in (LerpEMA, EMAModel))
    for _ in range(20):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        ours.step(model.parameters())
        theirs.step(model.parameters())
    assert ours.optimization_step == theirs.optimization_step == 20
    assert ours.cur_decay_value == theirs.cur_decay_value
    for a, b in zip(ours.shadow_params, theirs.shadow_params):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    assert ours.state_dict().keys() == theirs.state_dict().keys()


def test_plans_cached_per_arch_signature_give_the_uncached_trajectory():
    """The update's lists built once per arch signature (tracker.signature()) and reused give
    bitwise the trajectory of building them every step, over a random sequence of repeating
    archs and sandwich unions — through a state-dict reload, changed betas and an added
    parameter group (each drops the plans), and a step whose gradients differ from the
    plan's."""
    torch.manual_seed(0)
    model = sned.build_supernet("tiny-base").train()
    space = sned.search_space("tiny-base")
    twin = {p: p.detach().clone().requires_grad_(True) for p in model.parameters()}
    cached = MaskedAdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    plain = MaskedAdamW(list(twin.values()), lr=3e-3, weight_decay=0.1)
    tracker = ActivityTracker(model)
    rng = np.random.default_rng(5)
    pool = [space.largest(), space.smallest(), space.sample(rng), space.sample(rng)]
    builds = {"n": 0}
    build = cached._group_plan

    def counted(*a, **k):
        builds["n"] += 1
        return build(*a, **k)
    cached._group_plan = counted
    extra = torch.nn.Parameter(torch.randn(3, 4))
    twin_extra = extra.detach().clone().requires_grad_(True)
    for i in range(14):
        archs = [pool[k] for k in rng.choice(4, size=1 + (i % 5 == 4), replace=False)]
        tracker.reset()
        cached.zero_grad(set_to_none=True)
        for j, arch in enumerate(archs):
            kw = sned.example_inputs(model, batch=1, resolution=arch.resolution, frames=2,
                                     seed=10 * i + j)
            model(**kw, arch=arch).square().mean().backward()
        for p, q in twin.items():
            q.grad = None if p.grad is None else p.grad.clone()
        if i == 9:  # gradients the plan did not see: a parameter without one
            name, p = next((n, p) for n, p in model.named_parameters()
                           if p in tracker.extents and p.grad is not None)
            p.grad = twin[p].grad = None
        if i == 6:  # a reload replaces every state tensor
            cached.load_state_dict(cached.state_dict())
        if i == 8:  # other betas: other masks
            for opt in (cached, plain):
                opt.param_groups[0]["betas"] = (0.8, 0.99)
        if i == 11:
            cached.add_param_group({"params": [extra]})
            plain.add_param_group({"params": [twin_extra]})
        if i >= 11:
            extra.grad = torch.full((3, 4), float(i))
            twin_extra.grad = extra.grad.clone()
        assert tracker.signature() is not None
        signature = (tracker.signature(), i >= 11)  # the caller's name of its boxes
        boxes = dict(tracker.extents)
        if i >= 11:
            boxes[extra] = {(3, 4)}
        cached.prepare(boxes=boxes, signature=signature)
        cached.step(boxes=boxes, signature=signature)
        plain.step(boxes={twin.get(p, twin_extra): b for p, b in boxes.items()})
        for p, q in list(twin.items()) + [(extra, twin_extra)]:
            assert torch.equal(p, q), i
            if p in cached.state:
                for k in ("exp_avg", "exp_avg_sq", "active_steps"):
                    assert torch.equal(cached.state[p][k], plain.state[q][k]), (i, k)
    for arch in (pool[1], pool[1]):  # the same arch again: its lists are not rebuilt
        n = builds["n"]
        tracker.reset()
        cached.zero_grad(set_to_none=True)
        extra.grad = torch.ones(3, 4)
        model(**sned.example_inputs(model, batch=1, frames=2), arch=arch).mean().backward()
        cached.step(boxes={**tracker.extents, extra: {(3, 4)}},
                    signature=(tracker.signature(), True))
    assert builds["n"] == n


def test_tracker_signature_names_the_extents():
    model = sned.build_supernet("tiny-base")
    space = sned.search_space("tiny-base")
    tracker = ActivityTracker(model)
    seen = {}
    for arch in [space.preset("S"), space.preset("B"), space.preset("S"), space.smallest()]:
        tracker.reset()
        model(**sned.example_inputs(model, batch=1, frames=2), arch=arch)
        sig = tracker.signature()
        extents = {p: frozenset(b) for p, b in tracker.extents.items()}
        assert seen.setdefault(sig, extents) == extents  # equal signatures, equal extents
    assert len(seen) == 3


def test_a_plain_step_plan_follows_which_parameters_have_gradients():
    """Without regions every parameter with a gradient is updated; the cached plan of such
    steps is rebuilt when another set of parameters has gradients."""
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    opt = MaskedAdamW([a, b], lr=0.1, weight_decay=0.0)
    a.grad, b.grad = torch.ones(3), torch.ones(2)
    opt.step()
    b_after = b.detach().clone()
    a.grad, b.grad = torch.ones(3), None
    opt.step()
    assert torch.equal(b, b_after) and float(a.detach()[0]) < float(b.detach()[0])
    a.grad, b.grad = torch.ones(3), torch.ones(2)
    opt.step()
    assert float(b.detach()[0]) < float(b_after[0])
    assert opt.state[b]["active_steps"].item() == 2 and opt.state[a]["active_steps"].item() == 3
