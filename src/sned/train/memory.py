"""Peak training memory per device, planned before anything is allocated.

:func:`estimate` adds up what one training step of a run holds on one device:

* ``params`` — the fp32 supernet weights (every weight, whatever the arch: the supernet is
  resident), ``grads`` — their fp32 gradients (a sliced weight gets a full-size gradient),
  ``optimizer`` — AdamW's two moments (``MaskedAdamW`` or plain; ``MaskedAdamW``'s step counts
  are compact, broadcastable along the elastic dimensions only: negligible; the previous
  ``train.update_impl=legacy`` kept them full-size), ``ema`` — the EMA copy;
* ``ddp_buckets`` — 0: DDP runs with ``gradient_as_bucket_view=True`` (the gradients ARE
  its buckets; ``sned.train.parallel``); with ``parallel="fsdp"`` the four parts above are split over the
  GPUs and ``fsdp_unsharded`` holds the all-gathered weights and gradients of
  :data:`FSDP_UNITS_LIVE` blocks (the largest);
* ``activations`` — what the forward saves for backward, traced on fake tensors
  (:mod:`sned.train.activations`) at the largest arch training runs, for the largest
  micro-batch × resolution; under a :class:`CheckpointPlan` the checkpointed units' inputs (and,
  selective, their kept conv/matmul/attention outputs) instead of their saved sets, plus one
  unit's saved set while it is recomputed;
* ``workspace`` — backward's transient buffers (gradients of activations, kernel outputs):
  :data:`WORKSPACE_FACTOR` × the largest saved tensor;
* ``update_temp`` — the update's temporaries: the optimizer's denominators, one fp32 copy of
  the weights (the fused masked update and the EMA's in-place lerp allocate nothing larger; the
  legacy update, two copies with per-element counts; measured on an H200: ``docs/benchmarks.md``).

The step peaks either in backward (``activations + workspace``) or in the update
(``update_temp``); ``total`` = the fixed parts + ``grads`` + the larger phase (``phase``). It is
``torch.cuda.max_memory_allocated`` for CUDA (CUDA context and allocator slack not included:
:func:`fits` keeps :data:`HEADROOM`), and the CPU allocator's peak on CPU, where
``tests/test_memory.py`` checks it against :func:`cpu_peak_bytes` within 15 % on the tiny
configs; ``benchmarks/gpu_check.py`` checks it on a GPU.

Gradient checkpointing is planned per resolution LEVEL (every diffusion block of a level, down,
middle and up): a level is not checkpointed, or checkpointed by whole blocks
(``checkpoint_unit=block``) or by layers (``layer``: the ResBlock, each attention and the
feed-forward are separate units, so backward recomputes one layer at a time), recomputing
everything (``checkpoint_policy=full``) or only the cheap ops between convolutions, matmuls and
attention, whose outputs are kept (``selective``; :mod:`sned.nn.checkpoint`). Recompute is costed
by a roofline (:data:`MACS_PER_BYTE`): conv/matmul/attention MACs plus the memory-bound ops'
traffic. :func:`plan_checkpointing`: ``train.gradient_checkpointing=auto`` (the default) leaves
checkpointing off when the run fits its device without it (GPU memory; on CPU the machine's
RAM), else takes the plan with the least recompute that fits (the least memory when none
does); ``true`` checkpoints every level, each the way that needs the least memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from itertools import product

import torch

from ..arch import Arch, unet_blocks
from ..config import ConfigError, ModelConfig
from ..models.codec import pixel_factors, to_latent
from ..models.unet import VideoUNet
from ..space import SearchSpace
from .activations import trace_saved
from .checkpoint_plan import UNITS, CheckpointPlan, checkpoint_modes, levels  # noqa: F401
from .arch_sampler import fixed_arch

GIB = 2 ** 30
WORKSPACE_FACTOR = 2.0
"""Backward's transient buffers, in units of the largest saved tensor (calibrated on CPU)."""
FSDP_UNITS_LIVE = 3
"""FSDP: blocks whose full weights/gradients are materialised at once (current, prefetched,
gradient being reduce-scattered)."""
HEADROOM = 0.9
"""A run fits a device when its estimate is at most this share of the device's memory."""
MACS_PER_BYTE = 150
"""Roofline exchange rate of recompute: an H100 SXM's dense bf16 tensor-core rate (~495 T
MAC/s) over its HBM bandwidth (3.35 TB/s). Recomputing costs ``MACs + MACS_PER_BYTE × bytes``
(the conv/matmul/attention MACs, the other ops' bytes read and written)."""
@dataclass
class MemoryEstimate:
    """Peak memory of one training step on one device, in bytes (see the module docstring).

    ``recompute_fraction`` (printed) is the plan's recompute cost over the forward's, both on
    the :data:`MACS_PER_BYTE` roofline; ``recompute_macs_fraction`` counts MACs alone.
    ``backward`` is the backward phase's peak of saved activations + gradients accumulated so
    far (+ ``workspace``); ``total`` = the fixed parts + the larger of that and the update phase
    (``grads + update_temp``)."""

    params: int
    grads: int
    optimizer: int
    ema: int
    ddp_buckets: int
    fsdp_unsharded: int
    activations: int
    workspace: int
    update_temp: int
    backward: int
    plan: CheckpointPlan
    batch: int
    resolution: int
    frames: int
    recompute_macs: int = 0  # conv/matmul/attention MACs per sample backward recomputes
    forward_macs: int = 0  # those of the whole forward, per sample
    recompute_bytes: int = 0  # memory-bound ops' bytes per sample backward recomputes
    forward_bytes: int = 0  # those of the whole forward, per sample
    config: ModelConfig | None = None

    @property
    def recompute_cost(self) -> int:
        """Recompute per sample in MAC-equivalents (the :data:`MACS_PER_BYTE` roofline)."""
        return self.recompute_macs + MACS_PER_BYTE * self.recompute_bytes

    @property
    def forward_cost(self) -> int:
        return self.forward_macs + MACS_PER_BYTE * self.forward_bytes

    @property
    def checkpointing(self) -> bool | list[int]:
        return self.plan.describe(self.config)["checkpointing"]

    @property
    def fixed(self) -> int:
        return self.params + self.optimizer + self.ema + self.ddp_buckets + self.fsdp_unsharded

    @property
    def phase(self) -> str:
        return "backward" if self.backward >= self.grads + self.update_temp else "update"

    @property
    def total(self) -> int:
        return self.fixed + max(self.backward, self.grads + self.update_temp)

    def to_dict(self) -> dict:
        sizes = ("params", "grads", "optimizer", "ema", "ddp_buckets", "fsdp_unsharded",
                 "activations", "workspace", "update_temp", "backward")
        d = {f"{k}_gib": round(getattr(self, k) / GIB, 3) for k in sizes}
        d.update(total_gib=round(self.total / GIB, 3), phase=self.phase,
                 **self.plan.describe(self.config),
                 recompute_fraction=round(self.recompute_cost / max(self.forward_cost, 1), 3),
                 recompute_macs_fraction=round(self.recompute_macs / max(self.forward_macs, 1),
                                               3),
                 batch=self.batch, resolution=self.resolution, frames=self.frames)
        return d


