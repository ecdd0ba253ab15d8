"""Load denoisers for generation from a training checkpoint or a model folder.

* a training run dir / checkpoint folder (``sned train`` output): the supernet plus the arch
  picked by ``preset`` or ``arch`` (default preset B);
* a model folder (``sned extract`` / :func:`sned.save_pretrained` output — a diffusers pipeline
  folder, a diffusers model folder or a 0.1 ``sned-model`` folder): the standalone subnet (or a
  saved supernet), labelled with the preset name its model card records.

Weights of a training checkpoint: ``ema=None`` (the default of every command) takes the EMA
weights when the checkpoint has them and the raw ones otherwise; ``ema=True`` / ``False`` asks
for one explicitly.

Both give a :class:`Denoiser`: the model, the arch to pass (None for extracted models), and the
diffusion config it was trained with. :func:`load_cascade` loads the stages of a base → SSR → …
cascade.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..arch import Arch, ArchError, check_resolution
from ..config import ConfigError, config_from_dict
from ..diffusion import DiffusionConfig, diffusion_of
from ..extract import extract, is_model_folder, load_pretrained, read_model_meta, unet_folder
from ..models.codec import codec_for, is_autoencoder_folder, served_resolution
from ..models.unet import VideoUNet
from ..schedule import Schedule, resolve_schedule
from ..schedule.folder import is_schedule_folder, load_schedule_folder
from ..space import SearchSpace, parse_preset
from ..store.checkpoint import load_weights, read_state, resolve_checkpoint
from ..store.files import CheckpointError
from .cascade import CascadeError, Stage, cascade_resolutions
from .compiled import compile_model

if TYPE_CHECKING:
    from ..models.codec import LatentCodec


@dataclass
class Denoiser:
    """A model ready to sample: ``model(**inputs, arch=arch)`` (arch None for extracted).

    Attributes:
        source: the folder it was loaded from.
        label: the preset name (``S`` …), an arch file's stem, or ``extracted@R`` for a folder
            without a model card.
        weights: ``"ema"`` or ``"raw"`` (None when unknown: a folder without a card).
        codec: latent models — the autoencoder (decoder) and latent normalisation that turn
            the denoiser's latents into video; None for pixel models.
        train: the ``train`` section the supernet was trained with (its floors decide
            :attr:`space`); None when not recorded (a model folder).
        data: the ``data`` section it was trained with (held-out evaluation data; recorded in
            extracted folders); None when not recorded.
        init_from: the image model the run started from (``train.init_from``: path, sha256 of
            its weights, …; :mod:`sned.train.transfer`); None for runs from scratch.
        schedule: a subnet per denoising step (:mod:`sned.schedule`) instead of ``arch``: a
            supernet's, or a schedule folder's (``model`` its subnets); None otherwise.
    """

    model: VideoUNet
    arch: Arch | None
    diffusion: DiffusionConfig
    source: str
    label: str
    weights: str | None = None
    codec: "LatentCodec | None" = None
    train: dict | None = None
    data: dict | None = None
    init_from: dict | None = None
    schedule: Schedule | None = None

    @property
    def config(self):
        return self.model.config

    def compiled(self, mode: str | None = "auto") -> "Denoiser":
        """This denoiser as a compiled static model (:func:`sned.pipelines.compile_model`;
        ``mode`` ``"auto"``: CUDA graphs on CUDA, the default mode on CPU): a supernet is
        extracted at its arch first (None: the full supernet) — the same outputs
        (:func:`sned.extract`) —, so ``arch`` becomes None; label and weights stay."""
        model = extract(self.model, self.arch) if self.model.is_supernet else self.model
        return replace(self, model=compile_model(model, mode), arch=None)

    @property
    def space(self) -> SearchSpace:
        """The space presets and searches of this supernet come from: its config with the
        floors it was trained to (:meth:`SearchSpace.for_run`)."""
        return SearchSpace.for_run(self.config, self.train)

    @property
    def resolution(self) -> int | None:
        if self.schedule is not None:
            return self.schedule.resolution
        if self.arch is not None:
            return self.arch.resolution
        return None if self.model.arch is None else self.model.arch.resolution

    def arch_at(self, resolution: int) -> Arch:
        """The subnet this denoiser runs, at ``resolution`` (extracted: the model's own arch)."""
        arch = self.arch if self.arch is not None else self.model.arch
        if arch is None:
            raise ArchError(f"{self.source} records no arch")
        return arch.at(resolution)

    def at(self, resolution: int) -> "Denoiser":
        """This denoiser's subnet run at ``resolution`` (ResolutionError when its config does
        not serve it); no reload."""
        check_resolution(self.config, resolution, self.source)
        if self.schedule is not None:
            return replace(self, schedule=self.schedule.at(resolution))
        return self if self.arch is None else self.with_arch(self.arch.at(resolution), self.label)

    def with_arch(self, arch: Arch | None, label: str) -> "Denoiser":
        return replace(self, arch=arch, label=label)

    def with_schedule(self, schedule) -> "Denoiser":
        """This supernet run with ``schedule`` (a :class:`~sned.schedule.Schedule`, a spec
        string ``S:0-400,B:400-1000``, a JSON file or dict) at this denoiser's resolution,
        checked against the floors it was trained to; ScheduleError names a bad segment."""
        if not self.model.is_supernet:
            raise ArchError(f"{self.source} is an extracted model; a schedule needs a supernet "
                            f"checkpoint")
        res = self.resolution or self.config.resolutions[0]
        sched = resolve_schedule(schedule, self.space, self.diffusion.num_train_timesteps, res)
        return replace(self, arch=None, schedule=sched, label=sched.label)


def load_denoiser(path: str | os.PathLike, preset: str | None = None,
                  arch: str | os.PathLike | Arch | None = None, ema: bool | None = None,
                  resolution: int | None = None, device: str | torch.device = "cpu",
                  schedule=None) -> Denoiser:
    """Load ``path`` (training checkpoint / run dir, or model folder) for sampling.

    Args:
        preset / arch: the subnet of a supernet checkpoint (default preset B), inside the
            floors the run trained to (:attr:`Denoiser.space`). An arch for a different config,
            or outside those floors, raises ArchError naming what is wrong.
        ema: None = EMA weights when the checkpoint has them, raw otherwise; True / False
            insists (True on a checkpoint without EMA weights raises CheckpointError).
        resolution: the resolution to run at, in pixels (a latent model runs at that size
            over its autoencoder's spatial factor); must be one the config serves
            (:func:`sned.models.codec.served_resolution`).
        schedule: a subnet per denoising step instead of ``preset`` / ``arch``
            (:meth:`Denoiser.with_schedule`). A schedule folder (``sned extract --schedule``)
            loads with its own schedule.
    """
    p = Path(path)
    if is_autoencoder_folder(p):
        raise CheckpointError(_AE_MESSAGE.format(p))
    if schedule is not None and (preset is not None or arch is not None):
        raise ArchError("--schedule replaces --preset / --arch; give one of them")
    if is_schedule_folder(p):
        return _load_schedule(p, preset, arch, schedule, resolution, device)
    if schedule is not None:
        den = load_denoiser(p, ema=ema, resolution=resolution, device=device)
        if den.codec is not None:
            raise ArchError(f"{p} is a latent model; sampling schedules are for pixel models")
        return den.with_schedule(schedule)
    if is_model_folder(p):
        meta = read_model_meta(p)
        if resolution is not None:
            cfg = _config_of(meta.get("model_config"), unet_folder(p) / "config.json")
            resolution = served_resolution(cfg, resolution, str(p))
        den = _load_folder(p, preset, arch, ema, resolution, device)
        return replace(den, codec=codec_for(p, device))

    folder = resolve_checkpoint(p)
    state = read_state(folder)
    run = state.get("run")
    if not isinstance(run, dict):
        raise CheckpointError(f"{folder / 'state.json'}: no \"run\" config recorded")
    cfg = _config_of(run.get("model"), folder / "state.json")
    diffusion = diffusion_of(run.get("diffusion"), folder / "state.json")
    if resolution is not None:
        resolution = served_resolution(cfg, resolution, str(folder))
    has_ema = (folder / "ema.safetensors").is_file()
    if ema and not has_ema:
        raise CheckpointError(f"{folder} has no EMA weights (ema.safetensors); leave out --ema "
                              f"(or pass --raw)")
    use_ema = has_ema if ema is None else ema
    with torch.device("meta"):
        model = VideoUNet(cfg)
    model = model.to_empty(device=device)
    load_weights(folder, model, ema=use_ema)
    model.eval()
    den = _pick(Denoiser(model, None, diffusion, str(folder), "B", train=run.get("train"),
                         data=run.get("data"), init_from=state.get("init_from")),
                preset, arch, resolution)
    return replace(den, weights="ema" if use_ema else "raw", codec=codec_for(folder, device))


def _load_folder(p: Path, preset, arch, ema, resolution, device) -> Denoiser:
    meta = read_model_meta(p)
    diffusion = diffusion_of(meta.get("diffusion", {}), unet_folder(p) / "config.json")
    model = load_pretrained(p, device=device)
    card = meta.get("card") or {}
    weights = card.get("weights")
    if ema is not None and weights is not None and weights != ("ema" if ema else "raw"):
        raise CheckpointError(f"{p} holds {weights} weights; --{'ema' if ema else 'raw'} only "
                              f"chooses between the weights of a training checkpoint")
    if model.is_supernet:
        return _pick(Denoiser(model, None, diffusion, str(p), "B", weights, data=meta.get("data"),
                              train=meta.get("train"), init_from=card.get("init_from")),
                     preset, arch, resolution)
    if preset is not None or arch is not None:
        raise ArchError(f"{p} is an extracted model ({_label(model, card)}); --preset/--arch "
                        f"only apply to supernet checkpoints")
    if resolution is not None:
        check_resolution(model.config, resolution, str(p))
    return Denoiser(model, None, diffusion, str(p), _label(model, card), weights,
                    data=meta.get("data"), init_from=card.get("init_from"))


def _load_schedule(p: Path, preset, arch, schedule, resolution, device) -> Denoiser:
    """A schedule folder: its subnets with its own schedule."""
    if preset is not None or arch is not None or schedule is not None:
        raise ArchError(f"{p} is an extracted sampling schedule; it runs its own schedule "
                        f"(no --preset / --arch / --schedule)")
    model, sched, meta = load_schedule_folder(p, device)
    if resolution is not None:
        sched = sched.at(check_resolution(model.config, resolution, str(p)))
    card = meta.get("card") or {}
    return Denoiser(model, None, diffusion_of(meta.get("diffusion", {}), p / "config.json"),
                    str(p), sched.label, card.get("weights"), data=meta.get("data"),
                    schedule=sched)


_AE_MESSAGE = ("{} is an autoencoder, not a denoiser: there is no subnet to extract or sample; "
               "evaluate it with `sned evaluate`, or train a latent model on it "
               "(train.autoencoder=...)")


def _config_of(raw, source: Path):
    """The model config recorded in ``source``; CheckpointError naming the file (an autoencoder
    run is told apart: it has no denoiser)."""
    if isinstance(raw, dict) and raw.get("kind") == "autoencoder":
        raise CheckpointError(_AE_MESSAGE.format(source.parent))
    try:
        return config_from_dict(raw, str(source))
    except (ConfigError, TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: {e}") from None


def _pick(den: Denoiser, preset, arch, resolution) -> Denoiser:
    """``den`` (a supernet) with the arch of ``preset`` / ``arch`` at ``resolution``; both lie
    inside the floors the supernet was trained to (an arch outside raises ArchError)."""
    space = den.space
    res = check_resolution(den.config, resolution, den.source) if resolution is not None \
        else den.config.resolutions[0]
    if arch is not None:
        source = str(arch) if not isinstance(arch, Arch) else "arch"
        a = (arch if isinstance(arch, Arch) else Arch.load(arch)).at(res)
        label = Path(str(arch)).stem if not isinstance(arch, Arch) else "arch"
        space.check_floors(space.validate(a, source=source), source)
    else:
        label = parse_preset(preset or "B")[0]  # canonical: "0.750" -> "0.75"
        a = space.validate(space.preset(label, res))
    return den.with_arch(a, label)


def _label(model: VideoUNet, card: dict) -> str:
    if card.get("subnet"):
        return str(card["subnet"])
    return "extracted" if model.arch is None else f"extracted@{model.arch.resolution}"


def load_cascade(model: str | os.PathLike, ssr: str | os.PathLike | None = None,
                 presets: list[str | None] | None = None, arch: str | os.PathLike | None = None,
                 resolution: int | None = None, ema: bool | None = None,
                 device: str | torch.device = "cpu", schedules: list | None = None
                 ) -> tuple[Denoiser, list[Denoiser]]:
    """The base denoiser and one SSR denoiser per upsampling step of a cascade ending at
    ``resolution`` (default: the base's own without ``ssr``, else the largest the SSR serves).

    ``presets``: one for every stage, or base first then one per SSR step (the last repeats).
    A supernet SSR is loaded once and reused with the preset's arch at each step's resolution;
    an extracted SSR serves every step with its own arch. Raises
    :class:`~sned.pipelines.cascade.CascadeError` for an unreachable resolution and
    :class:`~sned.arch.ResolutionError` for one a stage does not serve.
    ``schedules``: a sampling schedule per stage, base first (:mod:`sned.schedule`); a stage
    with one ignores its preset, stages past the list (or with None) use their presets.
    """
    presets = list(presets or [None])
    schedules = list(schedules or [])
    first = schedules[0] if schedules else None
    base = load_denoiser(model, preset=None if arch or first is not None else presets[0],
                         arch=arch, ema=ema, device=device, schedule=first)
    if base.codec is not None:
        return _latent_base(base, model, ssr, presets[0], arch, resolution), []
    if ssr is None:
        if len(presets) > 1:
            raise CascadeError(f"--preset {','.join(str(p) for p in presets)}: one preset per "
                               f"stage, but {model} is sampled alone (no --ssr); give one "
                               f"preset, or add --ssr for the others")
        base_res = base.resolution or base.config.resolutions[0]
        if resolution is not None and resolution != base_res:
            raise CascadeError(f"{model} generates {base_res}px; resolution {resolution} needs "
                               f"an SSR model (--ssr)")
        return base, []
    probe = load_denoiser(ssr, ema=ema, device=device)
    resolutions, _ = cascade_resolutions(Stage.from_denoiser(base), Stage.from_denoiser(probe),
                                         resolution)
    steps = resolutions[1:]
    if len(presets) > 1 + len(steps):
        raise CascadeError(f"--preset {','.join(str(p) for p in presets)}: {len(presets)} "
                           f"presets for a cascade of {1 + len(steps)} stage(s) (base + "
                           f"{len(steps)} SSR step(s) to {resolutions[-1]} px); give at most "
                           f"{1 + len(steps)}")
    per_stage = presets[1:] if len(presets) > 1 else presets
    per_stage = (per_stage + [per_stage[-1]] * len(steps))[:len(steps)]
    if not probe.model.is_supernet:
        if any(s is not None for s in schedules[1:]):
            raise ArchError(f"--schedule: the SSR {ssr} is an extracted model; a schedule needs "
                            f"a supernet checkpoint")
        return base, [probe] * len(steps)
    space = probe.space
    stages = [probe.with_arch(space.preset(p or "B", r), p or "B")
              for r, p in zip(steps, per_stage)]
    for j, spec in enumerate(schedules[1:len(steps) + 1]):
        if spec is not None:
            stages[j] = stages[j].with_schedule(spec)
    return base, stages


def _latent_base(base: Denoiser, model, ssr, preset, arch, resolution: int | None) -> Denoiser:
    """A latent base at the video ``resolution`` asked for (its latent side × the AE's factor);
    latent models decode to video themselves and take no SSR cascade."""
    if ssr is not None:
        raise CascadeError(f"{model} is a latent model (it decodes to video through its "
                           f"autoencoder); --ssr cascades are for pixel base models")
    if resolution is None:
        return base
    latent = served_resolution(base.config, resolution, base.source)
    if base.arch is None:  # extracted: its own arch
        return base
    if arch is not None:
        return base.with_arch(base.arch.at(latent), base.label)
    return base.with_arch(base.space.preset(preset or "B", latent), base.label)
