"""The Imagen-style cascade base → SSR → SSR (SNED §4.2).

The base model generates at its resolution; then SSR models are applied recursively, each step
doubling the resolution (16 → 32 → 64 with the tiny configs, 64 → 128 → 256 with the pixel
configs). One SSR set of weights may serve every step — with the same arch or a different arch
per step (super-position: the arch's resolution is part of the arch).

    from sned.pipelines import Stage, generate
    video = generate(text, mask, base=Stage(base_net, space.preset("B")),
                     ssr=[Stage(ssr_net, ssr_space.preset("S", 32)),
                          Stage(ssr_net, ssr_space.preset("B", 64))],
                     final_resolution=64, steps=50, guidance_scale=5.0, seed=0)

Any stage may run a sampling schedule instead of one arch (``Stage(net, schedule=...)``, a
subnet per denoising step, :mod:`sned.schedule`): the cascade takes one per stage.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral

import torch
from torch import Tensor

from ..arch import Arch, check_resolution
from ..diffusion import DiffusionConfig
from ..models.unet import VideoUNet
from ..schedule import Schedule
from .sampling import SeedLike, default_resolution, sample

__all__ = ["CascadeError", "SEED_STRIDE", "Stage", "cascade_resolutions", "generate"]

SEED_STRIDE = 1_000_003
"""Stage ``j`` of the cascade samples with seed ``seed + j * SEED_STRIDE`` (int seeds)."""


class CascadeError(ValueError):
    """An impossible cascade: resolutions, stage kinds or per-stage settings."""


@dataclass(frozen=True)
class Stage:
    """One denoiser of the cascade.

    Attributes:
        model: a supernet (with ``arch``) or an extracted model (``arch`` None).
        arch: the subnet of a supernet. For SSR stages its ``resolution`` field is replaced by
            the resolution of the step it runs (so one arch can serve every step).
        diffusion: the schedule this model was trained with (None = ``generate``'s).
        label: a name for progress bars.
        schedule: a subnet per denoising step instead of ``arch`` (:mod:`sned.schedule`);
            moved to the stage's resolution like ``arch``.
    """

    model: VideoUNet
    arch: Arch | None = None
    diffusion: DiffusionConfig | None = None
    label: str | None = None
    schedule: Schedule | None = None

    @classmethod
    def from_denoiser(cls, den) -> "Stage":
        """From a :class:`sned.loading.Denoiser` (model, arch, diffusion, label, schedule)."""
        return cls(den.model, den.arch, den.diffusion, den.label,
                   getattr(den, "schedule", None))

    @property
    def config(self):
        return self.model.config

    @property
    def resolution(self) -> int:
        """The stage's own resolution (arch's, extracted model's, else the config's first)."""
        return default_resolution(self.model, self.arch, self.schedule)

    def name(self) -> str:
        return self.label or self.config.name

    def at(self, resolution: int) -> "Stage":
        """This stage with its arch (or schedule) moved to ``resolution``."""
        if self.schedule is not None:
            return dataclasses.replace(self, schedule=self.schedule.at(resolution))
        if self.arch is None or self.arch.resolution == resolution:
            return self
        return dataclasses.replace(self, arch=self.arch.at(resolution))


def _stages(ssr: Stage | Sequence[Stage] | None, k: int) -> list[Stage]:
    if ssr is None:
        if k:
            raise CascadeError(f"final resolution needs {k} SSR step(s) but no `ssr` stage "
                               f"was given")
        return []
    if isinstance(ssr, Stage):
        return [ssr] * k
    stages = list(ssr)
    if len(stages) != k:
        raise CascadeError(f"got {len(stages)} SSR stages for {k} upsampling step(s); pass one "
                           f"stage per step, or a single Stage to reuse for every step")
    return stages


def cascade_resolutions(base: Stage, ssr: Stage | Sequence[Stage] | None = None,
                        final_resolution: int | None = None) -> tuple[list[int], list[Stage]]:
    """Resolutions of every stage ([base, 2×base, ...]) and the SSR stage of each step.

    ``final_resolution`` defaults to: the base resolution without ``ssr``; ``base × 2^n`` for a
    list of n SSR stages; the largest resolution the SSR config supports for a single Stage.
    Raises :class:`CascadeError` naming the bad resolution and the supported ones.
    """
    if base.config.kind != "base":
        raise CascadeError(f"the base stage must be a base (text → video) model; config "
                           f"{base.config.name!r} is {base.config.kind!r}")
    r0 = base.resolution
    if final_resolution is None:
        if ssr is None:
            final_resolution = r0
        elif isinstance(ssr, Stage):
            final_resolution = max(ssr.config.resolutions)
        else:
            final_resolution = r0 * 2 ** len(list(ssr))
    final = int(final_resolution)
    k, r = 0, r0
    while r < final:
        r, k = r * 2, k + 1
    if r != final:
        reach = ", ".join(str(r0 * 2 ** i) for i in range(4))
        raise CascadeError(f"final_resolution {final} is not the base resolution {r0} times a "
                           f"power of 2 (reachable: {reach}, ...)")
    stages = _stages(ssr, k)
    resolutions = [r0 * 2 ** j for j in range(k + 1)]
    for j, (st, res) in enumerate(zip(stages, resolutions[1:]), start=1):
        if st.config.kind != "ssr":
            raise CascadeError(f"SSR stage {j} must be an SSR model; config "
                               f"{st.config.name!r} is {st.config.kind!r}")
        check_resolution(st.config, res, f"SSR stage {j} ({resolutions[j - 1]} → {res})")
    return resolutions, stages


def _per_stage(value, n: int, name: str) -> list:
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != n:
            raise CascadeError(f"{name} has {len(value)} entries for {n} stages")
        return list(value)
    return [value] * n


def _stage_seed(seed: SeedLike, j: int) -> SeedLike:
    """Stage j's seed: int seeds are offset by ``j * SEED_STRIDE``; generators are shared."""
    if isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, Integral) and not isinstance(seed, bool):
        return int(seed) + j * SEED_STRIDE
    seeds = list(seed)
    if all(isinstance(s, Integral) and not isinstance(s, bool) for s in seeds):
        return [int(s) + j * SEED_STRIDE for s in seeds]
    if all(isinstance(s, torch.Generator) for s in seeds):
        return seeds
    raise TypeError(f"seed must be an int, a list of ints, a torch.Generator or a list of "
                    f"Generators (got {type(seed).__name__})")


