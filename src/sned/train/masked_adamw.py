"""Exact freezing of the unsampled supernet (SNED Algorithm 1: "update the sampled subnet while
freezing the rest").

Plain AdamW does not freeze a weight whose gradient is zero: weight decay still shrinks it and
stale moments keep moving it. :class:`MaskedAdamW` applies the AdamW update — parameter,
``exp_avg``, ``exp_avg_sq`` and decay — only on the active region of each parameter, so every
inactive element stays bitwise unchanged.

The active region comes from the forward itself: :class:`ActivityTracker` hooks every module
that owns parameters and records, per call, the active views that the elastic layers'
``active_weights`` return (the same function forward and extraction use). Regions are prefixes
(centred extents for conv kernels); several archs in one step (sandwich rule) give a union.

How the update runs (``impl="fused"``, the default): every elastic weight varies along its
channel dimensions (and the kernel centre) only, so the active region is a boolean MASK of the
parameter's shape with the other dimensions set to 1, built once per (parameter, region) and
cached. The update works on the dense FULL tensors with those broadcast masks — a dozen
multi-tensor (``torch._foreach_*``) calls per step over all parameters, never a slice, no
``.item()`` — and leaves every masked-out element exactly as it was.

Bias correction counts steps per element (``per_element=True``): an element's moments, bias
correction and decay advance only on the steps where it was active, so every slice follows
plain AdamW run on its own active steps. The counts (state ``active_steps``) are stored
COMPACT: a float32 tensor broadcastable to the parameter, with size 1 on every dimension along
which they never differed (exact: a dimension is only kept once a mask varies along it).
``per_element=False``: one count per tensor, as ``torch.optim.SparseAdam`` does.

``impl="slices"`` is the previous implementation (a foreach update over the active slices,
full-size counts), kept as the reference that ``benchmarks/bench_step_ops.py`` compares
against. Optimizer states of older checkpoints (a ``step`` per tensor, full-size
``active_steps``) are converted when they are first used (:func:`convert_state`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from itertools import product

import torch
from torch import Tensor, nn

from ..nn.elastic import ElasticConv2d, ElasticGroupNorm, ElasticLinear

_ELASTIC = (ElasticLinear, ElasticConv2d, ElasticGroupNorm)
Box = tuple[int, ...]  # prefix extents, one per dimension (conv kernels: centred extents)
IMPLS = ("fused", "slices")
_MASK_CACHE_LIMIT = 20000


class ActivityTracker:
    """Records the active prefix of every parameter touched by forwards since :meth:`reset`."""

    def __init__(self, model: nn.Module) -> None:
        self.extents: dict[Tensor, set[Box]] = defaultdict(set)
        self._shapes: dict[tuple, list[tuple[Tensor, Box]]] = {}
        self._handles = []
        # the parameters as the optimizer holds them, taken now: FSDP2 swaps unsharded copies
        # into the modules during forward, but the regions must name the sharded originals
        self._owned: dict[nn.Module, dict[str, Tensor]] = {}
        for module in model.modules():
            owned = dict(module.named_parameters(recurse=False))
            if owned:
                self._owned[module] = owned
                self._handles.append(module.register_forward_pre_hook(self._hook))

    def _hook(self, module: nn.Module, args: tuple) -> None:
        owned = self._owned[module]
        if isinstance(module, _ELASTIC):
            widths = args[1:]
            key = (module, widths) if all(w is None or type(w) is int for w in widths) else None
            shapes = self._shapes.get(key) if key is not None else None
            if shapes is None:  # the views forward takes, once per (layer, widths)
                views = module.active_weights(*widths)
                shapes = [(param, tuple(view.shape)) for param, view in
                          zip((owned.get("weight"), owned.get("bias")), views)
                          if param is not None and view is not None]
                if key is not None:
                    self._shapes[key] = shapes
            for param, shape in shapes:
                self.extents[param].add(shape)
        else:
            for param in owned.values():
                self.extents[param].add(tuple(param.shape))

    def reset(self) -> None:
        self.extents.clear()

    def regions(self) -> dict[Tensor, list[tuple[slice, ...]]]:
        """Per active parameter, disjoint index tuples covering the union of its prefixes."""
        return {p: disjoint_boxes(boxes, p.shape) for p, boxes in self.extents.items()}

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def disjoint_boxes(boxes: set[Box], shape: torch.Size) -> list[tuple]:
    """Split a union of prefix boxes into disjoint index tuples (each indexes a view).

    Prefixes may differ in the two leading dimensions (out, in). Trailing dimensions (conv
    kernels) are CENTRED extents: an elastic kernel is the centre slice of the full one. When
    boxes differ in their kernels, the union is split per kernel position.
    """
    if any(tuple(b) == tuple(shape) for b in boxes):
        return [tuple(slice(None) for _ in shape)]
    if len(shape) == 1 or len({b[1:] for b in boxes}) == 1:
        rest = next(iter(boxes))[1:]
        trailing = tuple(_centred(r, n) for r, n in zip(rest[1:], shape[2:]))
        return [(slice(0, max(b[0] for b in boxes)),) + tuple(slice(0, r) for r in rest[:1])
                + trailing]
    kernels = {b[2:] for b in boxes}
    if len(kernels) == 1:
        trailing = tuple(_centred(r, n) for r, n in zip(next(iter(kernels)), shape[2:]))
        return [oi + trailing for oi in _staircase({b[:2] for b in boxes})]
    out = []
    for pos in product(*(range(n) for n in shape[2:])):
        covering = {b[:2] for b in boxes
                    if all(_centred(e, n).start <= q < _centred(e, n).stop
                           for e, n, q in zip(b[2:], shape[2:], pos))}
        out += [oi + pos for oi in _staircase(covering)] if covering else []
    return out


def _staircase(boxes: set[tuple[int, int]]) -> list[tuple[slice, slice]]:
    """Disjoint (out, in) slices covering a union of 2-D prefix boxes."""
    # sort by first extent descending and keep boxes that widen the second one
    stair: list[tuple[int, int]] = []
    for b in sorted(boxes, key=lambda b: (-b[0], -b[1])):
        if not stair or b[1] > stair[-1][1]:
            stair.append(b)
    out, prev = [], 0
    for a, b in stair:
        out.append((slice(0, a), slice(prev, b)))
        prev = b
    return out


def _centred(extent: int, full: int) -> slice:
    lo = (full - extent) // 2
    return slice(lo, lo + extent)


def box_index(box: Box, shape: torch.Size) -> tuple[slice, ...]:
    """The index of a prefix box: prefixes on the two leading dimensions, centred extents on
    the trailing (kernel) ones."""
    lead = tuple(slice(0, e) for e in box[:2])
    return lead + tuple(_centred(e, n) for e, n in zip(box[2:], shape[2:]))


def _index_key(idx: tuple, shape: torch.Size) -> tuple:
    return tuple(s.indices(n)[:2] if isinstance(s, slice) else (s, s + 1)
                 for s, n in zip(idx, shape))


def varying_dims(keys: list[tuple], shape: torch.Size) -> set[int]:
    """Dimensions along which a union of index boxes (``(start, stop)`` per dim) is not full."""
    return {d for key in keys for d, (a, b) in enumerate(key) if (a, b) != (0, shape[d])}


def union_mask(keys: list[tuple], shape: torch.Size, mask_shape: tuple[int, ...],
               device) -> Tensor:
    """The union of index boxes as a bool tensor of ``mask_shape`` (``shape`` with size 1 on
    dimensions where no box varies), broadcastable to ``shape``."""
    mask = torch.zeros(mask_shape, dtype=torch.bool, device=device)  # built where it is used:
    for key in keys:  # fills, no host→device copy (that would wait for the queued GPU work)
        mask[tuple(slice(a, b) if m > 1 else slice(None)
                   for (a, b), m in zip(key, mask_shape))] = True
    return mask


def compact(counts: Tensor) -> Tensor:
    """The smallest tensor broadcastable to ``counts`` with the same values: every dimension
    along which ``counts`` is constant is cut to size 1 (exact)."""
    for d in range(counts.dim()):
        if counts.shape[d] > 1 and bool((counts == counts.narrow(d, 0, 1)).all()):
            counts = counts.narrow(d, 0, 1)
    return counts.contiguous().clone()


def convert_state(state: dict, p: Tensor, per_element: bool) -> None:
    """An optimizer state of an older run (``step`` per tensor, full-size ``active_steps`` or
    none) → the compact format, in place: ``active_steps`` broadcastable to ``p`` (float32)."""
    step = state.pop("step")
    counts = state.get("active_steps")
    if per_element and counts is not None and counts.dim():
        state["active_steps"] = compact(counts.to(p.device, torch.float32))
    else:
        state["active_steps"] = torch.full((1,) * p.dim(), float(step), dtype=torch.float32,
                                           device=p.device)


class _Masks:
    """What the update needs of one (parameter, region) at one count shape, on the device:
    ``active`` (float 0/1), the moments' weights and the factor folding the mask into the
    denominator (1 where active, inf elsewhere: the step there is m / inf = 0)."""

    __slots__ = ("active", "m_weight", "v_keep", "v_add", "denom")

    def __init__(self, mask: Tensor, b1: float, b2: float) -> None:
        self.active = mask.float()
        self.m_weight = torch.where(mask, 1 - b1, 0.0)
        self.v_keep = torch.where(mask, b2, 1.0)
        self.v_add = torch.where(mask, 1 - b2, 0.0)
        self.denom = torch.where(mask, 1.0, math.inf)


class _FlatCounts:
    """The compact counts of a group's parameters (on one device) as views of ONE flat
    buffer: ``state["active_steps"]`` IS the view, and the bias corrections of every
    parameter are computed in 8 tensor ops per step, not 8 per parameter."""

    def __init__(self, params: list[Tensor], states: list[dict], device) -> None:
        sizes = [st["active_steps"].numel() for st in states]
        self.counts = torch.empty(sum(sizes), dtype=torch.float32, device=device)
        self.n1, self.bc1, self.bc2 = (torch.empty_like(self.counts) for _ in range(3))
        self.views: dict[Tensor, tuple[Tensor, Tensor, Tensor]] = {}
        off = 0
        for p, st, n in zip(params, states, sizes):
            shape = st["active_steps"].shape
            view = self.counts[off:off + n].view(shape)
            view.copy_(st["active_steps"])
            st["active_steps"] = view
            self.views[p] = (view, self.bc1[off:off + n].view(shape),
                             self.bc2[off:off + n].view(shape))
            off += n

    def holds(self, p: Tensor, state: dict) -> bool:
        v = self.views.get(p)
        return v is not None and v[0] is state["active_steps"]

    def bias_corrections(self, b1: float, b2: float) -> None:
        """bc1 = 1 − b1ⁿ, bc2 = √(1 − b2ⁿ) as −expm1(n·ln b) (accurate in float32), with n
        clamped to ≥ 1 so never-active elements give finite (unused) values."""
        torch.clamp_min(self.counts, 1.0, out=self.n1)
        torch.mul(self.n1, math.log(b2), out=self.bc2)
        self.bc2.expm1_().neg_().sqrt_()
        torch.mul(self.n1, math.log(b1), out=self.bc1)
        self.bc1.expm1_().neg_()


class MaskedAdamW(torch.optim.Optimizer):
    """AdamW that updates only given regions of each parameter.

    Call :meth:`step` with ``boxes`` (:attr:`ActivityTracker.extents`: per parameter the
    prefix boxes its forwards used) or ``regions`` (index tuples per parameter, e.g.
    :meth:`ActivityTracker.regions`); parameters missing from them are not touched at all.
    Without either, every parameter with a gradient is fully active (plain AdamW semantics).

    Args:
        per_element: count steps per ELEMENT (default): each element's moments, bias
            correction and weight decay advance only on the steps where it was active, so a
            slice's trajectory equals plain AdamW run on its active steps alone. False: one
            step count per tensor (the bias correction of a slice active in k of t steps uses
            t; the ablation of issue 18).
        impl: ``fused`` (default: dense full tensors, broadcast masks, compact counts) or
            ``slices`` (the previous implementation, for comparison; full-size counts).
    """

    def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.01, per_element: bool = True,
                 impl: str = "fused") -> None:
        if impl not in IMPLS:
            raise ValueError(f"MaskedAdamW: impl {impl!r} is not one of {IMPLS}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      per_element=per_element))
        self.impl = impl
        self._masks: dict[tuple, _Masks] = {}
        self._flat: dict[tuple, _FlatCounts] = {}
        self._index = {p: i for i, p in enumerate(
            q for g in self.param_groups for q in g["params"])}

    # ------------------------------------------------------------------------- state
    def _state(self, p: Tensor, per_element: bool) -> dict:
        state = self.state[p]
        if "exp_avg" not in state:
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["active_steps"] = torch.zeros((1,) * p.dim(), dtype=torch.float32,
                                                device=p.device)
        elif "step" in state:
            convert_state(state, p, per_element)
        return state

    def _masks_for(self, p: Tensor, state: dict, keys: tuple | None, b1: float,
                   b2: float, per_element: bool) -> _Masks:
        """The cached masks of ``p``'s region ``keys`` (None = all of it); widens the
        compact counts when the region varies along a dimension they do not have yet."""
        counts = state["active_steps"]
        cache_key = (self._index.get(p, id(p)), keys, tuple(counts.shape), b1, b2)
        hit = self._masks.get(cache_key)
        if hit is not None:
            return hit
        keys_list = [] if keys is None else list(keys)
        dims = set() if keys is None else varying_dims(keys_list, p.shape)
        if per_element:
            have = {d for d, n in enumerate(counts.shape) if n > 1}
            if not dims <= have:
                shape = tuple(p.shape[d] if d in dims | have else 1 for d in range(p.dim()))
                state["active_steps"] = counts = counts.expand(shape).contiguous()
        shape = tuple(counts.shape) if per_element else tuple(
            p.shape[d] if d in dims else 1 for d in range(p.dim()))
        mask = (torch.ones(shape, dtype=torch.bool, device=p.device) if keys is None
                else union_mask(keys_list, p.shape, shape, p.device))
        if len(self._masks) >= _MASK_CACHE_LIMIT:
            self._masks.clear()
        masks = self._masks[(self._index.get(p, id(p)), keys, tuple(counts.shape), b1, b2)] \
            = _Masks(mask, b1, b2)
        return masks

    def convert_states(self) -> None:
        """Convert every loaded state of the previous format (:func:`convert_state`) now —
        called after a checkpoint is loaded, so no full-size counts stay in memory or reach
        the next checkpoint (states are otherwise converted when first stepped)."""
        if self.impl != "fused":
            return
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state.get(p)
                if state and "step" in state:
                    convert_state(state, p, group.get("per_element", True))

    # ------------------------------------------------------------------------- the step
    @torch.no_grad()
    def step(self, closure=None, regions: dict[Tensor, list[tuple]] | None = None,
             boxes: dict[Tensor, set[Box]] | None = None):
        loss = None if closure is None else closure()
        if self.impl == "slices":
            if boxes is not None:
                regions = {p: disjoint_boxes(b, p.shape) for p, b in boxes.items()}
            self._step_slices(regions)
            return loss
        for gi, group in enumerate(self.param_groups):
            per_element = group.setdefault("per_element", True)
            b1, b2 = group["betas"]
            ps, gs, ms, vs, masks = [], [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if boxes is not None:
                    if p not in boxes:
                        continue
                    keys = _boxes_key(boxes[p], p.shape)
                elif regions is not None:
                    if p not in regions:
                        continue
                    keys = _regions_key(regions[p], p.shape)
                else:
                    keys = None
                state = self._state(p, per_element)
                masks.append(self._masks_for(p, state, keys, b1, b2, per_element))
                ps.append(p)
                gs.append(p.grad)
                ms.append(state["exp_avg"])
                vs.append(state["exp_avg_sq"])
            if not ps:
                continue
            flat = self._flat_counts(gi, group, ps)
            ns = [flat.views[p][0] for p in ps]
            if per_element:
                torch._foreach_add_(ns, [k.active for k in masks])
            else:
                torch._foreach_add_(ns, 1.0)
            flat.bias_corrections(b1, b2)
            fused_masked_adamw_(ps, gs, ms, vs, [flat.views[p][1] for p in ps],
                                [flat.views[p][2] for p in ps], masks, lr=group["lr"],
                                eps=group["eps"], weight_decay=group["weight_decay"])
        return loss

    def _flat_counts(self, gi: int, group: dict, ps: list[Tensor]) -> _FlatCounts:
        """The group's flat counts, rebuilt when a parameter's counts are not its view (new
        state, counts widened, a loaded checkpoint)."""
        key = (gi, ps[0].device)
        flat = self._flat.get(key)
        if flat is None or not all(flat.holds(p, self.state[p]) for p in ps):
            held = [q for q in group["params"] if q.device == ps[0].device
                    and "active_steps" in self.state.get(q, {}) and "step" not in self.state[q]]
            flat = self._flat[key] = _FlatCounts(held, [self.state[q] for q in held],
                                                 ps[0].device)
        return flat

    def _step_slices(self, regions) -> None:
        """The previous implementation: foreach over the active slices, full-size counts."""
        for group in self.param_groups:
            per_element = group.setdefault("per_element", True)
            b1, b2 = group["betas"]
            ps, gs, ms, vs, ns, step_sizes, denoms_c = [], [], [], [], [], [], []
            for p in group["params"]:
                if p.grad is None or (regions is not None and p not in regions):
                    continue
                state = _slices_state(self.state[p], p, per_element)
                state["step"] += 1
                t = float(state["step"])
                full = [tuple(slice(None) for _ in p.shape)]
                for idx in (full if regions is None else regions[p]):
                    ps.append(p[idx])
                    gs.append(p.grad[idx])
                    ms.append(state["exp_avg"][idx])
                    vs.append(state["exp_avg_sq"][idx])
                    if per_element:
                        ns.append(state["active_steps"][idx])
                    else:
                        step_sizes.append(group["lr"] / (1 - b1 ** t))
                        denoms_c.append(math.sqrt(1 - b2 ** t))
            if not ps:
                continue
            if group["weight_decay"]:
                torch._foreach_mul_(ps, 1 - group["lr"] * group["weight_decay"])
            torch._foreach_lerp_(ms, gs, 1 - b1)
            torch._foreach_mul_(vs, b2)
            torch._foreach_addcmul_(vs, gs, gs, 1 - b2)
            denom = torch._foreach_sqrt(vs)
            if per_element:
                _per_element_update(ps, ms, denom, ns, group["lr"], b1, b2, group["eps"])
                continue
            torch._foreach_div_(denom, denoms_c)
            torch._foreach_add_(denom, group["eps"])
            torch._foreach_mul_(denom, [1 / s for s in step_sizes])
            torch._foreach_addcdiv_(ps, ms, denom, -1.0)


def _boxes_key(boxes, shape: torch.Size) -> tuple:
    """A hashable, order-free key of a union of boxes: its index boxes, sorted."""
    return tuple(sorted({_index_key(box_index(b, shape), shape) for b in boxes}))


def _regions_key(regions: list[tuple], shape: torch.Size) -> tuple:
    return tuple(sorted({_index_key(idx, shape) for idx in regions}))


def fused_masked_adamw_(ps: list[Tensor], gs: list[Tensor], ms: list[Tensor],
                        vs: list[Tensor], bc1: list[Tensor], bc2: list[Tensor],
                        masks: list[_Masks], *, lr: float, eps: float,
                        weight_decay: float) -> None:
    """The masked AdamW update of full, dense tensors with broadcast masks, in place.

    ``ps``/``gs``/``ms``/``vs`` are the parameters, gradients and moments (full shapes);
    ``bc1`` = 1 − b1ⁿ and ``bc2`` = √(1 − b2ⁿ) from each element's count n (already advanced;
    the counts' compact shapes); ``masks`` each parameter's :class:`_Masks` (same shapes).
    Where a mask is set this is AdamW with the element's own step count::

        p ← p·(1 − lr·wd);  m ← lerp(m, g, 1 − b1);  v ← b2·v + (1 − b2)·g²
        p ← p − lr · m / ((√v / bc2 + eps) · bc1)

    and elsewhere every tensor keeps its value exactly (weights 0 / 1 and a denominator of
    inf there). One multi-tensor call per line; the only full-size temporary is the
    denominator (one fp32 copy of the weights, what :mod:`sned.train.memory` counts).
    """
    active = [k.active for k in masks]
    bc1 = torch._foreach_mul(bc1, [k.denom for k in masks])  # inf where inactive
    if weight_decay:
        decay = torch._foreach_mul(active, -lr * weight_decay)
        torch._foreach_add_(decay, 1.0)
        torch._foreach_mul_(ps, decay)
    torch._foreach_lerp_(ms, gs, [k.m_weight for k in masks])
    scaled = torch._foreach_mul(gs, [k.v_add for k in masks])
    torch._foreach_mul_(vs, [k.v_keep for k in masks])
    torch._foreach_addcmul_(vs, scaled, gs)
    del scaled
    denom = torch._foreach_sqrt(vs)
    torch._foreach_div_(denom, bc2)
    torch._foreach_add_(denom, eps)
    torch._foreach_mul_(denom, bc1)
    torch._foreach_addcdiv_(ps, ms, denom, -lr)


def _slices_state(state: dict, p: Tensor, per_element: bool) -> dict:
    """The previous implementation's state (a ``step`` per tensor, full-size counts)."""
    if "exp_avg" not in state:
        state["step"] = torch.zeros((), dtype=torch.float64)
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    if "step" not in state:  # a compact state
        counts = state["active_steps"]
        state["step"] = counts.max().double().cpu()
        state["active_steps"] = counts.expand(p.shape).contiguous()
    if per_element and "active_steps" not in state:  # a per-tensor (older) state: every
        # element has had the tensor's steps
        state["active_steps"] = torch.full_like(p, float(state["step"]),
                                                dtype=torch.float32)
    elif per_element and state["active_steps"].dtype != torch.float32:
        state["active_steps"] = state["active_steps"].float()
    return state


