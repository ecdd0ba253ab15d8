"""How the trained model is spread over ranks: one process, DDP replicas, or FSDP2 shards.

``train.parallel`` picks the mode under ``torchrun`` (one process ignores it):

* ``ddp`` — every rank holds the whole model; gradients are all-reduced
  (``find_unused_parameters=True``: dropped blocks have no gradient).
* ``fsdp`` — FSDP2 (``torch.distributed.fsdp.fully_shard``) on every UNet block and the root:
  parameters, gradients, optimizer state and EMA are sharded on dim 0 (``torch.chunk`` rows
  per rank, as DTensors ``Shard(0)``); a block's weights are all-gathered for its forward.

Exact freezing on shards: the activity tracker records regions of the sharded parameters
(global index boxes); :meth:`Parallel.step_regions` cuts each box to the rows a rank holds and
re-keys it by the rank's local shard (a plain tensor sharing the DTensor's storage), so masked
AdamW runs unchanged on local tensors and touches exactly the elements DDP would.

Checkpoints are the same files in every mode (full tensors by parameter name, written by
rank 0): :meth:`Parallel.training_tensors` gathers them (a collective under FSDP) and
:meth:`shard` / :meth:`like_param` cut full tensors back to shards on load, so a checkpoint
saved under one mode resumes under the other (or in one process).
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch
from torch import Tensor, nn

from ..config import ConfigError
from ..store.checkpoint import _cpu_copy, training_tensors
from .masked_adamw import compact

MODES = ("ddp", "fsdp")
DDP_BUCKET_MB = 100
"""DDP's gradient bucket size (torch's default is 25 MB)."""


class Parallel:
    """The model of one rank and how forward, the optimizer and checkpoints see it.

    Args:
        model: the model, already on ``device``.
        mode: ``ddp`` or ``fsdp`` (with ``world == 1``: neither, the model as is).
        device: this rank's device.
        world: number of ranks.
    """

    def __init__(self, model: nn.Module, mode: str, device: torch.device, world: int) -> None:
        if mode not in MODES:
            raise ConfigError(f"train.parallel: invalid value {mode!r}; use one of {MODES}")
        self.model, self.world = model, world
        self.mode = mode if world > 1 else "none"
        self.ddp = None
        if self.mode == "ddp":
            from torch.nn.parallel import DistributedDataParallel as DDP

            # gradients are views of DDP's buckets (no second fp32 copy); larger buckets,
            # fewer all-reduce launches
            self.ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
                           find_unused_parameters=True, gradient_as_bucket_view=True,
                           bucket_cap_mb=DDP_BUCKET_MB)
        elif self.mode == "fsdp":
            from torch.distributed.fsdp import fully_shard

            for block in getattr(model, "blocks", ()):
                fully_shard(block)
            fully_shard(model)
        self.names = {p: n for n, p in model.named_parameters()}
        self._local: dict[str, Tensor] = {}  # FSDP: parameter name → local shard
        self._optimizer_local = True  # whether the optimizer holds local shards (FSDP)

    # --------------------------------------------------------------------------- forward
    @contextmanager
    def forward(self, sync: bool):
        """Context of one forward; ``sync=False`` on all but the last micro-batch of a step
        (gradients are reduced once per optimizer step)."""
        if self.mode == "ddp":
            with nullcontext() if sync else self.ddp.no_sync():
                yield self.ddp
        elif self.mode == "fsdp":
            self.model.set_requires_gradient_sync(sync)
            yield self.model
        else:
            yield self.model

    # --------------------------------------------------------------------------- optimizer
    def optimizer_params(self, local: bool | None = None) -> dict[str, Tensor]:
        """Name → what the optimizer updates: the parameters, or under FSDP with ``local``
        (masked AdamW; set once, None = as set before) each rank's shard as a plain tensor
        that masked AdamW indexes with local boxes."""
        if local is not None:
            self._optimizer_local = local
        if self.mode != "fsdp" or not self._optimizer_local:
            return dict(self.model.named_parameters())
        return self._shards()

    def _shards(self) -> dict[str, Tensor]:
        if not self._local:
            self._local = {n: p._local_tensor for n, p in self.model.named_parameters()}
        return self._local

    def step_regions(self, regions: dict[Tensor, list[tuple]] | None):
        """Before a masked step: under FSDP, point each shard's ``.grad`` at its local
        gradient and turn the tracker's global boxes into local ones (a box outside the
        rank's rows becomes empty; the parameter still counts the step, as under DDP)."""
        if self.mode != "fsdp":
            return regions
        local = self._shards()
        for name, p in self.model.named_parameters():
            local[name].grad = None if p.grad is None else p.grad._local_tensor
        if regions is None:
            return None
        return {local[self.names[p]]: [_local_box(box, p.shape[0], _row_range(p, self.world))
                                       for box in boxes]
                for p, boxes in regions.items()}

    def zero_grad(self) -> None:
        self.model.zero_grad(set_to_none=True)
        for t in self._local.values():
            t.grad = None

    # --------------------------------------------------------------------------- checkpoints
    def training_tensors(self, optimizer, ema) -> dict[str, dict[str, Tensor]]:
        """Full CPU copies by parameter name (:func:`~sned.store.checkpoint.training_tensors`);
        under FSDP every rank must call it (all-gathers) and only rank 0 gets the tensors."""
        if self.mode != "fsdp":
            return training_tensors(self.model, optimizer, ema)
        import torch.distributed as dist
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        main = dist.get_rank() == 0
        model = get_model_state_dict(self.model, options=StateDictOptions(
            full_state_dict=True, cpu_offload=True))
        params = dict(self.model.named_parameters())
        out = {"model": _cpu_copy(model) if main else {}}
        if ema is not None:
            full = {n: _full(s) for n, s in zip(params, ema.shadow_params)}
            out["ema"] = _cpu_copy(full) if main else {}
        opt = {}
        for name, p in params.items():  # parameter order: the same collectives on every rank
            held = self._shards()[name] if self._optimizer_local else p
            for k, v in optimizer.state.get(held, {}).items():
                if not torch.is_tensor(v):
                    v = torch.tensor(v)
                elif k == "active_steps" and v.dim() and v.shape != held.shape:
                    # compact counts (each rank's own shape): gathered full, then compacted
                    v = compact(_gather(v.expand(held.shape).contiguous(), p))
                elif v.dim() and not isinstance(v, _dtensor()) and v.shape == held.shape:
                    v = _gather(v, p)
                opt[f"{k}/{name}"] = _full(v)
        out["optimizer"] = _cpu_copy(opt) if main else {}
        return out

    def expected_state(self) -> dict[str, Tensor]:
        """The model's state dict (global shapes) to check a checkpoint's keys against."""
        return self.model.state_dict()

    def load_model(self, weights: dict[str, Tensor]) -> None:
        """Load full weights (every rank reads the file; FSDP keeps its rows)."""
        if self.mode != "fsdp":
            self.model.load_state_dict(weights)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(self.model, weights,
                             options=StateDictOptions(full_state_dict=True, strict=True))

    def shard(self, name: str, full: Tensor) -> Tensor:
        """An optimizer state tensor as the optimizer holds it: under FSDP the rows of this
        rank (plain, or a DTensor for plain AdamW on DTensors); else ``full``."""
        if self.mode != "fsdp" or full.dim() == 0:
            return full
        p = dict(self.model.named_parameters())[name]
        if full.shape != p.shape and full.dim() == p.dim():  # compact counts (broadcastable)
            if full.shape[0] == 1:
                return full.clone()  # the same for every row: every rank holds it whole
            return compact(_rows(full.expand(p.shape), p, self.world))
        if self._optimizer_local:
            return _rows(full, p, self.world).clone()
        return self.like_param(name, full)

    def like_param(self, name: str, full: Tensor) -> Tensor:
        """A full tensor laid out like parameter ``name`` (a DTensor shard under FSDP)."""
        if self.mode != "fsdp":
            return full
        from torch.distributed.tensor import DTensor

        p = dict(self.model.named_parameters())[name]
        return DTensor.from_local(_rows(full, p, self.world).clone(), p.device_mesh,
                                  p.placements, run_check=False, shape=p.shape,
                                  stride=p.stride())


