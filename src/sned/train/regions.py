"""What a step's forwards used of each parameter: :class:`ActivityTracker` records the active
prefix boxes of every parameter (the views the elastic layers' ``active_weights`` return — the
function forward and extraction use), and the helpers turn unions of boxes into disjoint
index tuples (:func:`disjoint_boxes`) or broadcastable masks (:func:`union_mask`) for
:class:`sned.train.masked_adamw.MaskedAdamW`."""

from __future__ import annotations

from collections import defaultdict
from itertools import product

import torch
from torch import Tensor, nn

from ..nn.elastic import ElasticConv2d, ElasticGroupNorm, ElasticLinear

_ELASTIC = (ElasticLinear, ElasticConv2d, ElasticGroupNorm)
Box = tuple[int, ...]  # prefix extents, one per dimension (conv kernels: centred extents)


class ActivityTracker:
    """Records the active prefix of every parameter touched by forwards with gradient since
    :meth:`reset` (a forward without gradient, such as a distillation teacher's, updates
    nothing).

    :meth:`signature` names what was recorded — the (layer, widths) calls and the plain
    modules called — so equal signatures mean equal :attr:`extents`: the optimizer builds its
    per-parameter lists once per signature (:meth:`MaskedAdamW.prepare`)."""

    def __init__(self, model: nn.Module) -> None:
        self.extents: dict[Tensor, set[Box]] = defaultdict(set)
        self._calls: set = set()  # (layer, widths) keys and plain modules since reset
        self._named = True  # every call had plain int / None widths (a nameable signature)
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
        if not torch.is_grad_enabled():
            return  # a forward without gradient (a distillation teacher's) activates nothing
        owned = self._owned[module]
        if isinstance(module, _ELASTIC):
            widths = args[1:]
            key = (module, widths) if all(w is None or type(w) is int for w in widths) else None
            if key is None:
                self._named = False
            else:
                self._calls.add(key)
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
            self._calls.add(module)
            for param in owned.values():
                self.extents[param].add(tuple(param.shape))

    def reset(self) -> None:
        self.extents.clear()
        self._calls.clear()
        self._named = True

    def signature(self) -> frozenset | None:
        """A hashable name of the regions recorded since :meth:`reset` (the active-slice
        structure of the step's archs): equal signatures, equal :attr:`extents`. None when a
        call's widths were not plain ints (then nothing may be cached by it)."""
        return frozenset(self._calls) if self._named else None

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


def index_key(idx: tuple, shape: torch.Size) -> tuple:
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
