"""Model configs: built-in names, YAML files and ``key=value`` overrides (the generic parsing
and :class:`ConfigError` live in :mod:`sned.config_parsing`).

A :class:`ModelConfig` describes a *supernet*: the full widths of every layer plus the elastic
choices (channel ratios, droppable components, resolutions and their cost caps). It is a plain,
validated value; unknown keys are errors that name the key and the file they came from.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .config_parsing import ConfigError, apply_overrides, read_yaml, typed_fields

#: Input channels of ``position_input: xyt``: the x, y and frame-index coordinate planes.
POSITION_CHANNELS = 3

COMPONENTS = ("resblock", "temporal_attn", "cross_attn", "spatial_attn")
"""Droppable components of a diffusion block, in forward order (the feed-forward follows them)."""

ATTENTIONS = COMPONENTS[1:]


@dataclass(frozen=True)
class LevelConfig:
    """One UNet resolution level.

    Attributes:
        mult: channel multiplier; the level's residual width is ``model_channels * mult``.
        blocks: diffusion blocks in the encoder at this level (the decoder has ``blocks + 1``).
        components: which components the level's blocks contain (subset of COMPONENTS, must
            include ``resblock``). Attention-free levels (e.g. high resolutions) list only
            ``resblock`` and/or ``temporal_attn``.
    """

    mult: int
    blocks: int
    components: tuple[str, ...] = COMPONENTS


@dataclass(frozen=True)
class ModelConfig:
    """A supernet: full widths and the search space around them.

    Attributes:
        name: config name (built-in name or YAML file stem).
        kind: ``"base"`` (text → video) or ``"ssr"`` (spatial super-resolution of a video).
        in_channels / out_channels: video channels (3 for RGB pixel space).
        model_channels: residual width of the first level.
        levels: the UNet levels, highest resolution first.
        mid_components: components of the two middle blocks: one list for both, or a list of
            two lists (LVDM's middle is ResBlock → attention → ResBlock: ``[[resblock,
            spatial_attn, temporal_attn], [resblock]]``).
        attention_order: the order in which a block runs its attentions after the ResBlock
            (a permutation of the attentions; LVDM runs spatial, then temporal).
        head_dim: attention head dimension (fixed; heads are the elastic unit).
        heads: attention heads at full width, per level (same length as ``levels``) or one int.
        ff_mult: feed-forward hidden = ``ff_mult * width``; 0 = blocks have no feed-forward.
        resblock_mult: ResBlock hidden = ``resblock_mult * width``.
        norm_group_size: channels per GroupNorm group (fixed; groups are the elastic unit).
        text_dim: width of the text encoder's token embeddings.
        text_len: max text tokens (tokenizer truncation; also the cost model's context length).
        time_embed_dim: width of the timestep (and noise-augmentation) embedding.
        frames: default frame count.
        resolutions: spatial sizes the supernet is trained/served at.
        max_cost: per-resolution cap ``{resolution: {"params"|"macs": value}}`` (§3.3).
        ratios: channel-ratio choices of every elastic layer.
        min_ratio: default floor for :meth:`SearchSpace.sample`.
        dropout: dropout in ResBlocks.
        conditional: text-conditioned (True) or unconditional (no text input, no null token,
            no cross-attention).
        pooled_text: also add the masked mean of the text tokens (null token included),
            projected to ``time_embed_dim``, to the timestep embedding (Imagen's pooled text
            embedding): every block is then conditioned on the caption through its ResBlock's
            scale/shift, not only through cross-attention. Conditional models only.
        text_pool: how ``pooled_text`` pools the tokens: ``mean`` (the masked mean) or
            ``attention`` (learned multi-head attention pooling, :mod:`sned.nn.text_pool`: it
            can weigh the words a mean blurs, e.g. motion directions).
        ssr_residual: SSR only — diffuse the residual ``x − up(lowres)`` instead of ``x``, and
            add the clean upsampled ``lowres`` back after sampling (residual super-resolution,
            as in SRDiff): the output follows its input by construction and the model only
            learns the detail. See :meth:`sned.diffusion.Objective.ssr_pair`.
        ssr_residual_scale: with ``ssr_residual``, the residual is divided by this before it is
            diffused (and multiplied back after sampling), so it has about unit variance like a
            video; the synthetic clips' residual has std ≈ 0.1 at 32 px.
        autoencoder: latent models only — the autoencoder config (built-in name or YAML) whose
            latents this UNet denoises; ``in_channels`` must be its latent channels, and
            ``frames`` / ``resolutions`` are then in latent units (pixel = latent × the
            autoencoder's factors).
        zero_init_residual: the last layer of every residual branch (a ResBlock's second conv,
            an attention's output projection, a feed-forward's output layer) starts at zero
            (as ADM and BigNAS do), so at initialisation every block is its skip path and
            every subnet computes the same function; the untrained outer slices of those
            layers then add nothing to a narrow subnet's residual stream. Only the
            initialisation changes (parameter counts and loading do not).
        norm_groups: 0 (default) = every GroupNorm has ``norm_group_size`` channels per group;
            N > 0 = every GroupNorm has N groups at full width (diffusers' ``norm_num_groups``,
            the DDPM/ADM convention). An elastic norm then keeps its full width's group size
            (full / N) and varies the number of groups, and the elastic ResBlock hidden width
            moves in steps of that group size.
        norm_eps: epsilon of every GroupNorm of the UNet (diffusers' ``norm_eps``).
        time_embedding: how a ResBlock takes the timestep embedding: ``scale_shift`` (default;
            ``norm2(h) * (1 + scale) + shift``, ADM / diffusers ``"scale_shift"``) or ``add``
            (``norm2(h + proj(emb))``, DDPM / diffusers ``"default"``).
        attention_norm: the pre-norm of every attention: ``layer`` (LayerNorm, default) or
            ``group`` (GroupNorm over channels, as diffusers' ``AttnDownBlock2D`` /
            ``UNetMidBlock2D`` attention).
        attention_bias: q, k, v projections with a bias (diffusers' UNet2DModel attention).
        frame_position: how temporal attention knows where a frame is in the clip: ``rotary``
            (default; relative offsets only) or ``rotary+absolute`` (also a fixed sinusoidal
            embedding of the frame index added to the attention's normed input, as
            AnimateDiff's motion modules do: a frame-constant signal such as the caption can
            then become a frame-dependent one; no parameters, no cost to speak of).
        position_input: ``none`` (default) or ``xyt``: three coordinate planes — x and y
            across the frame and the frame's index in the clip, each in [−1, 1]
            (:func:`sned.nn.coordinates.coordinate_planes`) — join the input of the first
            convolution (CoordConv). Without them the UNet knows position only from zero
            padding, and at the noise levels where sampling decides where the object is, it
            predicts the same translation-invariant layout for every caption (issue 31,
            ``bench_temporal.py --layout``). Normalised coordinates mean the same at every
            resolution.
    """

    name: str = "custom"
    kind: str = "base"
    in_channels: int = 3
    out_channels: int = 3
    model_channels: int = 64
    levels: tuple[LevelConfig, ...] = (LevelConfig(1, 1), LevelConfig(2, 1))
    mid_components: tuple[str, ...] | tuple[tuple[str, ...], ...] = COMPONENTS
    head_dim: int = 32
    heads: tuple[int, ...] = (2, 4)
    ff_mult: int = 4
    resblock_mult: int = 1
    norm_group_size: int = 16
    text_dim: int = 384
    text_len: int = 32
    time_embed_dim: int = 256
    frames: int = 8
    resolutions: tuple[int, ...] = (32,)
    max_cost: dict[int, dict[str, float]] = field(default_factory=dict)
    ratios: tuple[float, ...] = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4)
    min_ratio: float = 0.4
    dropout: float = 0.0
    attention_order: tuple[str, ...] = ATTENTIONS
    conditional: bool = True
    pooled_text: bool = False
    text_pool: str = "mean"
    ssr_residual: bool = False
    ssr_residual_scale: float = 1.0
    autoencoder: str | None = None
    zero_init_residual: bool = True
    norm_groups: int = 0
    norm_eps: float = 1e-5
    time_embedding: str = "scale_shift"
    attention_norm: str = "layer"
    attention_bias: bool = False
    frame_position: str = "rotary"
    position_input: str = "none"

    # ----------------------------------------------------------------------------- derived
    @property
    def residual_scale(self) -> float | None:
        """What an SSR model's diffused residual is divided by; None = it diffuses the video."""
        return float(self.ssr_residual_scale) if self.ssr_residual else None

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.levels) - 1)

    @property
    def conditioning_channels(self) -> int:
        """Extra input channels: the upsampled low-resolution video for SSR models, then the
        coordinate planes of ``position_input: xyt``."""
        return ((self.in_channels if self.kind == "ssr" else 0)
                + (POSITION_CHANNELS if self.position_input == "xyt" else 0))

    def group_size(self, full_width: int) -> int:
        """Channels per GroupNorm group of a norm whose full width is ``full_width``."""
        return full_width // self.norm_groups if self.norm_groups else self.norm_group_size

    def groups(self, full_width: int) -> int:
        """GroupNorm groups of a (fixed-width) norm of ``full_width`` channels."""
        return self.norm_groups or full_width // self.norm_group_size

    def level_width(self, level: int) -> int:
        return self.model_channels * self.levels[level].mult

    def mid_block_components(self, i: int) -> tuple[str, ...]:
        """Components of middle block ``i`` (0 or 1)."""
        mid = self.mid_components
        return mid[i] if mid and isinstance(mid[0], tuple) else mid

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["levels"] = [dataclasses.asdict(lv) for lv in self.levels]
        d["max_cost"] = {str(k): dict(v) for k, v in self.max_cost.items()}
        for key, default in _OPTIONAL_DEFAULTS.items():  # older configs stay byte-identical
            if getattr(self, key) == default:
                del d[key]
        return json.loads(json.dumps(d))

    def __post_init__(self) -> None:
        _validate(self)


# --------------------------------------------------------------------------------- validation
def _fail(key: str, value: Any, why: str, source: str | None = None) -> None:
    where = f" in {source}" if source else ""
    raise ConfigError(f"config key {key!r}{where}: {why} (got {value!r})")


def _validate(cfg: ModelConfig) -> None:
    if cfg.kind not in ("base", "ssr"):
        _fail("kind", cfg.kind, "must be 'base' or 'ssr' (or 'autoencoder' for an AE config)")
    for key in ("in_channels", "out_channels", "model_channels", "head_dim", "ff_mult",
                "resblock_mult", "norm_group_size", "text_dim", "text_len", "time_embed_dim",
                "frames"):
        v = getattr(cfg, key)
        low = 0 if key == "ff_mult" else 1
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            _fail(key, v, f"must be an integer >= {low}")
    if sorted(cfg.attention_order) != sorted(ATTENTIONS):
        _fail("attention_order", cfg.attention_order, f"must be a permutation of {ATTENTIONS}")
    if not isinstance(cfg.conditional, bool):
        _fail("conditional", cfg.conditional, "must be true or false")
    if cfg.time_embedding not in ("scale_shift", "add"):
        _fail("time_embedding", cfg.time_embedding, "must be 'scale_shift' or 'add'")
    if cfg.attention_norm not in ("layer", "group"):
        _fail("attention_norm", cfg.attention_norm, "must be 'layer' or 'group'")
    if not isinstance(cfg.norm_groups, int) or isinstance(cfg.norm_groups, bool) \
            or cfg.norm_groups < 0:
        _fail("norm_groups", cfg.norm_groups, "must be an integer >= 0 (0 = use norm_group_size)")
    if not (isinstance(cfg.norm_eps, (int, float)) and not isinstance(cfg.norm_eps, bool)
            and cfg.norm_eps > 0):
        _fail("norm_eps", cfg.norm_eps, "must be a number > 0")
    for key in ("pooled_text", "ssr_residual", "zero_init_residual", "attention_bias"):
        if not isinstance(getattr(cfg, key), bool):
            _fail(key, getattr(cfg, key), "must be true or false")
    if cfg.frame_position not in ("rotary", "rotary+absolute"):
        _fail("frame_position", cfg.frame_position, "must be 'rotary' or 'rotary+absolute'")
    if cfg.position_input not in ("none", "xyt"):
        _fail("position_input", cfg.position_input, "must be 'none' or 'xyt'")
    if cfg.text_pool not in ("mean", "attention"):
        _fail("text_pool", cfg.text_pool, "must be 'mean' or 'attention'")
    if cfg.text_pool != "mean" and not cfg.pooled_text:
        _fail("text_pool", cfg.text_pool, "needs pooled_text: true")
    if cfg.pooled_text and not cfg.conditional:
        _fail("pooled_text", cfg.pooled_text, "needs a conditional model (conditional: true)")
    if not (isinstance(cfg.ssr_residual_scale, (int, float))
            and not isinstance(cfg.ssr_residual_scale, bool) and cfg.ssr_residual_scale > 0):
        _fail("ssr_residual_scale", cfg.ssr_residual_scale, "must be a number > 0")
    if cfg.ssr_residual and cfg.kind != "ssr":
        _fail("ssr_residual", cfg.ssr_residual, f"is for SSR models; kind is {cfg.kind!r}")
    if cfg.autoencoder is not None and not isinstance(cfg.autoencoder, str):
        _fail("autoencoder", cfg.autoencoder, "must be an autoencoder config name or path")
    if not cfg.levels:
        _fail("levels", cfg.levels, "needs at least one level")
    if len(cfg.heads) != len(cfg.levels):
        _fail("heads", cfg.heads, f"needs one entry per level ({len(cfg.levels)})")
    for i, lv in enumerate(cfg.levels):
        if lv.mult < 1 or lv.blocks < 1:
            _fail(f"levels[{i}]", lv, "mult and blocks must be >= 1")
        _check_components(f"levels[{i}].components", lv.components)
        w = cfg.level_width(i)
        if w % cfg.norm_group_size:
            _fail(f"levels[{i}].mult", lv.mult,
                  f"width {w} is not a multiple of norm_group_size {cfg.norm_group_size}")
        if cfg.norm_groups and w % cfg.norm_groups:
            _fail(f"levels[{i}].mult", lv.mult,
                  f"width {w} is not a multiple of norm_groups {cfg.norm_groups}")
    mid = cfg.mid_components
    if mid and isinstance(mid[0], tuple) and len(mid) != 2:
        _fail("mid_components", mid, "needs one list for both middle blocks or exactly two lists")
    for i in range(2):
        _check_components("mid_components", cfg.mid_block_components(i))
    if not cfg.conditional:
        comps = [c for lv in cfg.levels for c in lv.components] + [
            c for i in range(2) for c in cfg.mid_block_components(i)]
        if "cross_attn" in comps:
            _fail("conditional", cfg.conditional, "an unconditional model cannot have "
                                                  "'cross_attn' components")
    if any(h < 1 for h in cfg.heads):
        _fail("heads", cfg.heads, "every level needs >= 1 head")
    if not cfg.ratios or any(not (0.0 < r <= 1.0) for r in cfg.ratios) or 1.0 not in cfg.ratios:
        _fail("ratios", cfg.ratios, "must be values in (0, 1] and include 1.0")
    if cfg.min_ratio not in cfg.ratios:
        _fail("min_ratio", cfg.min_ratio, f"must be one of ratios {cfg.ratios}")
    check_resolutions(cfg.resolutions, cfg.downsample_factor, "the downsampling factor")
    for r, cap in cfg.max_cost.items():
        if r not in cfg.resolutions:
            _fail("max_cost", r, f"resolution not in resolutions {cfg.resolutions}")
        for k, v in cap.items():
            if k not in ("params", "macs") or not (v > 0):
                _fail(f"max_cost.{r}", cap, "caps are {'params': N} and/or {'macs': N}, N > 0")


def check_resolutions(resolutions: tuple[int, ...], factor: int, what: str) -> None:
    """At least one resolution, each a positive multiple of ``factor`` (``what`` names it)."""
    if not resolutions:
        _fail("resolutions", resolutions, "needs at least one resolution")
    for r in resolutions:
        if not isinstance(r, int) or isinstance(r, bool) or r < 1 or r % factor:
            _fail("resolutions", r, f"must be a positive multiple of {what} {factor}")


def _check_components(key: str, comps: tuple[str, ...]) -> None:
    if isinstance(comps, str) or not all(isinstance(c, str) for c in comps):
        _fail(key, comps, "must be a list of component names")
    bad = [c for c in comps if c not in COMPONENTS]
    if bad:
        _fail(key, bad[0], f"unknown component; choose from {COMPONENTS}")
    if "resblock" not in comps:
        _fail(key, comps, "every block needs a 'resblock'")


# --------------------------------------------------------------------------------- loading
RUN_DEFAULTS_KEY = "diffusion"
"""A model YAML may carry ``diffusion:`` defaults for ``sned train`` runs (LVDM's schedule for
the latent configs); the run's own diffusion section overrides them."""

_FIELDS = {f.name for f in dataclasses.fields(ModelConfig)}
_OPTIONAL_DEFAULTS = {"attention_order": ATTENTIONS, "conditional": True, "autoencoder": None,
                      "zero_init_residual": True, "norm_groups": 0, "norm_eps": 1e-5,
                      "time_embedding": "scale_shift", "attention_norm": "layer",
                      "attention_bias": False}
"""Fields added after the first release: left out of ``to_dict`` at their defaults."""
_LEVEL_FIELDS = {f.name for f in dataclasses.fields(LevelConfig)}


def builtin_config_names() -> list[str]:
    files = resources.files("sned") / "configs"
    return sorted(p.name[:-5] for p in files.iterdir() if p.name.endswith(".yaml"))


def config_from_dict(raw: dict[str, Any], source: str | None = None) -> ModelConfig:
    """Build a validated config from a plain dict (e.g. parsed YAML or ``config.json``)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config{f' in {source}' if source else ''} must be a mapping, "
                          f"got {type(raw).__name__}")
    if raw.get("kind") == "autoencoder":
        raise ConfigError(f"{source or 'config'} is an autoencoder config (kind: autoencoder): "
                          f"train it with `sned train`, load it with "
                          f"sned.models.autoencoder.load_autoencoder_config")
    raw = {k: v for k, v in raw.items() if k != RUN_DEFAULTS_KEY}
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        _fail(unknown[0], raw[unknown[0]], f"unknown key; valid keys are {sorted(_FIELDS)}", source)
    d = dict(raw)
    try:
        if "levels" in d:
            levels = []
            for i, lv in enumerate(d["levels"]):
                if not isinstance(lv, dict):
                    _fail(f"levels[{i}]", lv, "each level is a mapping", source)
                bad = sorted(set(lv) - _LEVEL_FIELDS)
                if bad:
                    _fail(f"levels[{i}].{bad[0]}", lv[bad[0]],
                          f"unknown key; valid keys are {sorted(_LEVEL_FIELDS)}", source)
                lv = dict(lv)
                if "components" in lv:
                    lv["components"] = tuple(lv["components"])
                levels.append(LevelConfig(**typed_fields(LevelConfig, lv, f"levels[{i}]")))
            d["levels"] = tuple(levels)
        for key in ("mid_components", "ratios", "resolutions", "attention_order"):
            if key in d:
                d[key] = tuple(d[key]) if isinstance(d[key], (list, tuple)) else (d[key],)
        mid = d.get("mid_components")
        if mid and all(isinstance(m, (list, tuple)) for m in mid):
            d["mid_components"] = tuple(tuple(m) for m in mid)
        if "heads" in d:
            h = d["heads"]
            n = len(d.get("levels", ModelConfig.levels))
            d["heads"] = tuple(h) if isinstance(h, (list, tuple)) else (int(h),) * n
        if "max_cost" in d:
            d["max_cost"] = {int(k): dict(v) for k, v in (d["max_cost"] or {}).items()}
        return ModelConfig(**typed_fields(ModelConfig, d))
    except ConfigError as e:
        if source and " in " not in str(e).split(":")[0]:
            raise ConfigError(f"{source}: {e}") from None
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"invalid config{f' in {source}' if source else ''}: {e}") from None


def load_config_dict(name_or_path: str | Path) -> tuple[dict[str, Any], str]:
    """Raw dict and its source for a built-in name or a YAML/JSON file."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml", ".json") or p.exists():
        if not p.exists():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        raw = read_yaml(p) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {str(p)!r} must hold a mapping of config keys "
                              f"(got {type(raw).__name__})")
        raw.setdefault("name", p.stem)
        return raw, str(p)
    name = str(name_or_path)
    if name not in builtin_config_names():
        raise ConfigError(f"unknown config {name!r}; built-in configs are "
                          f"{builtin_config_names()} (or pass a path to a .yaml file)")
    text = (resources.files("sned") / "configs" / f"{name}.yaml").read_text()
    raw = yaml.safe_load(text)
    raw.setdefault("name", name)
    return raw, f"built-in config {name!r}"


def load_config(config: str | Path | ModelConfig | dict, overrides: list[str] | None = None
                ) -> ModelConfig:
    """Resolve a config given as a built-in name, a YAML path, a dict or a ModelConfig."""
    if isinstance(config, ModelConfig):
        if not overrides:
            return config
        raw, source = config.to_dict(), f"config {config.name!r}"
    elif isinstance(config, dict):
        raw, source = config, "config dict"
    else:
        raw, source = load_config_dict(config)
    if overrides:
        raw = apply_overrides(raw, overrides)
    return config_from_dict(raw, source)