def _dtensor():
    from torch.distributed.tensor import DTensor

    return DTensor


def _full(t: Tensor) -> Tensor:
    return t.full_tensor() if isinstance(t, _dtensor()) else t


def _gather(local: Tensor, like: Tensor) -> Tensor:
    """A rank's local rows of a tensor shaped like DTensor ``like`` → the full tensor."""
    DTensor = _dtensor()
    return DTensor.from_local(local, like.device_mesh, like.placements, run_check=False,
                              shape=like.shape, stride=like.stride()).full_tensor()


def _row_range(p: Tensor, world: int) -> tuple[int, int]:
    """Rows [start, stop) of dim 0 that this rank holds (FSDP2 shards with ``torch.chunk``)."""
    import torch.distributed as dist

    n = p.shape[0]
    per = -(-n // world)
    start = min(dist.get_rank() * per, n)
    return start, min(start + per, n)


def _rows(full: Tensor, p: Tensor, world: int) -> Tensor:
    start, stop = _row_range(p, world)
    if tuple(full.shape) != tuple(p.shape):
        raise ValueError(f"a tensor of shape {tuple(full.shape)} does not fit parameter shape "
                         f"{tuple(p.shape)}")
    return full[start:stop]


def _local_box(box: tuple, n: int, rows: tuple[int, int]) -> tuple:
    """A global index box (dim 0 a slice) → the same elements in the local rows ``rows``."""
    lo, hi, _ = box[0].indices(n)
    start, stop = rows
    a, b = max(lo, start), min(hi, stop)
    a, b = a - start, max(a, b) - start
    return (slice(a, b),) + tuple(box[1:])
