"""Exact freezing of the unsampled supernet (SNED Algorithm 1: "update the sampled subnet while
freezing the rest").

Plain AdamW does not freeze a weight whose gradient is zero: weight decay still shrinks it and
stale moments keep moving it. :class:`MaskedAdamW` applies the AdamW update — parameter,
``exp_avg``, ``exp_avg_sq`` and decay — only on the active region of each parameter, so every
inactive element stays bitwise unchanged.

The active region comes from the forward itself: :class:`ActivityTracker` hooks every module
that owns parameters and records, per call, the active views that the elastic layers'
``active_weights`` return (the same function forward and extraction use). Regions are prefixes;
several archs in one step (sandwich rule) give a union of prefixes, which is split into
disjoint boxes so no element is updated twice.

Bias correction counts steps per element by default: an element's moments, bias correction
and decay advance only on the steps where it was active, so every slice follows plain AdamW
run on its own active steps (``per_element=False``: one count per tensor, as
``torch.optim.SparseAdam`` does).
"""

from __future__ import annotations

import math
from collections import defaultdict
from itertools import product

import torch
from torch import Tensor, nn

from ..nn.elastic import ElasticConv2d, ElasticGroupNorm, ElasticLinear

_ELASTIC = (ElasticLinear, ElasticConv2d, ElasticGroupNorm)
Box = tuple[int, ...]  # prefix extents, one per dimension


class ActivityTracker:
    """Records the active prefix of every parameter touched by forwards with gradient since
    :meth:`reset` (a forward without gradient, such as a distillation teacher's, updates
    nothing)."""

    def __init__(self, model: nn.Module) -> None:
        self.extents: dict[Tensor, set[Box]] = defaultdict(set)
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
        if not torch.is_grad_enabled():
            return  # a forward without gradient (a distillation teacher's) activates nothing
        owned = self._owned[module]
        if isinstance(module, _ELASTIC):
            views = module.active_weights(*args[1:])
            for name, view in zip(("weight", "bias"), views):
                param = owned.get(name)
                if param is not None and view is not None:
                    self.extents[param].add(tuple(view.shape))
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


class MaskedAdamW(torch.optim.Optimizer):
    """AdamW that updates only given regions of each parameter.

    Call :meth:`step` with ``regions`` (from :meth:`ActivityTracker.regions`); parameters
    missing from it are not touched at all. Without ``regions`` every parameter with a
    gradient is fully active (plain AdamW semantics).

    Args:
        per_element: count steps per ELEMENT (default): each element's moments, bias
            correction and weight decay advance only on the steps where it was active, so a
            slice's trajectory equals plain AdamW run on its active steps alone. The counts
            are a float32 tensor the size of the parameter (state ``active_steps``; one more
            parameter-sized buffer). False: one step count per tensor (the bias correction of
            a slice active in k of t steps uses t; the ablation of issue 18).
    """

    def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.01, per_element: bool = True) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      per_element=per_element))

    def _init_state(self, p: Tensor, per_element: bool) -> dict:
        state = self.state[p]
        if "exp_avg" not in state:
            state["step"] = torch.zeros((), dtype=torch.float64)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if per_element and "active_steps" not in state:  # a per-tensor (older) state: every
            # element has had the tensor's steps
            state["active_steps"] = torch.full_like(p, float(state["step"]),
                                                    dtype=torch.float32)
        elif per_element and state["active_steps"].dtype != torch.float32:
            state["active_steps"] = state["active_steps"].float()
        return state

    @torch.no_grad()
    def step(self, closure=None, regions: dict[Tensor, list[tuple[slice, ...]]] | None = None):
        loss = None if closure is None else closure()
        for group in self.param_groups:
            per_element = group.setdefault("per_element", True)
            b1, b2 = group["betas"]
            ps, gs, ms, vs, ns, step_sizes, denoms_c = [], [], [], [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if regions is not None and p not in regions:
                    continue
                state = self._init_state(p, per_element)
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
        return loss


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
