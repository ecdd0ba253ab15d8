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

``impl="slices"`` is the previous implementation (:mod:`sned.train.masked_adamw_slices`: a
foreach update over the active slices, full-size counts), kept as the reference that
``benchmarks/bench_step_ops.py`` compares against. Optimizer states of older checkpoints (a
``step`` per tensor, full-size ``active_steps``) are converted when they are first used
(:func:`convert_state`).

Host work: the per-parameter lists of a step are built once per arch signature
(:meth:`ActivityTracker.signature`) and reused (bitwise the same update).
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import NamedTuple

import torch
from torch import Tensor

from .masked_adamw_slices import step_slices
from .regions import (ActivityTracker, Box, index_key, box_index, disjoint_boxes,  # noqa: F401
                      union_mask, varying_dims)

IMPLS = ("fused", "slices")
_MASK_CACHE_LIMIT = 20000
_PLAN_CACHE_LIMIT = 256
_ALL = ("all",)  # the plan key of a step without regions (every parameter with a gradient)


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


class MaskLists(NamedTuple):
    """The :class:`_Masks` of a step's parameters as one list per field (what the
    multi-tensor calls of :func:`fused_masked_adamw_` take)."""

    active: list[Tensor]
    m_weight: list[Tensor]
    v_keep: list[Tensor]
    v_add: list[Tensor]
    denom: list[Tensor]

    @classmethod
    def of(cls, masks: list[_Masks]) -> "MaskLists":
        return cls(*([getattr(k, f) for k in masks] for f in cls._fields))


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


class _GroupPlan(NamedTuple):
    """One parameter group's part of a step: the parameters updated (``ps``; ``missing``:
    those in the regions whose gradient was None, skipped) and the lists of their states,
    count views and masks — everything but the gradients, which are new tensors each step."""

    group: dict
    ps: list[Tensor]
    ms: list[Tensor]
    vs: list[Tensor]
    ns: list[Tensor]
    bc1: list[Tensor]
    bc2: list[Tensor]
    masks: MaskLists
    missing: list[Tensor]
    flat: _FlatCounts

    def grads(self) -> list[Tensor] | None:
        """The gradients of ``ps``, or None when the gradients present differ from the
        plan's (it was built for other ones: rebuild)."""
        gs = [p.grad for p in self.ps]
        if any(g is None for g in gs) or any(p.grad is not None for p in self.missing):
            return None
        return gs


class _Plan(NamedTuple):
    epoch: int
    structure: tuple
    groups: list[_GroupPlan]


