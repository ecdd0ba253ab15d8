"""Text-to-video sampling with diffusers schedulers (DDIM, DPM-Solver++, DDPM) and CFG.

:func:`sample` runs one denoiser — a supernet under ``arch=`` or an extracted model — from pure
noise to a video. The same function serves base models (text → video) and SSR models
(text + low-resolution video → video at twice the resolution, see :mod:`.cascade`).

Seeding rule (device-independent, batch-independent): sample ``i`` of a batch draws ALL of its
randomness — the initial noise, then (SSR) the noise that augments its low-resolution
condition (drawn at the output resolution: the condition is upsampled, then noised), then
(DDPM) each step's noise — from its own CPU ``torch.Generator`` seeded with
``seed + i``. Tensors are drawn on the CPU and then moved, so a seed gives the same video on any
device, and prompt ``i`` of a batch gives the same video as sampling prompt ``i`` alone with
``seed + i`` (up to float rounding of batched kernels).
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral
from typing import Union

import torch
from torch import Tensor

from ..arch import Arch
from ..device import matmul_weights_in, repeated_shapes, sampling_autocast
from ..diffusion import SAMPLERS, DiffusionConfig, Objective, frame_noise, make_scheduler
from ..models.unet import VideoUNet
from ..schedule import Schedule, ScheduleError
from ..schedule.folder import ScheduledSubnets
from .compiled import uses_cuda_graphs

__all__ = ["SeedLike", "default_resolution", "generators", "initial_noise", "sample"]

SeedLike = Union[int, Sequence[int], torch.Generator, Sequence[torch.Generator]]
"""``int`` s (sample i uses ``s + i``), one int per sample, one Generator shared by the batch
(drawn sample after sample), or one Generator per sample."""

_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
           "float16": torch.float16, "fp32": None, "float32": None}


def generators(seed: SeedLike, batch: int) -> list[torch.Generator]:
    """Per-sample random streams for a batch of ``batch`` (see the module's seeding rule).

    Returns a list of ``batch`` generators (the same object repeated when one Generator is given).
    """
    if isinstance(seed, torch.Generator):
        return [seed] * batch
    if isinstance(seed, Integral) and not isinstance(seed, bool):
        return [torch.Generator("cpu").manual_seed(int(seed) + i) for i in range(batch)]
    if isinstance(seed, Sequence) and not isinstance(seed, (str, bytes)):
        if len(seed) != batch:
            raise ValueError(f"got {len(seed)} seeds for a batch of {batch}")
        if all(isinstance(s, torch.Generator) for s in seed):
            return list(seed)
        if all(isinstance(s, Integral) and not isinstance(s, bool) for s in seed):
            return [torch.Generator("cpu").manual_seed(int(s)) for s in seed]
    raise TypeError(f"seed must be an int, a list of ints, a torch.Generator or a list of "
                    f"Generators (got {type(seed).__name__})")


def initial_noise(shape: Sequence[int], gens: Sequence[torch.Generator],
                  device: torch.device | str = "cpu", frame_share: float = 0.0) -> Tensor:
    """Standard normal float32 noise ``shape`` = (B, ...), row i drawn from ``gens[i]`` on the
    generator's device (CPU for :func:`generators`), then moved to ``device``. ``frame_share``:
    the share of each frame's variance common to the clip's frames
    (:func:`sned.diffusion.frame_noise`; the model's ``diffusion.frame_noise_share``)."""
    if len(gens) != shape[0]:
        raise ValueError(f"{len(gens)} generators for a batch of {shape[0]}")
    rows = [frame_noise((1, *shape[1:]), frame_share, g, g.device) for g in gens]
    return torch.cat(rows).to(device)


def default_resolution(model: VideoUNet, arch: Arch | None = None,
                       schedule: Schedule | None = None) -> int:
    """The resolution a model runs at: ``arch``'s (or ``schedule``'s), else an extracted
    model's own arch's, else the config's first resolution."""
    if arch is not None:
        return arch.resolution
    if schedule is not None:
        return schedule.resolution
    if model.arch is not None:
        return model.arch.resolution
    return model.config.resolutions[0]


def _amp_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None = no autocast) for ``dtype`` on ``device`` (``"auto"``: bf16
    on CUDA, none elsewhere — :func:`sned.device.sampling_autocast`)."""
    if dtype == "auto":
        dtype = sampling_autocast("auto", device)
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"dtype {dtype!r} is not one of {list(_DTYPES)}")
        dtype = _DTYPES[dtype]
    if dtype is None or dtype == torch.float32:
        return None
    if dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(f"autocast dtype must be bf16, fp16 or fp32 (got {dtype})")
    return dtype


def _lowres_input(model: VideoUNet, lowres: Tensor | None, b: int, frames: int | None
                  ) -> int | None:
    """Check the SSR condition; return the frame count it implies."""
    cfg = model.config
    if cfg.kind != "ssr":
        if lowres is not None:
            raise ValueError(f"`lowres` is only for SSR models; config {cfg.name!r} is a base "
                             f"model")
        return frames
    if lowres is None:
        raise ValueError(f"config {cfg.name!r} is an SSR model: sampling needs `lowres`, the "
                         f"(B, C, T, h, w) low-resolution video in [-1, 1] to upsample")
    if lowres.ndim != 5 or lowres.shape[0] != b or lowres.shape[1] != cfg.in_channels:
        raise ValueError(f"lowres must be (B={b}, C={cfg.in_channels}, T, h, w); got "
                         f"{tuple(lowres.shape)}")
    if frames is not None and frames != lowres.shape[2]:
        raise ValueError(f"frames={frames} but lowres has {lowres.shape[2]} frames")
    return lowres.shape[2]


def _check_schedule(model, arch: Arch | None, schedule: Schedule | None,
                    diffusion: DiffusionConfig) -> None:
    """A schedule runs on a supernet or a schedule folder's subnets, alone, over the
    diffusion's training timesteps."""
    if isinstance(model, ScheduledSubnets) and schedule is None:
        raise ValueError("a schedule folder's subnets sample with their `schedule=`")
    if schedule is None:
        return
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a resolved sned Schedule (got "
                        f"{type(schedule).__name__}); see sned.schedule.resolve_schedule")
    if arch is not None:
        raise ValueError("pass `arch` or `schedule`, not both")
    if not (model.is_supernet or isinstance(model, ScheduledSubnets)):
        raise TypeError("this is an extracted model; it runs its own arch and takes no "
                        "`schedule=` (extract the schedule: sned extract RUN --schedule ...)")
    if schedule.num_train_timesteps != diffusion.num_train_timesteps:
        raise ScheduleError(f"the schedule covers {schedule.num_train_timesteps} training "
                            f"timesteps but the model was trained with "
                            f"{diffusion.num_train_timesteps}")
    if schedule.config is not None and schedule.config != model.config.name:
        raise ScheduleError(f"the schedule is for config {schedule.config!r}, but the model is "
                            f"{model.config.name!r}")


@torch.no_grad()
def sample(model: VideoUNet, text_embeds: Tensor, text_mask: Tensor | None = None, *,
           diffusion: DiffusionConfig | None = None, arch: Arch | None = None,
           scheduler: str = "ddim", steps: int = 50, guidance_scale: float = 1.0,
           dynamic_threshold: float | None = None, seed: SeedLike = 0,
           frames: int | None = None, resolution: int | None = None,
           lowres: Tensor | None = None, aug_level: float | Tensor = 0.2,
           progress: bool = True, dtype: torch.dtype | str | None = "auto",
           clamp: bool = True, desc: str | None = None,
           schedule: Schedule | None = None) -> Tensor:
    """Generate videos for a batch of text embeddings.

    Args:
        model: a supernet (pass ``arch`` or ``schedule``), an extracted model (neither), or the
            :class:`~sned.schedule.folder.ScheduledSubnets` of a schedule folder (its
            ``schedule``); base or SSR.
        text_embeds: (B, L, text_dim) token embeddings of B captions.
        text_mask: (B, L) bool, True = real token (None = all real). The unconditional branch of
            classifier-free guidance is the same embeddings with an all-False mask (the model's
            learned null token is always attendable).
        diffusion: the schedule the model was trained with (default ``DiffusionConfig()``).
        arch: supernet only — the subnet to run; its resolution is the default ``resolution``.
        scheduler: ``"ddim"`` | ``"dpm"`` (DPM-Solver++ 2M) | ``"ddpm"`` (ancestral).
        steps: number of denoising steps.
        guidance_scale: CFG scale s, ``pred = uncond + s * (cond - uncond)``; the two branches
            run in ONE forward of batch 2B. ``1.0`` runs only the conditional branch.
        dynamic_threshold: Imagen dynamic-thresholding percentile of the predicted x0 (e.g.
            0.995); None = off.
        seed: see :data:`SeedLike` and the module's seeding rule.
        frames: T (default: lowres' frames for SSR, else the config's ``frames``).
        resolution: H = W (default :func:`default_resolution`); must equal ``arch.resolution``
            when both are given.
        lowres: SSR only — (B, C, T, h, w) video in [-1, 1] to upsample.
        aug_level: SSR only — noise-augmentation level in [0, 1] (float or (B,) tensor):
            ``lowres`` is upsampled to the output resolution, then noised to this level by
            :meth:`Objective.augment_lowres` (as in training), and the level is passed as
            ``noise_aug_level`` (Imagen samples with a fixed level, ≈ 0.2).
        progress: show a tqdm bar (``desc`` labels it).
        dtype: autocast dtype for the model's forward: ``"auto"`` (default: bf16 on CUDA,
            fp32 elsewhere), ``"bf16"``/``torch.bfloat16`` — meant for CUDA — or ``"fp16"``;
            None/``"fp32"`` = no autocast. The scheduler's state
            always stays float32. A model whose weights are bf16 gets bf16 inputs.
        clamp: clamp the result to [-1, 1].
        schedule: a subnet per denoising step (:class:`~sned.schedule.Schedule`, resolved for
            this model): each step runs the arch of the segment holding its timestep. Its
            resolution is the default ``resolution``; excludes ``arch``.
    Returns:
        (B, C, T, H, W) float32 video on the model's device, in [-1, 1] when ``clamp``.
    """
    from tqdm.auto import tqdm

    if not isinstance(model, (VideoUNet, ScheduledSubnets)):
        raise TypeError(f"model must be a sned VideoUNet (got {type(model).__name__})")
    cfg = model.config
    diffusion = DiffusionConfig() if diffusion is None else diffusion
    _check_schedule(model, arch, schedule, diffusion)
    if scheduler not in SAMPLERS:
        raise ValueError(f"unknown scheduler {scheduler!r}; choose from {list(SAMPLERS)}")
    if not isinstance(steps, Integral) or steps < 1:
        raise ValueError(f"steps must be a positive integer (got {steps!r})")
    if arch is not None and not model.is_supernet:
        raise TypeError("this is an extracted model; it runs its own arch and takes no `arch=`")
    if text_embeds.ndim != 3 or text_embeds.shape[-1] != cfg.text_dim:
        raise ValueError(f"text_embeds must be (B, L, {cfg.text_dim}); got "
                         f"{tuple(text_embeds.shape)}")
    b, length = text_embeds.shape[:2]
    if text_mask is not None and tuple(text_mask.shape) != (b, length):
        raise ValueError(f"text_mask must be (B={b}, L={length}); got {tuple(text_mask.shape)}")
    if arch is not None and resolution is not None and resolution != arch.resolution:
        raise ValueError(f"resolution={resolution} but the arch is for resolution "
                         f"{arch.resolution}; pass an arch for {resolution} (e.g. "
                         f"search_space(config).preset(name, {resolution}))")
    frames = _lowres_input(model, lowres, b, frames)
    frames = cfg.frames if frames is None else int(frames)
    res = default_resolution(model, arch, schedule) if resolution is None else int(resolution)
    if schedule is not None:
        schedule = schedule.at(res)

    p = next(model.parameters())
    device, pdtype = p.device, p.dtype
    amp = _amp_dtype(dtype, device)
    gens = generators(seed, b)
    sched = make_scheduler(diffusion, scheduler, dynamic_threshold)
    sched.set_timesteps(int(steps), device=device)
    x = initial_noise((b, cfg.in_channels, frames, res, res), gens, device,
                      diffusion.frame_noise_share)
    x = x * sched.init_noise_sigma

    cond_kw: dict[str, Tensor] = {}
    if cfg.kind == "ssr":
        level = torch.as_tensor(aug_level, dtype=torch.float32).flatten()
        level = (level.expand(b) if level.numel() == 1 else level).to(device)
        if level.shape != (b,) or bool(((level < 0) | (level > 1)).any()):
            raise ValueError(f"aug_level must be a float or (B={b},) tensor in [0, 1]")
        aug_noise = initial_noise((b, cfg.in_channels, frames, res, res), gens, device)
        low = Objective(diffusion).augment_lowres(lowres.to(device, torch.float32), level,
                                                  aug_noise)
        cond_kw = {"lowres": low, "noise_aug_level": level}

    cfg_on = guidance_scale != 1.0 and cfg.conditional  # unconditional: nothing to guide
    text = text_embeds.to(device, pdtype)
    mask = (torch.ones(b, length, dtype=torch.bool, device=device) if text_mask is None
            else text_mask.to(device).bool())
    if cfg_on:  # [cond; uncond]: the same tokens, every one masked out for the uncond half
        text = torch.cat([text, text])
        mask = torch.cat([mask, torch.zeros_like(mask)])
        cond_kw = {k: torch.cat([v, v]) for k, v in cond_kw.items()}
    cond_kw = {k: v.to(pdtype) for k, v in cond_kw.items()}
    arch_kw = {} if arch is None else {"arch": arch}
    n = text.shape[0]

    was_training = model.training
    model.eval()
    # linear/conv weights cast to the autocast dtype once, not in every step (same outputs)
    cast = matmul_weights_in(model, amp, keep=not model.is_supernet)
    graphs = uses_cuda_graphs(model)  # compiled with CUDA graphs: outputs reused by replays
    shapes = repeated_shapes(device)  # every step repeats its shapes: cuDNN benchmark, scoped
    cast.__enter__()
    shapes.__enter__()
    try:
        bar = tqdm(sched.timesteps, desc=desc or f"{cfg.name} {scheduler}", disable=not progress,
                   leave=False)
        for t in bar:
            inp = sched.scale_model_input(x, t)
            inp = torch.cat([inp, inp]) if cfg_on else inp
            if schedule is not None:  # the subnet of the segment holding t
                arch_kw = {"arch": schedule.arch_at(int(t))}
            if graphs:
                torch.compiler.cudagraph_mark_step_begin()
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                out = model(inp.to(pdtype), t.to(device).expand(n), text, mask, **cond_kw,
                            **arch_kw)
            out = out.to(torch.float32, copy=graphs)  # a copy before the next replay
            if cfg_on:
                cond, uncond = out.chunk(2)
                out = uncond + guidance_scale * (cond - uncond)
            x = sched.step(out, t, x, generator=gens).prev_sample
        bar.close()
    finally:
        shapes.__exit__(None, None, None)
        cast.__exit__(None, None, None)
        model.train(was_training)
    if cfg.kind == "ssr":  # a residual model sampled (x − up(lowres)) / s
        x = Objective.ssr_output(x, lowres.to(device, torch.float32), cfg.residual_scale)
    return x.clamp(-1.0, 1.0) if clamp else x
