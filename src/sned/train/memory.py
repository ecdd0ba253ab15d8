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
  micro-batch × resolution; with ``checkpointing`` the checkpointed blocks' inputs (instead of
  their saved sets) plus one recomputed block;
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

``train.gradient_checkpointing=auto`` (the default): :func:`plan_checkpointing` leaves it off when
the run fits its device without it (GPU memory; on CPU the machine's RAM), else checkpoints the
resolution LEVELS (every diffusion block of a level, down, middle and up) whose recompute costs
least among the level sets that fit — level 0 holds the most activations per MAC, the deepest
levels the most MACs per byte; every level when nothing smaller fits.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import torch

from itertools import combinations

from ..arch import Arch, full_layout, resolve, unet_blocks
from ..config import ConfigError, ModelConfig
from ..cost import block_cost, model_cost
from ..models.codec import pixel_factors, to_latent
from ..models.unet import VideoUNet
from ..space import SearchSpace
from .activations import SavedTrace, trace_saved
from .arch_sampler import fixed_arch

GIB = 2 ** 30
WORKSPACE_FACTOR = 2.0
"""Backward's transient buffers, in units of the largest saved tensor (calibrated on CPU)."""
FSDP_UNITS_LIVE = 3
"""FSDP: blocks whose full weights/gradients are materialised at once (current, prefetched,
gradient being reduce-scattered)."""
HEADROOM = 0.9
"""A run fits a device when its estimate is at most this share of the device's memory."""


@dataclass
class MemoryEstimate:
    """Peak memory of one training step on one device, in bytes (see the module docstring).

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
    checkpointing: bool | list[int]
    batch: int
    resolution: int
    frames: int
    recompute_macs: int = 0  # forward MACs per sample that checkpointing recomputes
    forward_macs: int = 0  # forward MACs per sample of the whole traced arch

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
                 checkpointing=self.checkpointing,
                 recompute_fraction=round(self.recompute_macs / max(self.forward_macs, 1), 3),
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
             checkpointing: bool = False, parallel: str = "ddp", gpus: int = 1,
             device: str = "cuda") -> MemoryEstimate:
    """Estimate one device's peak memory for training ``run`` (a RunConfig).

    Args:
        arch: the arch to trace (None: the largest training runs — its ``fixed_arch``, else the
            largest under each resolution's cap).
        batch: micro-batch per device (None: ``train.batch_for(resolution)``).
        resolution / frames: video size (None: every config resolution, the worst; the
            config's frames). Latent configs take video units, like ``sned cost``.
        checkpointing: gradient checkpointing: True (every diffusion block), False, or the
            resolution levels whose blocks are checkpointed (:func:`level_blocks`).
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
    blocks = level_blocks(cfg, checkpointing)
    worst: tuple[int, SavedTrace, int, int] | None = None
    for r in resolutions:
        a = arch if arch is not None else _largest(run, space, r)
        if a is not None:
            space.validate(a.at(r), check_cap=False)
        n = run.train.batch_for(r) if batch is None else batch
        tr = trace_saved(cfg, a, n, r, t, "bf16" if bf16 else None, cuda_rules=device == "cuda")
        need = tr.peak(blocks)
        if worst is None or need > worst[0]:
            worst = (need, tr, n, r, a)
    need, tr, n, r, a = worst
    model = _meta_model(cfg)
    shard = gpus if parallel == "fsdp" else 1
    p = sum(q.numel() for q in model.parameters()) * 4 // shard
    block_grads = [sum(q.numel() for q in b.parameters()) * 4 // shard for b in model.blocks]
    outside_grads = p - sum(block_grads)
    teacher = tr.output if run.train.sampler == "sandwich" else 0  # the detached prediction
    # backward meets the blocks in reverse: block i's saved set is alive while blocks > i have
    # their gradients (and block i gets its own); gradients outside blocks count throughout
    backward = max(alive + outside_grads + sum(block_grads[i:])
                   for i, alive in enumerate(tr.alive(blocks)))
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
    recompute, forward = _block_macs(cfg, a, r, t, blocks)
    return MemoryEstimate(params=p, grads=p, optimizer=(3 if legacy else 2) * p,
                          ema=p if run.train.ema_decay > 0 else 0, ddp_buckets=ddp,
                          fsdp_unsharded=unsharded, activations=need + teacher,
                          workspace=workspace, update_temp=(2 if legacy else 1) * p,
                          backward=backward + teacher + workspace,
                          checkpointing=(checkpointing if isinstance(checkpointing, bool)
                                         else sorted(checkpointing)),
                          batch=n, resolution=res_px, frames=frames_px,
                          recompute_macs=recompute, forward_macs=forward)


def levels(cfg: ModelConfig) -> list[int]:
    """The resolution levels of ``cfg``'s UNet (0 = full resolution)."""
    if not isinstance(cfg, ModelConfig):
        raise ConfigError(f"memory estimates are for diffusion UNets; {cfg.name!r} is an "
                          f"autoencoder config")
    return sorted({s.level for s in unet_blocks(cfg)})


def level_blocks(cfg: ModelConfig, checkpointing) -> bool | frozenset[int]:
    """``checkpointing`` (True / False / levels) → True, False or the diffusion block indices
    of those levels (down, middle and up blocks alike)."""
    if isinstance(checkpointing, bool):
        return checkpointing
    wanted = set(checkpointing)
    known = levels(cfg)
    if not wanted <= set(known):
        raise ConfigError(f"checkpointing levels {sorted(wanted)}: {cfg.name!r} has levels "
                          f"{known}")
    if wanted == set(known):
        return True
    return frozenset(i for i, s in enumerate(unet_blocks(cfg)) if s.level in wanted) or False


def _block_macs(cfg: ModelConfig, arch: Arch | None, resolution: int, frames: int,
                blocks) -> tuple[int, int]:
    """(MACs per sample of the checkpointed blocks' forwards, of the whole forward) at
    ``arch`` (None = the full supernet) — from the one cost model."""
    specs = unet_blocks(cfg)
    layouts = ([full_layout(s) for s in specs] if arch is None
               else resolve(cfg, arch.at(resolution), specs))
    per = [block_cost(cfg, s, lay, resolution, frames).macs for s, lay in zip(specs, layouts)]
    chosen = sum(m for i, m in enumerate(per) if blocks is True or (blocks and i in blocks))
    return chosen, model_cost(cfg, layouts, resolution, frames).macs


def _largest(run, space, resolution: int) -> Arch | None:
    """The largest arch training runs at ``resolution`` (None = the full supernet)."""
    if run.train.fixed_arch is not None:
        return fixed_arch(space, run.train.fixed_arch).at(resolution)
    if run.model.max_cost.get(resolution):
        return space.largest_under_cap(resolution)
    return None


_META_CACHE: dict[str, torch.nn.Module] = {}


def _meta_model(cfg: ModelConfig) -> torch.nn.Module:
    key = repr(cfg)
    if key not in _META_CACHE:
        with torch.device("meta"):
            _META_CACHE.clear()
            _META_CACHE[key] = VideoUNet(cfg)
    return _META_CACHE[key]


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
                       memory: int) -> tuple[bool | list[int], MemoryEstimate]:
    """``train.gradient_checkpointing`` → (True / False / the checkpointed levels, its
    estimate). ``estimate_with(checkpointing)`` is :func:`estimate` of the run.

    ``"auto"``: off when that fits ``memory``; else, of every set of levels (cheapest
    recompute first, then the smaller total), the first that fits; every level when none
    does (the estimate then says it does not fit)."""
    if not choose_checkpointing(setting, lambda: estimate_with(False), memory):
        return False, estimate_with(False)
    if setting is True:
        return True, estimate_with(True)
    plans = []
    for k in range(1, len(level_list) + 1):
        for chosen in combinations(level_list, k):
            e = estimate_with(True if k == len(level_list) else list(chosen))
            plans.append((e.recompute_macs, e.total, e.checkpointing, e))
    plans.sort(key=lambda x: (x[0], x[1]))
    for _, total, chosen, e in plans:
        if fits(total, memory):
            return chosen, e
    return True, estimate_with(True)


def resolve_checkpointing(run, device: torch.device, gpus: int = 1,
                          estimable: bool = True) -> bool | frozenset[int]:
    """The Trainer's choice for ``run`` on ``device`` (``train.gradient_checkpointing``):
    True, False or the diffusion block indices to checkpoint (``VideoUNet.
    gradient_checkpointing``).

    ``auto`` plans the run's own diffusion UNet (pixel or latent;
    :func:`plan_checkpointing`); other models (autoencoders, a caller's task such as
    DiffNAS's students: ``estimable=False``) stay without checkpointing."""
    setting = run.train.gradient_checkpointing
    if setting == "auto" and not (estimable and isinstance(run.model, ModelConfig)):
        return False
    if isinstance(setting, bool) or setting != "auto":
        return choose_checkpointing(setting, None, 0)
    parallel = getattr(run.train, "parallel", "ddp")
    chosen, _ = plan_checkpointing(
        setting, lambda c: estimate(run, checkpointing=c, gpus=gpus, device=device.type,
                                    parallel=parallel),
        levels(run.model), device_memory(device))
    return level_blocks(run.model, chosen)


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