def _unet_config(run) -> ModelConfig:
    model = run.model
    if not isinstance(model, ModelConfig):
        raise ConfigError(f"memory estimates are for diffusion UNets; {model.name!r} is an "
                          f"autoencoder config")
    return model


def _model_units(config: ModelConfig, resolution: int | None, frames: int | None):
    """Video ``resolution`` / ``frames`` → the denoiser's (latent configs: latent units)."""
    if config.autoencoder is None:
        return resolution, frames
    return to_latent(config, resolution, frames)


def estimate(run, *, arch: Arch | None = None, batch: int | None = None,
             resolution: int | None = None, frames: int | None = None,
             checkpointing: "bool | list[int] | CheckpointPlan" = False, unit: str = "layer",
             policy: str = "full", parallel: str = "ddp", gpus: int = 1,
             device: str = "cuda") -> MemoryEstimate:
    """Estimate one device's peak memory for training ``run`` (a RunConfig).

    Args:
        arch: the arch to trace (None: the largest training runs — its ``fixed_arch``, else the
            largest under each resolution's cap).
        batch: micro-batch per device (None: ``train.batch_for(resolution)``).
        resolution / frames: video size (None: every config resolution, the worst; the
            config's frames). Latent configs take video units, like ``sned cost``.
        checkpointing: a :class:`CheckpointPlan`, or True (every level), False, or the
            resolution levels whose blocks are checkpointed, each by ``unit`` / ``policy``.
        parallel: ``ddp`` or ``fsdp``; gpus: devices (DDP buckets and FSDP shards need > 1).
        device: ``cuda`` (bf16 autocast unless ``train.mixed_precision=no``) or ``cpu`` (bf16
            only with ``train.mixed_precision=bf16``).
    """
    cfg = _unet_config(run)
    if parallel not in ("ddp", "fsdp"):
        raise ConfigError(f"parallel {parallel!r}: must be ddp or fsdp")
    if gpus < 1 or (batch is not None and batch < 1):
        raise ConfigError(f"gpus ({gpus}) and batch ({batch}) must be >= 1")
    mp = run.train.mixed_precision
    bf16 = mp == "bf16" or (device == "cuda" and mp == "auto")
    space = SearchSpace.for_run(cfg, run.train)
    res, t = _model_units(cfg, resolution, frames)
    t = cfg.frames if t is None else t
    resolutions = list(cfg.resolutions) if res is None else [res]
    if len(resolutions) > 1 and (arch is not None or run.train.fixed_arch is not None
                                 or not cfg.max_cost):
        # the same arch everywhere: every saved tensor scales with batch × H × W, so the
        # largest batch × resolution² is the worst (one trace instead of one per resolution)
        resolutions = [max(resolutions, key=lambda r: (
            (run.train.batch_for(r) if batch is None else batch) * r * r, r))]
    plan = (checkpointing if isinstance(checkpointing, CheckpointPlan)
            else CheckpointPlan.uniform(cfg, checkpointing, unit, policy))
    blocks = plan.block_modes(cfg)
    worst: tuple | None = None
    for r in resolutions:
        a = arch if arch is not None else _largest(run, space, r)
        if a is not None:
            space.validate(a.at(r), check_cap=False)
        n = run.train.batch_for(r) if batch is None else batch
        tr = trace_saved(cfg, a, n, r, t, "bf16" if bf16 else None, cuda_rules=device == "cuda")
        alive = tr.alive(blocks)
        need = max(alive, default=tr.bytes_of(tr.outside))
        if worst is None or need > worst[0]:
            worst = (need, tr, n, r, alive)
    need, tr, n, r, alive_list = worst
    shard = gpus if parallel == "fsdp" else 1
    total_numel, block_numel = _param_counts(cfg)
    p = total_numel * 4 // shard
    block_grads = [k * 4 // shard for k in block_numel]
    outside_grads = p - sum(block_grads)
    distills = run.train.inplace_distill and run.train.fixed_arch is None
    teacher = tr.output if distills else 0  # the teacher's detached prediction
    # backward meets the blocks in reverse: block i's saved set is alive while blocks > i have
    # their gradients (and block i gets its own); gradients outside blocks count throughout
    backward = max(alive + outside_grads + sum(block_grads[i:])
                   for i, alive in enumerate(alive_list))
    recompute_macs, recompute_bytes = tr.recompute(blocks)
    workspace = int(WORKSPACE_FACTOR * tr.largest)
    unsharded = 0
    if parallel == "fsdp" and gpus > 1:
        unsharded = FSDP_UNITS_LIVE * max(block_grads) * shard
    ddp = 0  # DDP's buckets hold the gradients themselves (gradient_as_bucket_view=True)
    frames_px = frames if frames is not None else cfg.frames
    res_px = resolution if resolution is not None else r
    if cfg.autoencoder is not None and resolution is None:
        ft, fs = pixel_factors(cfg)
        res_px, frames_px = r * fs, (t * ft if frames is None else frames)
    # the fused MaskedAdamW keeps compact counts and one parameter-sized temporary (√v); the
    # legacy one kept full-size counts and a second temporary (its bias corrections)
    legacy = (run.train.exact_freeze and run.train.adam_counts == "element"
              and getattr(run.train, "update_impl", "fused") == "legacy")
    return MemoryEstimate(params=p, grads=p, optimizer=(3 if legacy else 2) * p,
                          ema=p if run.train.ema_decay > 0 else 0, ddp_buckets=ddp,
                          fsdp_unsharded=unsharded, activations=need + teacher,
                          workspace=workspace, update_temp=(2 if legacy else 1) * p,
                          backward=backward + teacher + workspace,
                          plan=plan, config=cfg, batch=n, resolution=res_px, frames=frames_px,
                          recompute_macs=recompute_macs // n, forward_macs=tr.macs // n,
                          recompute_bytes=recompute_bytes // n,
                          forward_bytes=tr.cheap_bytes // n)


def level_blocks(cfg: ModelConfig, checkpointing) -> bool | frozenset[int]:
    """``checkpointing`` (True / False / levels / a :class:`CheckpointPlan`) → True, False or
    the diffusion block indices of those levels (down, middle and up blocks alike)."""
    if isinstance(checkpointing, bool):
        return checkpointing
    plan = (checkpointing if isinstance(checkpointing, CheckpointPlan)
            else CheckpointPlan.uniform(cfg, checkpointing))
    if plan.everything:
        return True
    blocks = frozenset(plan.block_modes(cfg))
    if blocks and len(blocks) == len(unet_blocks(cfg)):
        return True
    return blocks or False


def _largest(run, space, resolution: int) -> Arch | None:
    """The largest arch training runs at ``resolution`` (None = the full supernet)."""
    if run.train.fixed_arch is not None:
        return fixed_arch(space, run.train.fixed_arch).at(resolution)
    if run.model.max_cost.get(resolution):
        return space.largest_under_cap(resolution)
    return None


_COUNTS: dict[str, tuple[int, list[int]]] = {}


def _param_counts(cfg: ModelConfig) -> tuple[int, list[int]]:
    """(parameters of ``cfg``'s supernet, those of each diffusion block), from a meta-device
    model (nothing allocated); cached per config."""
    key = repr(cfg)
    if key not in _COUNTS:
        with torch.device("meta"):
            model = VideoUNet(cfg)
        _COUNTS[key] = (sum(q.numel() for q in model.parameters()),
                        [sum(q.numel() for q in b.parameters()) for b in model.blocks])
    return _COUNTS[key]


# --------------------------------------------------------------------------------- decisions
def device_memory(device: torch.device | str) -> int:
    """Bytes of memory of ``device``: a GPU's total memory, or the machine's RAM for CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device.index or 0).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def fits(total: int, memory: int) -> bool:
    """Whether an estimate of ``total`` bytes fits a device of ``memory`` bytes (keeps
    ``1 - HEADROOM`` for the CUDA context, allocator slack and fragmentation)."""
    return total <= HEADROOM * memory


def choose_checkpointing(setting: bool | str, estimate_off, memory: int) -> bool:
    """``train.gradient_checkpointing`` → on/off. ``True`` / ``False`` as given; ``"auto"``:
    on exactly when the estimate without checkpointing (``estimate_off()``, called only then,
    a MemoryEstimate) does not :func:`fit` ``memory`` bytes. (:func:`plan_checkpointing`
    also chooses which levels.)"""
    if isinstance(setting, bool):
        return setting
    if setting != "auto":
        raise ConfigError(f"train.gradient_checkpointing: invalid value {setting!r}; use true, "
                          f"false or auto")
    return not fits(estimate_off().total, memory)


def plan_checkpointing(setting: bool | str, estimate_with, level_list: list[int],
                       memory: int, unit: str = "auto", policy: str = "auto"
                       ) -> tuple[CheckpointPlan, MemoryEstimate]:
    """``train.gradient_checkpointing`` (+ ``checkpoint_unit`` / ``checkpoint_policy``) →
    (the :class:`CheckpointPlan`, its estimate). ``estimate_with(plan)`` is :func:`estimate`
    of the run.

    ``False``: none. ``True``: every level, each in the allowed way (:func:`checkpoint_modes`)
    that gives the smallest total (then the least recompute). ``"auto"``: none when that fits
    ``memory``; else, of every plan (each level off or in an allowed way), the one with the
    least recompute (:attr:`MemoryEstimate.recompute_cost`, then the smaller total) that fits;
    the smallest total when none does (the estimate then says it does not fit)."""
    modes = checkpoint_modes(unit, policy)
    if not choose_checkpointing(setting, lambda: estimate_with(CheckpointPlan()), memory):
        return CheckpointPlan(), estimate_with(CheckpointPlan())
    options = modes if setting is True else [None, *modes]
    plans = []
    for choice in product(options, repeat=len(level_list)):
        plan = CheckpointPlan(tuple((lv, *m) for lv, m in zip(level_list, choice) if m))
        if plan:
            e = estimate_with(plan)
            plans.append((e.recompute_cost, e.total, e))
    smallest = min(plans, key=lambda x: (x[1], x[0]))[2]
    if setting is True:
        return smallest.plan, smallest
    for _, total, e in sorted(plans, key=lambda x: (x[0], x[1])):
        if fits(total, memory):
            return e.plan, e
    return smallest.plan, smallest


def resolve_checkpointing(run, device: torch.device, gpus: int = 1,
                          estimable: bool = True) -> CheckpointPlan:
    """The Trainer's plan for ``run`` on ``device`` (``train.gradient_checkpointing``,
    ``checkpoint_unit``, ``checkpoint_policy``); :meth:`CheckpointPlan.apply` sets it on the
    model.

    The run's own diffusion UNet (pixel or latent) is planned (:func:`plan_checkpointing`);
    other models (autoencoders, a caller's task such as DiffNAS's students:
    ``estimable=False``) stay without checkpointing under ``auto``, and checkpoint every
    block (layers, or the configured unit / policy) under ``true``."""
    tc = run.train
    setting = tc.gradient_checkpointing
    unit, policy = getattr(tc, "checkpoint_unit", "auto"), getattr(tc, "checkpoint_policy", "auto")
    checkpoint_modes(unit, policy)  # names a bad value
    if not isinstance(setting, bool) and setting != "auto":
        choose_checkpointing(setting, None, 0)  # names a bad value
    planned = estimable and isinstance(run.model, ModelConfig)
    if setting is False or (setting == "auto" and not planned):
        return CheckpointPlan()
    if not planned:
        if not isinstance(run.model, ModelConfig):
            return CheckpointPlan(everything=True)
        u, p = ("layer" if unit == "auto" else unit), ("full" if policy == "auto" else policy)
        return CheckpointPlan.uniform(run.model, True, u, p)
    parallel = getattr(tc, "parallel", "ddp")
    plan, _ = plan_checkpointing(
        setting, lambda c: estimate(run, checkpointing=c, gpus=gpus, device=device.type,
                                    parallel=parallel),
        levels(run.model), device_memory(device), unit, policy)
    return plan


def cpu_peak_bytes(fn) -> int:
    """Peak bytes the CPU allocator held above its level at the call, while ``fn()`` ran.

    Measured by torch's profiler with ``profile_memory``: every allocation and free of the
    CPU allocator is an event carrying the allocator's running total of tracked bytes; the
    peak is the largest total minus the total before the first event (the running total
    carries an offset from earlier profiling sessions, which cancels). Memory allocated before
    the call is not seen (add it: e.g. the sizes of the live weights and optimizer state)."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
            events.append((node.start_time_ns, node.extra_fields.alloc_size,
                           node.extra_fields.total_allocated))
        stack.extend(node.children)
    if not events:
        return 0
    events.sort()
    start = events[0][2] - events[0][1]
    return max(0, max(total for _, _, total in events) - start)


def measure_step_peak(trainer, batch: dict) -> int:
    """Measured peak bytes of one ``trainer.train_step(batch)`` on the trainer's device, in
    the steady state (weights, optimizer state and EMA allocated, no gradients yet) — what
    :func:`estimate` predicts.

    CUDA: ``torch.cuda.max_memory_allocated`` over the step. CPU: the live weights, optimizer
    state and EMA (summed over their storages) + :func:`cpu_peak_bytes` of the step. Run at
    least one step before (the optimizer allocates its state lazily)."""
    import gc

    trainer.optimizer.zero_grad(set_to_none=True)
    gc.collect()
    if trainer.device.type == "cuda":
        torch.cuda.synchronize(trainer.device)
        torch.cuda.reset_peak_memory_stats(trainer.device)
        trainer.train_step(batch)
        torch.cuda.synchronize(trainer.device)
        return torch.cuda.max_memory_allocated(trainer.device)
    tensors = list(trainer.model.parameters())
    tensors += [v for s in trainer.optimizer.state.values() for v in s.values()
                if torch.is_tensor(v)]
    if trainer.ema is not None:
        tensors += list(trainer.ema.shadow_params)
    live = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(live.values()) + cpu_peak_bytes(lambda: trainer.train_step(batch))