def _per_element_update(ps: list[Tensor], ms: list[Tensor], denom: list[Tensor],
                        ns: list[Tensor], lr: float, b1: float, b2: float, eps: float) -> None:
    """``p -= lr · (m / (1 − b1ⁿ)) / (√v / √(1 − b2ⁿ) + eps)`` with ``n`` each element's own
    step count (incremented here); ``denom`` holds √v and is consumed. One more buffer the
    size of the active slices holds both bias corrections in turn (the update's temporaries
    are ``denom`` + that buffer: what :func:`sned.train.memory.estimate` counts)."""
    torch._foreach_add_(ns, 1.0)
    # 1 − bⁿ as −expm1(n·ln b): accurate in float32 where 1 − b**n would lose digits
    bc = torch._foreach_mul(ns, math.log(b2))
    torch._foreach_expm1_(bc)
    torch._foreach_neg_(bc)
    torch._foreach_sqrt_(bc)
    torch._foreach_div_(denom, bc)
    torch._foreach_add_(denom, eps)
    torch._foreach_copy_(bc, ns)  # the same buffer, now for 1 − b1ⁿ
    torch._foreach_mul_(bc, math.log(b1))
    torch._foreach_expm1_(bc)
    torch._foreach_neg_(bc)
    torch._foreach_mul_(denom, bc)  # m / bc1 / d  ==  m / (d · bc1)
    torch._foreach_addcdiv_(ps, ms, denom, -lr)
