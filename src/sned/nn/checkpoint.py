"""Gradient checkpointing of one unit (a diffusion block or one of its layers): full or selective.

``full`` recomputes every op of the unit in backward (``torch.utils.checkpoint``, non-reentrant);
``selective`` keeps the outputs of the expensive ops — convolutions, matmuls and attention
(:data:`SAVED_OPS`) — and recomputes only the cheap ones between them (norms, activations,
casts, elementwise), through ``torch.utils.checkpoint.create_selective_checkpoint_contexts``
(PyTorch's selective activation checkpointing). The policy sees aten ops: the elastic layers'
sliced weights run through ``F.conv2d`` / ``F.linear`` / ``F.scaled_dot_product_attention``,
which reach ``aten.convolution``, ``aten.mm`` / ``addmm`` / ``bmm`` and the fused attention
kernels like any ``nn.Conv2d`` / ``nn.Linear`` would.

:data:`SAVED_OPS` is also what the memory planner (:mod:`sned.train.activations`) counts as the
selective saved set: one list for both.
"""

from __future__ import annotations

import functools

import torch
from torch.utils.checkpoint import (CheckpointPolicy, checkpoint,
                                    create_selective_checkpoint_contexts)

POLICIES = ("full", "selective")

_aten = torch.ops.aten
SAVED_OPS = frozenset(
    getattr(_aten, name).default for name in (
        "convolution", "mm", "addmm", "bmm", "baddbmm",
        "_scaled_dot_product_flash_attention", "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
        "_scaled_dot_product_fused_attention_overrideable")
    if hasattr(_aten, name))
"""aten ops whose outputs ``selective`` checkpointing keeps (everything else is recomputed)."""


def _policy(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    return (CheckpointPolicy.MUST_SAVE if op in SAVED_OPS
            else CheckpointPolicy.PREFER_RECOMPUTE)


def _selective_contexts():
    return create_selective_checkpoint_contexts(_policy)


def run(fn, *args, policy: str = "full", **kwargs):
    """``fn(*args, **kwargs)``, checkpointed under ``policy`` (``full`` / ``selective``);
    its results and gradients are those of the plain call."""
    if policy == "full":
        return checkpoint(fn, *args, use_reentrant=False, **kwargs)
    if policy == "selective":
        return checkpoint(fn, *args, use_reentrant=False, context_fn=_selective_contexts,
                          **kwargs)
    raise ValueError(f"checkpoint policy {policy!r}: use one of {', '.join(POLICIES)}")


def maybe(fn, policy: str | None):
    """``fn`` checkpointed under ``policy`` when it is one (and autograd records), else ``fn``."""
    if policy is None:
        return fn
    return functools.partial(_maybe_run, fn, policy)


def _maybe_run(fn, policy, *args, **kwargs):
    if torch.is_grad_enabled():
        return run(fn, *args, policy=policy, **kwargs)
    return fn(*args, **kwargs)
