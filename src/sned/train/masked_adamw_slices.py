"""The previous masked AdamW update (``MaskedAdamW(impl="slices")``, ``train.update_impl=
legacy``): a foreach update over the active SLICES with full-size per-element step counts —
the reference the fused update is tested and benchmarked against
(``benchmarks/bench_step_ops.py``)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def step_slices(opt: torch.optim.Optimizer, regions) -> None:
    """The previous implementation: foreach over the active slices, full-size counts."""
    for group in opt.param_groups:
        per_element = group.setdefault("per_element", True)
        b1, b2 = group["betas"]
        ps, gs, ms, vs, ns, step_sizes, denoms_c = [], [], [], [], [], [], []
        for p in group["params"]:
            if p.grad is None or (regions is not None and p not in regions):
                continue
            state = _slices_state(opt.state[p], p, per_element)
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
