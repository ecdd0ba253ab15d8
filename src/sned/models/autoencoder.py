"""Video autoencoder for latent diffusion: LVDM's "basic" 3-D conv AE (TATS-style), KL latent.

Encoder: conv(3³) → [strided conv(4³) ↓ → ResBlock] × log2(max factor) → norm → SiLU → conv(3³)
→ 1×1×1 "quant" conv → the mean and log-variance of a diagonal Gaussian over ``latent_channels``
(diffusers' :class:`DiagonalGaussianDistribution`). Decoder: 1×1×1 "post-quant" conv →
[transposed conv(4³) ↑ → ResBlock → ResBlock] × n → conv(3³). Every dimension downsamples by 2
per stage until its factor is reached (LVDM's ``downsample: [4, 8, 8]``: T×4, H×8, W×8).

Every convolution pads with **replicate** padding in T, H and W, and normalisation is GroupNorm
**per frame** (statistics over channels-in-group × H × W of each frame). Both are temporally
local, so the encoder is exactly shift-equivariant in time away from the clip's ends: shifting
a clip by the temporal factor shifts its interior latents by one (LVDM normalises over the whole
clip, which makes that only approximate). The AE is fully convolutional: one set of weights
serves every resolution (the super-position training of SNED §4.3).

Tensors are videos ``(B, C, T, H, W)`` in [-1, 1] and latents ``(B, latent_channels, T/ft,
H/fs, W/fs)``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import Tensor, nn

from ..config import ModelConfig, check_resolutions, config_from_dict, load_config_dict
from ..config_parsing import ConfigError, apply_overrides, typed_fields


@dataclass(frozen=True)
class AutoencoderConfig:
    """A video autoencoder and how it is trained.

    Attributes:
        name: config name.
        kind: always ``"autoencoder"`` (how the config loader tells it from a UNet config).
        in_channels: video channels (3).
        hidden: width after the first conv; it doubles at every downsampling stage (LVDM's
            ``n_hiddens``).
        latent_channels: channels of the Gaussian latent (4).
        downsample: (T, H, W) factors, powers of two; the number of stages is log2 of the
            largest. H and W factors must be equal.
        norm_groups: GroupNorm groups (every width must be a multiple).
        frames / resolutions: clip length and spatial sizes (pixels) the AE is trained at; a
            resolution is drawn per step (super-position only, no dynamic cost).
        kl_weight: weight of the KL term relative to the L1 reconstruction (LVDM ~1e-6).
        perceptual_weights: optional local file of the perceptual network ``net(x, y) ->
            (N, ...)`` on (N, 3, H, W) frames in [-1, 1]: an LPIPS-VGG state dict
            (``.safetensors``, or ``.pt`` read with ``weights_only=True``;
            :mod:`sned.metrics.perceptual`); never downloaded.
        perceptual_trust_code: also accept a TorchScript module or ``torch.export`` program
            (``.pt2``) as ``perceptual_weights``. Loading those RUNS CODE from the file: only
            for files you trust (off: such files are refused unopened).
        perceptual_weight: weight of the perceptual term (when weights are given).
        disc_start: step from which a 3-D patch discriminator adds a hinge adversarial loss
            (None = no discriminator; LVDM starts at 50,001).
        disc_weight: weight of the generator's adversarial term.
        disc_channels / disc_layers: width and depth of the patch discriminator.
    """

    name: str = "custom-ae"
    kind: str = "autoencoder"
    in_channels: int = 3
    hidden: int = 32
    latent_channels: int = 4
    downsample: tuple[int, int, int] = (4, 8, 8)
    norm_groups: int = 32
    frames: int = 16
    resolutions: tuple[int, ...] = (256,)
    kl_weight: float = 1e-6
    perceptual_weights: str | None = None
    perceptual_trust_code: bool = False
    perceptual_weight: float = 1.0
    disc_start: int | None = None
    disc_weight: float = 0.5
    disc_channels: int = 64
    disc_layers: int = 3

    # ----------------------------------------------------------------------------- derived
    @property
    def temporal_factor(self) -> int:
        return self.downsample[0]

    @property
    def spatial_factor(self) -> int:
        return self.downsample[1]

    @property
    def stages(self) -> int:
        return int(math.log2(max(self.downsample)))

    def stage_strides(self) -> list[tuple[int, int, int]]:
        """(T, H, W) stride of each down (and, reversed, up) stage."""
        left = [int(math.log2(d)) for d in self.downsample]
        out = []
        for _ in range(self.stages):
            out.append(tuple(2 if n > 0 else 1 for n in left))
            left = [n - 1 for n in left]
        return out

    def width(self, stage: int) -> int:
        """Width after down stage ``stage`` (0-based); ``width(-1)`` is the first conv's."""
        return self.hidden * 2 ** (stage + 1)

    def latent_shape(self, frames: int, resolution: int) -> tuple[int, int, int, int]:
        """(C, T, H, W) of the latent of a ``frames`` × ``resolution``² clip."""
        return (self.latent_channels, frames // self.temporal_factor,
                resolution // self.spatial_factor, resolution // self.spatial_factor)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def __post_init__(self) -> None:
        _validate(self)


def _fail(key: str, value: Any, why: str) -> None:
    raise ConfigError(f"config key {key!r}: {why} (got {value!r})")


def _validate(cfg: AutoencoderConfig) -> None:
    for key in ("in_channels", "hidden", "latent_channels", "norm_groups", "frames",
                "disc_channels", "disc_layers"):
        v = getattr(cfg, key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            _fail(key, v, "must be a positive integer")
    ds = cfg.downsample
    if len(ds) != 3 or any(not isinstance(d, int) or d < 1 or d & (d - 1) for d in ds):
        _fail("downsample", ds, "must be three powers of two (T, H, W)")
    if ds[1] != ds[2] or ds[1] < 2:
        _fail("downsample", ds, "H and W factors must be equal and >= 2")
    if cfg.temporal_factor < 2:
        _fail("downsample", ds, "the temporal factor must be >= 2")
    for w in [cfg.hidden] + [cfg.width(i) for i in range(cfg.stages)]:
        if w % cfg.norm_groups:
            _fail("norm_groups", cfg.norm_groups, f"width {w} is not a multiple of it")
    if cfg.frames % cfg.temporal_factor:
        _fail("frames", cfg.frames, f"must be a multiple of the temporal factor "
                                    f"{cfg.temporal_factor}")
    check_resolutions(cfg.resolutions, cfg.spatial_factor, "the spatial factor")
    if not cfg.kl_weight >= 0 or not cfg.perceptual_weight >= 0 or not cfg.disc_weight >= 0:
        _fail("kl_weight", (cfg.kl_weight, cfg.perceptual_weight, cfg.disc_weight),
              "loss weights must be >= 0")
    if not isinstance(cfg.perceptual_trust_code, bool):
        _fail("perceptual_trust_code", cfg.perceptual_trust_code, "must be true or false")
    if cfg.disc_start is not None and (not isinstance(cfg.disc_start, int) or cfg.disc_start < 0):
        _fail("disc_start", cfg.disc_start, "must be a step >= 0 or null")


_FIELDS = {f.name for f in dataclasses.fields(AutoencoderConfig)}


def autoencoder_config_from_dict(raw: dict[str, Any], source: str | None = None
                                 ) -> AutoencoderConfig:
    """A validated :class:`AutoencoderConfig` from a plain dict (YAML / ``config.json``)."""
    unknown = sorted(set(raw) - _FIELDS)
    where = f" in {source}" if source else ""
    if unknown:
        raise ConfigError(f"config key {unknown[0]!r}{where}: unknown key; valid keys are "
                          f"{sorted(_FIELDS)}")
    d = dict(raw)
    for key in ("downsample", "resolutions"):
        if key in d:
            d[key] = tuple(d[key]) if isinstance(d[key], (list, tuple)) else (d[key],)
    try:
        return AutoencoderConfig(**typed_fields(AutoencoderConfig, d))
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}" if source else str(e)) from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"invalid autoencoder config{where}: {e}") from None


def load_autoencoder_config(config, overrides: list[str] | None = None) -> AutoencoderConfig:
    """An :class:`AutoencoderConfig` from a built-in name, YAML path, dict or config, plus
    ``key=value`` overrides; ConfigError naming the source when it is not one."""
    cfg = load_model_config(config, overrides)
    if not isinstance(cfg, AutoencoderConfig):
        raise ConfigError(f"config {cfg.name!r} is a {cfg.kind!r} UNet config, not an "
                          f"autoencoder config (kind: autoencoder)")
    return cfg


def load_model_config(config, overrides: list[str] | None = None, source: str | None = None
                      ) -> ModelConfig | AutoencoderConfig:
    """Any trainable config: a UNet :class:`~sned.config.ModelConfig` or, for ``kind:
    autoencoder``, an :class:`AutoencoderConfig` (what ``sned train`` accepts)."""
    if isinstance(config, (ModelConfig, AutoencoderConfig)):
        raw, source = config.to_dict(), f"config {config.name!r}"
    elif isinstance(config, dict):
        raw, source = config, source or "config dict"
    else:
        raw, source = load_config_dict(config)
    if overrides:
        raw = apply_overrides(raw, overrides)
    if isinstance(raw, dict) and raw.get("kind") == "autoencoder":
        return autoencoder_config_from_dict(raw, source)
    return config_from_dict(raw, source)


# --------------------------------------------------------------------------------- layers
def _same_pad(kernel: tuple[int, ...], stride: tuple[int, ...]) -> tuple[int, ...]:
    """F.pad amounts (W, H, T order) so that a conv keeps size / stride exactly."""
    pads = []
    for k, s in zip(reversed(kernel), reversed(stride)):
        p = k - s
        pads += [p // 2 + p % 2, p // 2]
    return tuple(pads)


class PadConv3d(nn.Module):
    """3-D conv with replicate "same" padding: (B, Ci, T, H, W) → (B, Co, T/s, H/s, W/s)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride=(1, 1, 1)) -> None:
        super().__init__()
        k = (kernel,) * 3
        self.pad = _same_pad(k, tuple(stride))
        self.conv = nn.Conv3d(cin, cout, k, stride=tuple(stride))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, self.pad, mode="replicate"))


class PadConvTranspose3d(nn.Module):
    """Transposed 3-D conv (kernel 4) with replicate padding: upsamples by ``stride`` exactly."""

    def __init__(self, cin: int, cout: int, stride=(2, 2, 2), kernel: int = 4) -> None:
        super().__init__()
        k = (kernel,) * 3
        self.pad = _same_pad(k, tuple(stride))
        self.conv = nn.ConvTranspose3d(cin, cout, k, stride=tuple(stride), padding=kernel - 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, self.pad, mode="replicate"))


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm with statistics per frame: (B, C, T, H, W) → same shape."""

    def forward(self, x: Tensor) -> Tensor:
        b, c, t, h, w = x.shape
        y = super().forward(x.transpose(1, 2).reshape(b * t, c, h, w))
        return y.reshape(b, t, c, h, w).transpose(1, 2)


class ResBlock3d(nn.Module):
    """norm → SiLU → conv(3³) → norm → SiLU → conv(3³), plus the input. (B, C, T, H, W)."""

    def __init__(self, ch: int, groups: int) -> None:
        super().__init__()
        self.norm1 = FrameGroupNorm(groups, ch, eps=1e-6)
        self.conv1 = PadConv3d(ch, ch, 3)
        self.norm2 = FrameGroupNorm(groups, ch, eps=1e-6)
        self.conv2 = PadConv3d(ch, ch, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


# --------------------------------------------------------------------------------- the AE
class Encoder(nn.Module):
    """(B, 3, T, H, W) → (B, 2·latent, T/ft, H/fs, W/fs): Gaussian moments (mean, logvar)."""

    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        self.conv_in = PadConv3d(cfg.in_channels, cfg.hidden, 3)
        self.down = nn.ModuleList()
        self.res = nn.ModuleList()
        ch = cfg.hidden
        for i, stride in enumerate(cfg.stage_strides()):
            self.down.append(PadConv3d(ch, cfg.width(i), 4, stride))
            ch = cfg.width(i)
            self.res.append(ResBlock3d(ch, cfg.norm_groups))
        self.norm_out = FrameGroupNorm(cfg.norm_groups, ch, eps=1e-6)
        self.conv_out = PadConv3d(ch, 2 * cfg.latent_channels, 3)
        self.quant = nn.Conv3d(2 * cfg.latent_channels, 2 * cfg.latent_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for down, res in zip(self.down, self.res):
            h = res(down(h))
        return self.quant(self.conv_out(F.silu(self.norm_out(h))))


class Decoder(nn.Module):
    """(B, latent, t, h, w) → (B, 3, t·ft, h·fs, w·fs) video (unbounded; ≈ [-1, 1])."""

    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        self.post_quant = nn.Conv3d(cfg.latent_channels, cfg.latent_channels, 1)
        self.up = nn.ModuleList()
        self.res = nn.ModuleList()
        ch = cfg.latent_channels
        n = cfg.stages
        for i, stride in enumerate(reversed(cfg.stage_strides())):
            out = cfg.width(n - 1 - i)
            self.up.append(PadConvTranspose3d(ch, out, stride))
            self.res.append(nn.Sequential(ResBlock3d(out, cfg.norm_groups),
                                          ResBlock3d(out, cfg.norm_groups)))
            ch = out
        self.conv_out = PadConv3d(ch, cfg.in_channels, 3)

    def forward(self, z: Tensor) -> Tensor:
        h = self.post_quant(z)
        for up, res in zip(self.up, self.res):
            h = res(up(h))
        return self.conv_out(h)


class VideoAutoencoder(ModelMixin, ConfigMixin):
    """KL video autoencoder; a diffusers model (``from_pretrained`` / ``save_pretrained``).

    Args:
        autoencoder_config: the autoencoder config (an :class:`AutoencoderConfig` or its dict).
        parts: which halves to build — ``("encoder", "decoder")`` for training, ``("decoder",)``
            for a sampling-only model folder.
        scaling_factor / shift_factor: the latent normalisation in diffusers' convention,
            ``normalised = (z - shift_factor) * scaling_factor`` (sned's
            :class:`~sned.models.codec.LatentStats` has ``scale = scaling_factor``,
            ``shift = -shift_factor``); None when not estimated yet. Recorded, not used by
            :meth:`encode` / :meth:`decode`.

    ``model.config`` is the :class:`AutoencoderConfig`; the diffusers dict is
    ``model.diffusers_config``.
    """

    config_name = "config.json"

    @register_to_config
    def __init__(self, autoencoder_config: AutoencoderConfig | dict | None = None,
                 parts: tuple[str, ...] = ("encoder", "decoder"),
                 scaling_factor: float | None = None, shift_factor: float | None = None) -> None:
        super().__init__()
        config = autoencoder_config
        if config is None:
            raise TypeError("VideoAutoencoder needs a config (an AutoencoderConfig or its dict)")
        if not isinstance(config, AutoencoderConfig):
            config = autoencoder_config_from_dict(dict(config), "VideoAutoencoder config")
        parts = tuple(parts)
        bad = [p for p in parts if p not in ("encoder", "decoder")]
        if bad or not parts:
            raise ValueError(f"parts must be a non-empty subset of ('encoder', 'decoder'), "
                             f"got {parts!r}")
        self.register_to_config(autoencoder_config=config.to_dict(), parts=list(parts))
        self._ae_config = config
        self.parts = tuple(parts)
        if "encoder" in parts:
            self.encoder = Encoder(config)
        if "decoder" in parts:
            self.decoder = Decoder(config)

    @property
    def config(self) -> AutoencoderConfig:  # diffusers' dict: `diffusers_config`
        return self._ae_config

    @property
    def diffusers_config(self):
        return self._internal_dict

    def check_video(self, x: Tensor) -> None:
        cfg = self.config
        if x.ndim != 5 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"video must be (B, {cfg.in_channels}, T, H, W); got "
                             f"{tuple(x.shape)}")
        t, h, w = x.shape[2:]
        if t % cfg.temporal_factor:
            raise ValueError(f"frames {t} is not a multiple of the autoencoder's temporal "
                             f"factor {cfg.temporal_factor}")
        if h % cfg.spatial_factor or w % cfg.spatial_factor:
            raise ValueError(f"resolution {h}x{w} is not a multiple of the autoencoder's "
                             f"spatial factor {cfg.spatial_factor}")

    def encode(self, x: Tensor):
        """x: (B, 3, T, H, W) → DiagonalGaussianDistribution over (B, latent, t, h, w)."""
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        if not hasattr(self, "encoder"):
            raise TypeError("this autoencoder was loaded decoder-only; it cannot encode")
        self.check_video(x)
        return DiagonalGaussianDistribution(self.encoder(x))

    def decode(self, z: Tensor) -> Tensor:
        """z: (B, latent, t, h, w) → (B, 3, t·ft, h·fs, w·fs)."""
        if not hasattr(self, "decoder"):
            raise TypeError("this autoencoder was built without a decoder")
        if z.ndim != 5 or z.shape[1] != self.config.latent_channels:
            raise ValueError(f"latents must be (B, {self.config.latent_channels}, t, h, w); got "
                             f"{tuple(z.shape)}")
        return self.decoder(z)

    def forward(self, x: Tensor, sample_posterior: bool = True,
                generator: torch.Generator | None = None):
        """Reconstruct x (B, 3, T, H, W) → (reconstruction like x, posterior)."""
        posterior = self.encode(x)
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        return self.decode(z), posterior


class PatchDiscriminator3d(nn.Module):
    """3-D patch discriminator (TATS / pix2pix style): (B, 3, T, H, W) → (B, 1, t, h, w) logits.

    Conv(4³, stride 2) + LeakyReLU, then ``layers - 1`` strided conv + per-frame GroupNorm +
    LeakyReLU (width doubling, capped at 8×), then a stride-1 conv to one logit per patch.
    """

    def __init__(self, in_channels: int, channels: int, layers: int) -> None:
        super().__init__()
        mods: list[nn.Module] = [PadConv3d(in_channels, channels, 4, (2, 2, 2)),
                                 nn.LeakyReLU(0.2)]
        ch = channels
        for i in range(1, layers):
            out = channels * min(2 ** i, 8)
            mods += [PadConv3d(ch, out, 4, (1, 2, 2)), FrameGroupNorm(1, out), nn.LeakyReLU(0.2)]
            ch = out
        mods.append(PadConv3d(ch, 1, 3))
        self.net = nn.Sequential(*mods)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
