"""The latent path's glue: a frozen autoencoder plus the latent normalisation (a "codec").

Normalised latents are ``(z + shift) * scale`` with ``z`` the posterior mean (LVDM's convention:
Sky Timelapse has scale 0.334, shift 1.461). Both numbers are estimated once, from the AE's
latents of training clips, when latent training starts (:func:`estimate_stats`), and travel with
the run (``OUT/autoencoder/``, ``state.json``) and with every extracted model folder.

Autoencoder folders (``config.json`` with ``"format": "sned-autoencoder"`` + ``model.safetensors``)
hold the encoder and decoder (a run's copy) or only the decoder (an extracted model's copy).
:func:`load_autoencoder` also accepts an AE training run folder or checkpoint.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..arch import ResolutionError, check_resolution
from ..config import ConfigError
from ..store.checkpoint import load_checkpoint_file, read_state, resolve_checkpoint
from ..store.files import (
    CheckpointError,
    atomic_folder,
    check_state_dict,
    expected_digest,
    file_sha256,
    load_safetensors,
    read_format_json,
    save_safetensors,
)
from .autoencoder import (
    AutoencoderConfig,
    VideoAutoencoder,
    autoencoder_config_from_dict,
    load_autoencoder_config,
)

FORMAT = "sned-autoencoder"
FOLDER = "autoencoder"
"""Name of the autoencoder sub-folder in latent run folders and extracted model folders."""


@dataclass(frozen=True)
class LatentStats:
    """Latent normalisation: ``normalised = (z + shift) * scale``."""

    scale: float = 1.0
    shift: float = 0.0

    def to_dict(self) -> dict:
        return {"scale": self.scale, "shift": self.shift}


class LatentCodec:
    """Video ↔ normalised latents through a frozen autoencoder.

    Args:
        ae: the autoencoder (decoder-only is enough to :meth:`decode`).
        stats: the latent normalisation.
    """

    def __init__(self, ae: VideoAutoencoder, stats: LatentStats) -> None:
        self.ae = ae.eval().requires_grad_(False)
        self.stats = stats

    @property
    def config(self) -> AutoencoderConfig:
        return self.ae.config

    @torch.no_grad()
    def encode(self, video: Tensor) -> Tensor:
        """(B, 3, T, H, W) in [-1, 1] → normalised latents (B, c, T/ft, H/fs, W/fs), the
        posterior mean."""
        p = next(self.ae.parameters())
        z = self.ae.encode(video.to(p.device, p.dtype)).mode().float()
        return (z + self.stats.shift) * self.stats.scale

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """Normalised latents (B, c, t, h, w) → video (B, 3, t·ft, h·fs, w·fs), float32."""
        p = next(self.ae.parameters())
        z = latents.float() / self.stats.scale - self.stats.shift
        return self.ae.decode(z.to(p.device, p.dtype)).float()

    def pixel_frames(self, latent_frames: int) -> int:
        return latent_frames * self.config.temporal_factor

    def latent_frames(self, frames: int) -> int:
        """Latent frames of a ``frames``-frame video; ValueError naming ``frames`` otherwise."""
        f = self.config.temporal_factor
        if frames < f or frames % f:
            raise ValueError(f"frames={frames} is not a multiple of the autoencoder's temporal "
                             f"factor {f} (try {max(f, frames // f * f)})")
        return frames // f


@torch.no_grad()
def estimate_stats(ae: VideoAutoencoder, videos) -> LatentStats:
    """Scale and shift from the posterior means of ``videos`` (an iterable of (B, 3, T, H, W)
    batches): ``shift = -mean(z)``, ``scale = 1 / std(z)`` over every latent value."""
    total, sq, n = 0.0, 0.0, 0
    p = next(ae.parameters())
    for v in videos:
        z = ae.encode(v.to(p.device, p.dtype)).mode().double()
        total += float(z.sum())
        sq += float(z.square().sum())
        n += z.numel()
    if n == 0:
        raise ValueError("estimate_stats needs at least one video")
    mean = total / n
    std = max((sq / n - mean * mean) ** 0.5, 1e-6)
    return LatentStats(scale=1.0 / std, shift=-mean)


# --------------------------------------------------------------------------------- folders
def save_autoencoder(ae: VideoAutoencoder, folder: str | os.PathLike,
                     stats: LatentStats | None = None,
                     parts: tuple[str, ...] | None = None, extra: dict | None = None) -> Path:
    """Write an autoencoder folder atomically (``parts`` default: what ``ae`` has)."""
    parts = tuple(parts or ae.parts)
    missing = [p for p in parts if p not in ae.parts]
    if missing:
        raise ValueError(f"cannot save part(s) {missing}: the autoencoder has {ae.parts}")
    state = {k: v.detach().contiguous().cpu() for k, v in ae.state_dict().items()
             if k.split(".", 1)[0] in parts}
    meta = {"format": FORMAT, "format_version": 1, "autoencoder_config": ae.config.to_dict(),
            "parts": list(parts), "latent": None if stats is None else stats.to_dict(),
            **(extra or {})}
    folder = Path(folder)
    with atomic_folder(folder) as tmp:
        meta["digests"] = {"model.safetensors": save_safetensors(state, tmp / "model.safetensors")}
        (tmp / "config.json").write_text(json.dumps(meta, indent=1) + "\n")
    return folder


def is_autoencoder_folder(path: str | os.PathLike) -> bool:
    """A sned autoencoder folder (``"format": "sned-autoencoder"``) or a diffusers
    ``VideoAutoencoder`` folder (a pipeline's ``vae/``)."""
    p = Path(path) / "config.json"
    if not p.is_file():
        return False
    try:
        data = json.loads(p.read_text())
        return data.get("format") == FORMAT or data.get("_class_name") == "VideoAutoencoder"
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


def _load_diffusers_autoencoder(p: Path, device) -> tuple[VideoAutoencoder, LatentStats | None]:
    """A ``VideoAutoencoder.save_pretrained`` folder, read with sned's checks (errors name the
    file); the same model ``VideoAutoencoder.from_pretrained`` gives."""
    raw = json.loads((p / "config.json").read_text())
    cfg = _config(raw.get("autoencoder_config"), p / "config.json")
    parts = tuple(raw.get("parts") or ("encoder", "decoder"))
    weights = p / "diffusion_pytorch_model.safetensors"
    state = load_safetensors(weights, device)
    scale, shift = raw.get("scaling_factor"), raw.get("shift_factor")
    for key, v in (("scaling_factor", scale), ("shift_factor", shift)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise CheckpointError(f"{p / 'config.json'}: \"{key}\" must be a number (the "
                                  f"latent normalisation), got {v!r}")
    stats = None if scale is None else LatentStats(float(scale), -float(shift or 0.0))
    ae = _build(cfg, parts, state, str(weights), device)
    ae.register_to_config(scaling_factor=scale, shift_factor=shift)
    return ae, stats


def autoencoder_with_stats(ae: VideoAutoencoder, stats: LatentStats | None) -> VideoAutoencoder:
    """``ae`` with ``stats`` recorded in its diffusers config (``scaling_factor``,
    ``shift_factor``), ready for ``save_pretrained`` as a pipeline's ``vae``."""
    if stats is not None:
        ae.register_to_config(scaling_factor=float(stats.scale), shift_factor=-float(stats.shift))
    return ae


def load_autoencoder(path: str | os.PathLike, device: str | torch.device = "cpu",
                     ema: bool = True) -> tuple[VideoAutoencoder, LatentStats | None]:
    """An autoencoder (eval mode) and its stored latent stats from an autoencoder folder, an
    autoencoder training run folder or checkpoint (EMA weights when present and ``ema``).

    Raises CheckpointError naming ``path`` when it is none of those.
    """
    p = Path(path)
    if is_autoencoder_folder(p) and "_class_name" in json.loads((p / "config.json").read_text()):
        return _load_diffusers_autoencoder(p, device)
    if is_autoencoder_folder(p):
        meta = read_format_json(p / "config.json", FORMAT, "sned autoencoder folder")
        cfg = _config(meta.get("autoencoder_config"), p / "config.json")
        parts = tuple(meta.get("parts") or ("encoder", "decoder"))
        state = load_safetensors(p / "model.safetensors", device, expected_digest(
            p / "model.safetensors", meta.get("digests"), p / "config.json"))
        try:
            stats = None if not meta.get("latent") else LatentStats(**meta["latent"])
        except TypeError as e:
            raise CheckpointError(f"{p / 'config.json'}: \"latent\": {e}") from None
        return _build(cfg, parts, state, str(p / "model.safetensors"), device), stats

    if not p.exists():
        raise CheckpointError(f"autoencoder {str(path)!r} does not exist")
    if (p / "config.json").is_file() and not (p / "checkpoints").exists() \
            and not (p / "state.json").exists():  # a folder: a garbled config.json is named
        read_format_json(p / "config.json", FORMAT, "sned autoencoder folder")
    folder = resolve_checkpoint(p)
    if not (folder / "state.json").is_file():
        raise CheckpointError(f"autoencoder {str(path)!r} is not an autoencoder run, "
                              f"checkpoint or folder")
    state_json = read_state(folder)  # a corrupt state.json is named
    model_raw = (state_json.get("run") or {}).get("model") or {}
    if model_raw.get("kind") != "autoencoder":
        raise CheckpointError(f"autoencoder {str(path)!r} is a checkpoint of "
                              f"{model_raw.get('name', 'a non-autoencoder model')!r}, not of an "
                              f"autoencoder")
    cfg = _config(model_raw, folder / "state.json")
    weights = load_checkpoint_file(folder / "model.safetensors", device)
    if ema and (folder / "ema.safetensors").is_file():
        weights.update(load_checkpoint_file(folder / "ema.safetensors", device))
    state = {k[3:]: v for k, v in weights.items() if k.startswith("ae.")}
    return _build(cfg, ("encoder", "decoder"), state, str(folder), device), None


def _config(raw, source: Path) -> AutoencoderConfig:
    try:
        return autoencoder_config_from_dict(dict(raw or {}), str(source))
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{source}: {e}") from None


def _build(cfg: AutoencoderConfig, parts, state: dict, source: str, device) -> VideoAutoencoder:
    with torch.device("meta"):
        ae = VideoAutoencoder(cfg, parts)
    check_state_dict(ae.state_dict(), state, source, f"autoencoder {cfg.name!r}")
    ae.load_state_dict(state, assign=True)
    return ae.to(device).eval()


def folder_digest(folder: str | os.PathLike) -> str:
    """sha256 of an autoencoder folder's weights (identifies the AE a model was trained on)."""
    return file_sha256(Path(folder) / "model.safetensors")


def load_codec(folder: str | os.PathLike, device: str | torch.device = "cpu") -> LatentCodec:
    """The codec stored in ``folder`` (an autoencoder folder with latent stats)."""
    ae, stats = load_autoencoder(folder, device)
    if stats is None:
        raise CheckpointError(f"{folder}: the autoencoder folder has no latent stats (scale/"
                              f"shift); it is not a latent model's codec")
    return LatentCodec(ae, stats)


def codec_for(path: str | os.PathLike, device: str | torch.device = "cpu"
              ) -> LatentCodec | None:
    """The codec of a latent model: ``path/autoencoder`` of a model folder, or the run's
    ``autoencoder/`` for a latent training run / checkpoint; None for pixel models.

    A latent model without its codec raises CheckpointError naming the missing folder.
    """
    p = Path(path)
    if (p / "model_index.json").is_file():  # a pipeline folder: its vae/
        vae = p / "vae"
        return load_codec(vae, device) if (vae / "config.json").is_file() else None
    if (p / "config.json").is_file() and not (p / "state.json").is_file():
        meta = json.loads((p / "config.json").read_text())
        meta = dict(meta.get("sned") or {}, **meta) if "_class_name" in meta else meta
        latent, root = meta.get("latent"), p
        if latent is not None and not isinstance(latent, dict):
            raise CheckpointError(f"{p / 'config.json'}: \"latent\" must be a JSON object "
                                  f"(autoencoder folder and latent stats), got {latent!r}")
    else:

        folder = resolve_checkpoint(p)
        latent, root = read_state(folder).get("latent"), folder.parent.parent
    if not latent:
        return None
    sub = root / latent.get("autoencoder", FOLDER)
    if not sub.is_dir():
        raise CheckpointError(f"{p} is a latent model but its autoencoder folder {sub} is "
                              f"missing")
    return load_codec(sub, device)


# --------------------------------------------------------------------------------- units
def pixel_factors(cfg) -> tuple[int, int] | None:
    """(temporal, spatial) factors of the autoencoder a latent UNet config names; None for a
    pixel config."""
    if getattr(cfg, "autoencoder", None) is None:
        return None

    ae = load_autoencoder_config(cfg.autoencoder)
    return ae.temporal_factor, ae.spatial_factor


def to_latent(cfg, resolution: int | None = None, frames: int | None = None
              ) -> tuple[int | None, int | None]:
    """Video ``resolution`` / ``frames`` → the latent UNet's units (None stays None).

    ValueError naming the value when it is not a multiple of the autoencoder's factor.
    """
    ft, fs = pixel_factors(cfg)
    if resolution is not None and (resolution < fs or resolution % fs):
        raise ValueError(f"resolution {resolution} is not a multiple of the autoencoder's "
                         f"spatial factor {fs} (config {cfg.name!r} serves "
                         f"{[r * fs for r in cfg.resolutions]} px)")
    if frames is not None and (frames < ft or frames % ft):
        raise ValueError(f"frames={frames} is not a multiple of the autoencoder's temporal "
                         f"factor {ft} (try {max(ft, frames // ft * ft)})")
    return (None if resolution is None else resolution // fs,
            None if frames is None else frames // ft)


def served_resolution(cfg, resolution: int, source: str | None = None) -> int:
    """A video ``resolution`` in pixels → the model's own units (latent side for a latent
    model), checked to be one it serves. Every command takes pixels; a ResolutionError names the
    value and the served resolutions in pixels."""
    factors = pixel_factors(cfg)
    if factors is None:
        return check_resolution(cfg, resolution, source)
    fs = factors[1]
    latent = resolution // fs if isinstance(resolution, int) and resolution % fs == 0 else None
    if latent not in cfg.resolutions:
        who = f"{source} ({cfg.name})" if source else f"config {cfg.name!r}"
        raise ResolutionError(f"resolution {resolution} px is not served by {who}; it serves "
                              f"{[r * fs for r in cfg.resolutions]} px")
    return latent
