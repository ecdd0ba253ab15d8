"""Load a denoiser for generation from either a training checkpoint or a model folder.

* a training run dir / checkpoint folder (``sned train`` output): the supernet, EMA weights by
  default, plus the arch picked by ``preset`` or ``arch`` (default preset B);
* a model folder (``sned extract`` / :func:`sned.save_pretrained` output): the standalone subnet.

Both give a :class:`Denoiser`: the model, the arch to pass (None for extracted models), and the
diffusion config it was trained with.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .arch import Arch, ArchError
from .config import config_from_dict
from .diffusion import DiffusionConfig
from .extract import load_pretrained, read_model_meta
from .files import CheckpointError
from .models.unet import VideoUNet
from .space import SearchSpace


@dataclass
class Denoiser:
    """A model ready to sample: ``model(**inputs, arch=arch)`` (arch None for extracted)."""

    model: VideoUNet
    arch: Arch | None
    diffusion: DiffusionConfig
    source: str
    label: str

    @property
    def config(self):
        return self.model.config

    @property
    def resolution(self) -> int | None:
        if self.arch is not None:
            return self.arch.resolution
        return None if self.model.arch is None else self.model.arch.resolution

    def with_arch(self, arch: Arch | None, label: str) -> "Denoiser":
        return Denoiser(self.model, arch, self.diffusion, self.source, label)


def is_model_folder(path: str | os.PathLike) -> bool:
    return (Path(path) / "config.json").is_file() and not (Path(path) / "state.json").is_file()


def load_denoiser(path: str | os.PathLike, preset: str | None = None,
                  arch: str | os.PathLike | Arch | None = None, ema: bool = True,
                  resolution: int | None = None, device: str | torch.device = "cpu"
                  ) -> Denoiser:
    """Load ``path`` (training checkpoint / run dir, or model folder) for sampling.

    Args:
        preset / arch: the subnet of a supernet checkpoint (default preset B). An arch for a
            different config raises ArchError naming both configs.
        ema: use the EMA weights of a training checkpoint (default).
        resolution: the resolution to run at; must be one the config serves.
    """
    p = Path(path)
    if is_model_folder(p):
        model = load_pretrained(p, device=device)
        meta = read_model_meta(p)
        diffusion = DiffusionConfig(**meta.get("diffusion", {}))
        if model.is_supernet:
            return _pick(model, diffusion, str(p), preset, arch, resolution)
        if preset is not None or arch is not None:
            raise ArchError(f"{p} is an extracted model ({_label(model)}); --preset/--arch only "
                            f"apply to supernet checkpoints")
        _check_resolution(model, resolution, str(p))
        return Denoiser(model, None, diffusion, str(p), _label(model))
    from .train.checkpoint import load_weights, read_state, resolve_checkpoint

    folder = resolve_checkpoint(p)
    state = read_state(folder)
    try:
        run = state["run"]
        cfg = config_from_dict(run["model"], f"{folder / 'state.json'}")
        diffusion = DiffusionConfig(**run["diffusion"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{folder / 'state.json'}: {e}") from None
    with torch.device("meta"):
        model = VideoUNet(cfg)
    model = model.to_empty(device=device)
    load_weights(folder, model, ema=ema and (folder / "ema.safetensors").is_file())
    model.eval()
    return _pick(model, diffusion, str(folder), preset, arch, resolution)


def _pick(model: VideoUNet, diffusion: DiffusionConfig, source: str, preset, arch,
          resolution) -> Denoiser:
    space = SearchSpace(model.config)
    res = resolution if resolution is not None else model.config.resolutions[0]
    if res not in model.config.resolutions:
        raise ArchError(f"resolution {res} is not one {source} ({model.config.name}) can "
                        f"produce; it serves {list(model.config.resolutions)}")
    if arch is not None:
        a = arch if isinstance(arch, Arch) else Arch.load(arch)
        a = Arch(res, a.blocks, a.config)
        label = Path(str(arch)).stem if not isinstance(arch, Arch) else "arch"
    else:
        label = preset or "B"
        a = space.preset(label, res)
    space.validate(a)
    return Denoiser(model, a, diffusion, source, label)


def _check_resolution(model: VideoUNet, resolution: int | None, source: str) -> None:
    f = model.config.downsample_factor
    if resolution is not None and (resolution < f or resolution % f):
        raise ArchError(f"resolution {resolution} is not a multiple of {f}, which {source} "
                        f"needs")


def _label(model: VideoUNet) -> str:
    return "extracted" if model.arch is None else f"extracted@{model.arch.resolution}"