class MaskedAdamW(torch.optim.Optimizer):
    """AdamW that updates only given regions of each parameter.

    Call :meth:`step` with ``boxes`` (:attr:`ActivityTracker.extents`: per parameter the
    prefix boxes its forwards used) or ``regions`` (index tuples per parameter, e.g.
    :meth:`ActivityTracker.regions`); parameters missing from them are not touched at all.
    Without either, every parameter with a gradient is fully active (plain AdamW semantics).

    With ``signature`` (:meth:`ActivityTracker.signature`: equal signatures, equal boxes) the
    step's per-parameter lists — parameters, states, count views, masks — are built once per
    signature and reused; :meth:`prepare` builds them early (the trainer calls it before the
    step's one device read, so the host work overlaps the queued backward). A cached plan is
    dropped when anything it holds changes: a new state, widened counts, a loaded state dict
    or converted states, a step of the ``slices`` implementation, an added or replaced
    parameter list, other betas, other parameters with gradients. (States written into
    :attr:`state` by hand need :meth:`load_state_dict` instead.)

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
        self._epoch = 0  # bumped whenever a cached plan may hold stale tensors
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      per_element=per_element))
        self.impl = impl
        self._masks: dict[tuple, _Masks] = {}
        self._flat: dict[tuple, _FlatCounts] = {}
        self._plans: dict[tuple, _Plan] = {}
        self._index_params()

    def _index_params(self) -> None:
        self._index = {p: i for i, p in enumerate(
            q for g in self.param_groups for q in g["params"])}

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        self._epoch += 1
        if hasattr(self, "_index"):
            self._index_params()

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._epoch += 1  # new state tensors: no plan may hold the old ones

    # ------------------------------------------------------------------------- state
    def _state(self, p: Tensor, per_element: bool) -> dict:
        state = self.state[p]
        if "exp_avg" not in state:
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["active_steps"] = torch.zeros((1,) * p.dim(), dtype=torch.float32,
                                                device=p.device)
            self._epoch += 1
        elif "step" in state:
            convert_state(state, p, per_element)
            self._epoch += 1
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
                self._epoch += 1
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
        self._epoch += 1
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state.get(p)
                if state and "step" in state:
                    convert_state(state, p, group.get("per_element", True))

    # ------------------------------------------------------------------------- the plan
    def prepare(self, boxes: dict[Tensor, set[Box]] | None = None,
                signature: Hashable | None = None) -> None:
        """Build (or find) the per-parameter lists of the coming :meth:`step` with the same
        ``boxes`` and ``signature`` now — after the backward, before the step's device
        read. Without a signature nothing is cached and this does nothing."""
        if self.impl == "fused" and signature is not None:
            self._plan(boxes, None, signature)

    def _plan(self, boxes, regions, signature: Hashable | None,
              rebuild: bool = False) -> list[_GroupPlan]:
        """The step's group plans: the cached one of ``signature`` while valid (and not
        ``rebuild``), else built (and cached under ``signature``)."""
        for group in self.param_groups:
            group.setdefault("per_element", True)
        if signature is None and boxes is None and regions is None:
            signature = _ALL
        key = None if signature is None else (signature, tuple(
            (tuple(g["betas"]), g["per_element"]) for g in self.param_groups))
        structure = tuple((id(g["params"]), len(g["params"])) for g in self.param_groups)
        plan = self._plans.get(key) if key is not None else None
        if (plan is not None and not rebuild and plan.epoch == self._epoch
                and plan.structure == structure):
            return plan.groups
        groups = [self._group_plan(gi, g, boxes, regions)
                  for gi, g in enumerate(self.param_groups)]
        if key is not None:
            if len(self._plans) >= _PLAN_CACHE_LIMIT:
                self._plans.clear()
            self._plans[key] = _Plan(self._epoch, structure, groups)
        return groups

    def _group_plan(self, gi: int, group: dict, boxes, regions) -> _GroupPlan | None:
        per_element = group["per_element"]
        b1, b2 = group["betas"]
        ps, missing, ms, vs, masks = [], [], [], [], []
        for p in group["params"]:
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
            if p.grad is None:
                missing.append(p)
                continue
            state = self._state(p, per_element)
            masks.append(self._masks_for(p, state, keys, b1, b2, per_element))
            ps.append(p)
            ms.append(state["exp_avg"])
            vs.append(state["exp_avg_sq"])
        if not ps:
            return None
        flat = self._flat_counts(gi, group, ps)
        views = [flat.views[p] for p in ps]
        return _GroupPlan(group, ps, ms, vs, [v[0] for v in views], [v[1] for v in views],
                          [v[2] for v in views], MaskLists.of(masks), missing, flat)

    # ------------------------------------------------------------------------- the step
    @torch.no_grad()
    def step(self, closure=None, regions: dict[Tensor, list[tuple]] | None = None,
             boxes: dict[Tensor, set[Box]] | None = None, signature: Hashable | None = None):
        loss = None if closure is None else closure()
        if self.impl == "slices":
            self._epoch += 1  # the slice path rewrites states (full counts, a ``step``)
            if boxes is not None:
                regions = {p: disjoint_boxes(b, p.shape) for p, b in boxes.items()}
            step_slices(self, regions)
            return loss
        plans = self._plan(boxes, regions, signature)
        grads = [None if gp is None else gp.grads() for gp in plans]
        if any(gp is not None and gs is None for gp, gs in zip(plans, grads)):
            plans = self._plan(boxes, regions, signature, rebuild=True)  # other gradients
            grads = [None if gp is None else gp.grads() for gp in plans]
        for gp, gs in zip(plans, grads):
            if gp is None:
                continue
            group = gp.group
            b1, b2 = group["betas"]
            if group["per_element"]:
                torch._foreach_add_(gp.ns, gp.masks.active)
            else:
                torch._foreach_add_(gp.ns, 1.0)
            gp.flat.bias_corrections(b1, b2)
            fused_masked_adamw_(gp.ps, gs, gp.ms, gp.vs, gp.bc1, gp.bc2, gp.masks,
                                lr=group["lr"], eps=group["eps"],
                                weight_decay=group["weight_decay"])
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
            self._epoch += 1
        return flat


def _boxes_key(boxes, shape: torch.Size) -> tuple:
    """A hashable, order-free key of a union of boxes: its index boxes, sorted."""
    return tuple(sorted({index_key(box_index(b, shape), shape) for b in boxes}))


def _regions_key(regions: list[tuple], shape: torch.Size) -> tuple:
    return tuple(sorted({index_key(idx, shape) for idx in regions}))


def fused_masked_adamw_(ps: list[Tensor], gs: list[Tensor], ms: list[Tensor],
                        vs: list[Tensor], bc1: list[Tensor], bc2: list[Tensor],
                        masks: MaskLists, *, lr: float, eps: float,
                        weight_decay: float) -> None:
    """The masked AdamW update of full, dense tensors with broadcast masks, in place.

    ``ps``/``gs``/``ms``/``vs`` are the parameters, gradients and moments (full shapes);
    ``bc1`` = 1 − b1ⁿ and ``bc2`` = √(1 − b2ⁿ) from each element's count n (already advanced;
    the counts' compact shapes); ``masks`` the parameters' :class:`_Masks` (same shapes).
    Where a mask is set this is AdamW with the element's own step count::

        p ← p·(1 − lr·wd);  m ← lerp(m, g, 1 − b1);  v ← b2·v + (1 − b2)·g²
        p ← p − lr · m / ((√v / bc2 + eps) · bc1)

    and elsewhere every tensor keeps its value exactly (weights 0 / 1 and a denominator of
    inf there). One multi-tensor call per line; the only full-size temporary is the
    denominator (one fp32 copy of the weights, what :mod:`sned.train.memory` counts).
    """
    bc1 = torch._foreach_mul(bc1, masks.denom)  # inf where inactive
    if weight_decay:
        decay = torch._foreach_mul(masks.active, -lr * weight_decay)
        torch._foreach_add_(decay, 1.0)
        torch._foreach_mul_(ps, decay)
    torch._foreach_lerp_(ms, gs, masks.m_weight)
    scaled = torch._foreach_mul(gs, masks.v_add)
    torch._foreach_mul_(vs, masks.v_keep)
    torch._foreach_addcmul_(vs, scaled, gs)
    del scaled
    denom = torch._foreach_sqrt(vs)
    torch._foreach_div_(denom, bc2)
    torch._foreach_add_(denom, eps)
    torch._foreach_mul_(denom, bc1)
    torch._foreach_addcdiv_(ps, ms, denom, -lr)
