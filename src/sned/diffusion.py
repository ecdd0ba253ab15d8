"""The diffusion process: noise schedule, training target and loss, built on diffusers schedulers.

One :class:`DiffusionConfig` is shared by training, the validation-loss proxy and sampling, so
the three can never disagree about betas or the prediction type.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from .data.transforms import resize_video
from .store.files import CheckpointError

BETA_SCHEDULES = {"linear": "linear", "scaled_linear": "scaled_linear",
                  "cosine": "squaredcos_cap_v2"}
SAMPLERS = ("ddim", "dpm", "ddpm")


@dataclass(frozen=True)
class DiffusionConfig:
    """Noise schedule and objective.

    Attributes:
        num_train_timesteps: diffusion steps T.
        beta_schedule: ``linear`` | ``scaled_linear`` | ``cosine``.
        beta_start / beta_end: linear-schedule endpoints.
        prediction_type: ``epsilon`` or ``v_prediction``.
        loss: ``l2`` or ``l1``.
        min_snr_gamma: min-SNR-γ loss weighting (None = unweighted).
        frame_noise_share: share s of every frame's noise variance that is common to all
            frames of a clip — the "mixed" noise prior of PYoCo (Ge et al. 2023):
            ``noise = √(1−s)·z_frame + √s·z_clip``; training, the validation loss and the
            initial noise of sampling all draw it (:func:`frame_noise`). 0 (default) =
            independent frames.
        high_noise_share / high_noise_from: share p of the training timesteps drawn uniformly
            from [high_noise_from, T) instead of [0, T) (:meth:`Objective.sample_timesteps`):
            more updates in the noise band where the caption decides the scene — at 16 px
            every attribute's worth to the ideal denoiser lies at t ≥ 750
            (``benchmarks/bench_ideal_gain.py``). 0 (default) = uniform. The validation loss
            keeps uniform timesteps, so it stays comparable across settings.
    """

    num_train_timesteps: int = 1000
    beta_schedule: str = "cosine"
    beta_start: float = 0.0001
    beta_end: float = 0.02
    prediction_type: str = "v_prediction"
    loss: str = "l2"
    min_snr_gamma: float | None = None
    frame_noise_share: float = 0.0
    high_noise_share: float = 0.0
    high_noise_from: int = 750

    def __post_init__(self) -> None:
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"diffusion.beta_schedule {self.beta_schedule!r} is not one of "
                             f"{list(BETA_SCHEDULES)}")
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"diffusion.prediction_type {self.prediction_type!r} must be "
                             f"'epsilon' or 'v_prediction'")
        if self.loss not in ("l2", "l1"):
            raise ValueError(f"diffusion.loss {self.loss!r} must be 'l2' or 'l1'")
        if self.min_snr_gamma is not None and not self.min_snr_gamma > 0:
            raise ValueError(f"diffusion.min_snr_gamma must be > 0 (got {self.min_snr_gamma})")
        if not 0.0 <= self.frame_noise_share < 1.0:
            raise ValueError(f"diffusion.frame_noise_share must be in [0, 1) (got "
                             f"{self.frame_noise_share})")
        if not 0.0 <= self.high_noise_share <= 1.0:
            raise ValueError(f"diffusion.high_noise_share must be in [0, 1] (got "
                             f"{self.high_noise_share})")
        band_ok = 0 <= self.high_noise_from < self.num_train_timesteps
        if self.high_noise_share > 0 and not band_ok:  # the default 750 is harmless unused
            raise ValueError(f"diffusion.high_noise_from must be in [0, "
                             f"{self.num_train_timesteps}) (got {self.high_noise_from})")

    def to_dict(self) -> dict:
        return asdict(self)


def make_scheduler(cfg: DiffusionConfig, kind: str = "ddpm", dynamic_threshold: float | None = None):
    """A diffusers scheduler for ``cfg``: ``ddpm`` (training / ancestral sampling), ``ddim`` or
    ``dpm`` (DPM-Solver++ multistep).

    Every sampler uses "trailing" timestep spacing, so sampling starts at t = T−1 (pure noise
    under the training schedule) and steps down in equal strides, e.g. 999, 979, …, 19 for 50
    steps.

    ``dynamic_threshold``: Imagen's dynamic-thresholding percentile p of the predicted x0 (e.g.
    0.995), None = off. Per sample, s = max(1, percentile(|x̂0|, p)) and x̂0 ← clamp(x̂0, −s, s)/s.
    diffusers clamps s into [1, ``sample_max_value``]; with an unbounded ``sample_max_value``
    that is exactly Imagen's rule (with 1.0 it would be plain clipping to [−1, 1]).
    """
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    common = dict(num_train_timesteps=cfg.num_train_timesteps, beta_start=cfg.beta_start,
                  beta_end=cfg.beta_end, beta_schedule=BETA_SCHEDULES[cfg.beta_schedule],
                  prediction_type=cfg.prediction_type, timestep_spacing="trailing")
    if dynamic_threshold is not None:
        if not 0.5 < dynamic_threshold <= 1.0:
            raise ValueError(f"dynamic_threshold must be a percentile in (0.5, 1] "
                             f"(got {dynamic_threshold})")
        common.update(thresholding=True, dynamic_thresholding_ratio=dynamic_threshold,
                      sample_max_value=float("inf"))
    if kind == "ddpm":
        return DDPMScheduler(**common, clip_sample=False)
    if kind == "ddim":
        return DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=True)
    if kind == "dpm":
        return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++",
                                           solver_order=2)
    raise ValueError(f"unknown scheduler {kind!r}; choose from {list(SAMPLERS)}")


def frame_noise(shape, share: float = 0.0, generator: torch.Generator | None = None,
                device: torch.device | str | None = None) -> Tensor:
    """Standard normal noise for videos of ``shape`` (B, C, T, H, W) whose frames share ``share``
    of their variance: ``√(1−share)·z + √share·z_clip`` with z of ``shape`` and z_clip of one
    frame per clip, drawn in that order from ``generator`` (``share`` 0 draws z alone: exactly
    ``torch.randn(shape)``). Every element stays N(0, 1); two frames of a clip correlate by
    ``share``."""
    noise = torch.randn(tuple(shape), generator=generator, device=device)
    if share <= 0.0 or len(shape) != 5:
        return noise
    b, c, _, h, w = shape
    clip = torch.randn((b, c, 1, h, w), generator=generator, device=device)
    return math.sqrt(1.0 - share) * noise + math.sqrt(share) * clip


class Objective:
    """Noising, target and per-sample loss for one :class:`DiffusionConfig`.

    Uses the DDPM scheduler's ``add_noise``/``get_velocity`` on 5-D videos (B, C, T, H, W).
    """

    def __init__(self, cfg: DiffusionConfig) -> None:
        self.cfg = cfg
        self.scheduler = make_scheduler(cfg, "ddpm")
        ac = self.scheduler.alphas_cumprod.double()
        self.snr = (ac / (1 - ac)).float()  # (T,)

    def noise(self, shape, generator: torch.Generator | None = None,
              device: torch.device | str | None = None) -> Tensor:
        """Diffusion noise for clean videos of ``shape``: :func:`frame_noise` with the config's
        ``frame_noise_share``, drawn on ``device`` (the generator's)."""
        return frame_noise(shape, self.cfg.frame_noise_share, generator, device)

    def sample_timesteps(self, batch: int, generator: torch.Generator | None = None,
                         device: torch.device | str | None = None) -> Tensor:
        """Training timesteps (batch,) int64: uniform on [0, T), except that a share
        ``high_noise_share`` of them is drawn uniformly from [``high_noise_from``, T) instead.
        With the share at 0 this draws exactly what a plain ``torch.randint`` would."""
        cfg = self.cfg
        t = torch.randint(0, cfg.num_train_timesteps, (batch,), generator=generator,
                          device=device)
        if cfg.high_noise_share > 0:
            band = torch.randint(cfg.high_noise_from, cfg.num_train_timesteps, (batch,),
                                 generator=generator, device=device)
            pick = torch.rand(batch, generator=generator, device=device) < cfg.high_noise_share
            t = torch.where(pick, band, t)
        return t

    def noisy(self, x0: Tensor, noise: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """(x_t, target) for clean video x0 (B, C, T, H, W), noise like x0 and timesteps t (B,)."""
        xt = self.scheduler.add_noise(x0, noise, t)
        if self.cfg.prediction_type == "epsilon":
            return xt, noise
        return xt, self.scheduler.get_velocity(x0, noise, t)

    @staticmethod
    def ssr_base(lowres: Tensor, size: int) -> Tensor:
        """The clean upsampled condition (B, C, T, size, size) of ``lowres`` (B, C, T, h, w):
        bilinear, antialiased — what a residual SSR model's output is added to."""
        return resize_video(lowres, size)

    def ssr_pair(self, video: Tensor, residual_scale: float | None = None
                 ) -> tuple[Tensor, Tensor]:
        """An SSR training pair from a clip ``video`` (B, C, T, H, W) in [-1, 1].

        Returns ``(lowres, x0)``: lowres (B, C, T, H/2, W/2) is the antialiased downsample
        the SSR is conditioned on; x0 (B, C, T, H, W) is what it diffuses — the clip itself,
        or with a ``residual_scale`` s (``ModelConfig.residual_scale``) the residual
        ``(clip − ssr_base(lowres)) / s``, which :meth:`ssr_output` turns back into a video.
        Training and the validation loss build their pairs here; sampling uses
        :meth:`ssr_output`.
        """
        low = resize_video(video, video.shape[-1] // 2)
        if residual_scale is None:
            return low, video
        return low, (video - self.ssr_base(low, video.shape[-1])) / residual_scale

    @classmethod
    def ssr_output(cls, x0: Tensor, lowres: Tensor, residual_scale: float | None) -> Tensor:
        """The video (B, C, T, H, W) an SSR's sampled ``x0`` stands for (see :meth:`ssr_pair`):
        ``x0`` itself, or ``x0 · s + ssr_base(lowres)`` for a residual model."""
        if residual_scale is None:
            return x0
        return x0 * residual_scale + cls.ssr_base(lowres.to(x0), x0.shape[-1])

    def augment_lowres(self, lowres: Tensor, level: Tensor, noise: Tensor) -> Tensor:
        """The SSR condition (Imagen's noise-conditioning augmentation): upsample ``lowres``
        (B, C, T, h, w) to the target resolution of ``noise`` (B, C, T, H, W) — bilinear,
        antialiased — THEN diffuse it to timestep ``round(level * (T_train - 1))`` for per-sample
        levels (B,) in [0, 1]. Training (random levels), the validation loss and sampling (a
        fixed level, ≈0.2) all build the condition here; the model consumes it at (H, W).

        Returns:
            (B, C, T, H, W) float tensor like ``noise``.
        """
        b, c, t_, h, w = noise.shape
        if lowres.shape[:3] != (b, c, t_) or h != w:
            raise ValueError(f"lowres {tuple(lowres.shape)} and noise {tuple(noise.shape)} must "
                             f"share (B, C, T), and the target must be square")
        up = self.ssr_base(lowres.to(noise.dtype), h)
        t = (level.float().clamp(0, 1) * (self.cfg.num_train_timesteps - 1)).round().long()
        return self.scheduler.add_noise(up, noise, t.to(up.device))

    def weights(self, t: Tensor) -> Tensor:
        """Per-sample loss weights (B,) — min-SNR-γ (Hang et al. 2023) or ones."""
        if self.cfg.min_snr_gamma is None:
            return torch.ones(t.shape, device=t.device)
        snr = self.snr.to(t.device)[t]
        clipped = snr.clamp(max=self.cfg.min_snr_gamma)
        if self.cfg.prediction_type == "epsilon":
            return clipped / snr.clamp(min=1e-8)
        return clipped / (snr + 1)

    def loss(self, pred: Tensor, target: Tensor, t: Tensor) -> Tensor:
        """Per-sample weighted loss (B,), computed in float32."""
        diff = pred.float() - target.float()
        per = diff.abs() if self.cfg.loss == "l1" else diff.square()
        return per.flatten(1).mean(1) * self.weights(t)


def diffusion_of(raw, source: str | os.PathLike) -> DiffusionConfig:
    """The diffusion config recorded in ``source`` (a model folder's ``config.json`` or a
    checkpoint's ``state.json``); CheckpointError naming the file for anything else."""
    if not isinstance(raw, dict):
        raise CheckpointError(f"{source}: \"diffusion\" must be a JSON object, got "
                              f"{json.dumps(raw)[:40]}")
    try:
        return DiffusionConfig(**raw)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: \"diffusion\": {e}") from None