def generate(text_embeds: Tensor, text_mask: Tensor | None = None, *, base: Stage,
             ssr: Stage | Sequence[Stage] | None = None, final_resolution: int | None = None,
             diffusion: DiffusionConfig | None = None, scheduler: str | Sequence[str] = "ddim",
             steps: int | Sequence[int] = 50, guidance_scale: float | Sequence[float] = 1.0,
             dynamic_threshold: float | None | Sequence[float | None] = None,
             seed: SeedLike = 0, frames: int | None = None,
             aug_level: float | Sequence[float] = 0.2, progress: bool = True,
             dtype: torch.dtype | str | None = "auto", return_stages: bool = False
             ) -> Tensor | tuple[Tensor, list[Tensor]]:
    """Run the cascade: base at its resolution, then SSR steps up to ``final_resolution``.

    Args:
        text_embeds: (B, L, text_dim) caption embeddings (every stage gets the same ones).
        text_mask: (B, L) bool, True = real token.
        base: the base Stage; its resolution (arch's / extracted model's / config's first) is
            where the cascade starts.
        ssr: one Stage per upsampling step, or a single Stage reused for every step.
        final_resolution: ``base_res × 2^k``; every intermediate resolution must be supported
            by that step's SSR config (see :func:`cascade_resolutions`).
        diffusion: default schedule for stages without their own.
        scheduler / steps / guidance_scale / dynamic_threshold / aug_level: one value for every
            stage or a sequence with one per stage (base first; ``aug_level`` of the base is
            ignored).
        seed: int seeds give stage ``j`` the seed ``seed + j * SEED_STRIDE`` (sample i of stage
            j uses ``seed + j * SEED_STRIDE + i``); a Generator is shared by every stage.
        frames: T for every stage (default: the base config's ``frames``).
        progress: one tqdm bar per stage.
        dtype: autocast dtype (default ``"auto"``: bf16 on CUDA), see
            :func:`~.sampling.sample`.
        return_stages: also return every stage's output.
    Returns:
        the final (B, C, T, R, R) video in [-1, 1]; with ``return_stages``, ``(video,
        [base output, SSR step 1 output, ...])``.
    """
    resolutions, ssr_stages = cascade_resolutions(base, ssr, final_resolution)
    stages = [base] + [st.at(r) for st, r in zip(ssr_stages, resolutions[1:])]
    n = len(stages)
    kinds = _per_stage(scheduler, n, "scheduler")
    n_steps = _per_stage(steps, n, "steps")
    scales = _per_stage(guidance_scale, n, "guidance_scale")
    thresholds = _per_stage(dynamic_threshold, n, "dynamic_threshold")
    levels = _per_stage(aug_level, n, "aug_level")
    frames = base.config.frames if frames is None else frames

    outputs: list[Tensor] = []
    video: Tensor | None = None
    for j, (st, res) in enumerate(zip(stages, resolutions)):
        step = (f"{resolutions[j - 1]}→{res}px" if j else f"{res}px")
        desc = f"stage {j + 1}/{n} {'ssr' if j else 'base'} {st.name()} {step}"
        lowres = None
        if j:
            lowres = video.to(next(st.model.parameters()).device)
        video = sample(st.model, text_embeds, text_mask,
                       diffusion=st.diffusion or diffusion, arch=st.arch,
                       scheduler=kinds[j], steps=n_steps[j], guidance_scale=scales[j],
                       dynamic_threshold=thresholds[j], seed=_stage_seed(seed, j),
                       frames=frames, resolution=res if st.arch is None else None,
                       lowres=lowres, aug_level=levels[j], progress=progress, dtype=dtype,
                       desc=desc, schedule=st.schedule)
        outputs.append(video)
    assert video is not None
    return (video, outputs) if return_stages else video
