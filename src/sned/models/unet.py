"""Pixel-space video UNet ("Imagen-like modified 2D UNet", SNED §4.2): base and SSR.

Spatial layers are per-frame 2-D (1×3×3 convs); time is mixed by temporal self-attention.
Encoder levels of diffusion blocks with strided-conv downsampling, two middle blocks, and a
decoder that concatenates ADM-style skips. The residual-stream widths are fixed; the elastic
widths live inside the blocks (ResBlock hidden, attention heads, feed-forward hidden), so the
skip concatenation never needs index lists.

The same class is the supernet (``supernet=True``: elastic layers, ``forward(..., arch=)``) and an
extracted model (``supernet=False``: plain layers of exactly the active sizes of ``arch``, no
``arch=`` argument).

It is a diffusers model (``ModelMixin`` + ``ConfigMixin``): ``VideoUNet.from_pretrained(folder)``
and ``model.save_pretrained(folder)`` are diffusers' own; the registered config is
``model_config`` (the :class:`~sned.config.ModelConfig` as a dict), ``arch`` (the extracted
model's arch, or None) and ``supernet``, plus ``sned`` — free metadata (diffusion settings, the
model card) that :func:`sned.extract.save_pretrained` records and loaders read.
``model.config`` is the :class:`~sned.config.ModelConfig` (its fields are attributes, as diffusers'
config is); the raw diffusers dict is ``model.diffusers_config``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config

from ..arch import Arch, BlockLayout, full_layout, resolve, unet_blocks
from ..config import ModelConfig, config_from_dict
from ..nn import checkpoint
from ..nn.blocks import DiffusionBlock, zero_init_residual_outputs
from ..nn.coordinates import coordinate_planes
from ..nn.sinusoid import sinusoidal_embedding
from ..nn.text_pool import AttentionPool, masked_mean, text_pool_head_dim


@dataclass(frozen=True)
class UNetStage:
    """One resolution level of the UNet as a unit (DiffNAS's "block").

    Attributes:
        name: ``down.{level}``, ``mid`` or ``up.{level}``.
        kind: ``down`` | ``mid`` | ``up``.
        level: UNet level.
        blocks: indices of its diffusion blocks (into :func:`sned.arch.unet_blocks`).
        resample: whether it ends with the level's downsampler (down) / upsampler (up).
    """

    name: str
    kind: str
    level: int
    blocks: tuple[int, ...]
    resample: bool


def unet_stages(cfg: ModelConfig) -> list[UNetStage]:
    """The stages of ``cfg``'s UNet in forward order: each encoder level, the middle, each
    decoder level. Together they hold every diffusion block exactly once, in order."""
    n = len(cfg.levels)
    stages, i = [], 0
    for lvl, lv in enumerate(cfg.levels):
        stages.append(UNetStage(f"down.{lvl}", "down", lvl, tuple(range(i, i + lv.blocks)),
                            lvl < n - 1))
        i += lv.blocks
    stages.append(UNetStage("mid", "mid", n - 1, (i, i + 1), False))
    i += 2
    for lvl in reversed(range(n)):
        k = cfg.levels[lvl].blocks + 1
        stages.append(UNetStage(f"up.{lvl}", "up", lvl, tuple(range(i, i + k)), lvl > 0))
        i += k
    return stages


@dataclass
class StageIO:
    """What one stage received and produced in a forward (hidden states are (B*T, C, H, W)).

    ``skips_in``: skips an up stage consumed (in push order); ``skips_out``: skips a down stage
    produced (its last entry is ``h_out``)."""

    h_in: Tensor
    skips_in: list[Tensor]
    h_out: Tensor
    skips_out: list[Tensor]

    @property
    def outputs(self) -> list[Tensor]:
        """The stage's interface outputs: the skips it produced, else its hidden output."""
        return self.skips_out or [self.h_out]


@dataclass
class Trace:
    """Filled by ``VideoUNet.forward(..., trace=Trace())``: the conditioning every block sees —
    ``emb`` (B, E), ``context`` (B, 1+L, D), ``mask`` (B, 1+L), ``frames`` — and one
    :class:`StageIO` per stage."""

    emb: Tensor | None = None
    context: Tensor | None = None
    mask: Tensor | None = None
    frames: int = 0
    stages: list[StageIO] = field(default_factory=list)


def _slot_ordered(arch: Arch, specs) -> Arch:
    """``arch`` with each block's ratios in its spec's slot order (the order a search space
    writes them; a JSON config sorts keys)."""
    if len(arch.blocks) != len(specs):
        return arch  # a mismatching arch is named by resolve()
    blocks = []
    for b, spec in zip(arch.blocks, specs):
        order = {slot: i for i, slot in enumerate(spec.slots)}
        ratios = tuple(sorted(b.ratios, key=lambda kv: order.get(kv[0], len(order))))
        blocks.append(dataclasses.replace(b, ratios=ratios))
    return dataclasses.replace(arch, blocks=tuple(blocks))


class VideoUNet(ModelMixin, ConfigMixin):
    """Text-conditioned video denoiser (``kind="base"``) or super-resolver (``kind="ssr"``).

    Args:
        model_config: the supernet config (a :class:`~sned.config.ModelConfig` or its dict).
        arch: the Arch an extracted model is built at (an :class:`~sned.arch.Arch` or its dict;
            None with ``supernet=False`` = the full arch).
        supernet: True builds the elastic supernet (``forward(..., arch=)``); False a static
            model of exactly ``arch``'s active sizes. Default: True unless ``layouts`` or
            ``arch`` is given.
        layouts: for an extracted model, the per-block active layouts (from
            :func:`sned.arch.resolve`; computed from ``arch`` when left out). Not recorded in
            the config (``arch`` determines them).
        sned: free JSON metadata recorded in ``config.json`` (diffusion settings, card, data).
    """

    config_name = "config.json"
    ignore_for_config = ["layouts"]
    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(self, model_config: ModelConfig | dict | None = None,
                 arch: Arch | dict | None = None, supernet: bool | None = None,
                 sned: dict | None = None, *, layouts: list[BlockLayout] | None = None) -> None:
        super().__init__()
        if model_config is None:
            raise TypeError("VideoUNet needs a model_config (a ModelConfig or its dict)")
        config = (model_config if isinstance(model_config, ModelConfig)
                  else config_from_dict(dict(model_config), "VideoUNet config"))
        if isinstance(arch, list):  # the 0.1 call VideoUNet(cfg, layouts, arch)
            raise TypeError("VideoUNet(model_config, arch, supernet, sned, *, layouts): pass "
                            "layouts= by keyword (VideoUNet(cfg, arch, supernet=False, "
                            "layouts=layouts))")
        if arch is not None:
            arch = _slot_ordered(arch if isinstance(arch, Arch) else Arch.from_dict(arch),
                                 unet_blocks(config))
        if supernet is None:
            supernet = layouts is None and arch is None
        if supernet and layouts is not None:
            raise ValueError("a supernet takes no layouts (pass supernet=False)")
        if not supernet and layouts is None:
            layouts = ([full_layout(s) for s in unet_blocks(config)] if arch is None
                       else resolve(config, arch))
        self.register_to_config(model_config=config.to_dict(),
                                arch=None if arch is None else arch.to_dict(),
                                supernet=bool(supernet), sned=dict(sned or {}))
        self._model_config = config
        self.specs = unet_blocks(config)
        self.stages = unet_stages(config)
        self.is_supernet = bool(supernet)
        self.arch = arch
        self.gradient_checkpointing = False  # True, False or the checkpointed block indices
        # how: "block" (a block at once) or "layer" (each of its layers); "full" recompute or
        # "selective" (keep conv/matmul/attention outputs) — one value, or block index → value
        self.checkpoint_unit: str | dict[int, str] = "layer"
        self.checkpoint_policy: str | dict[int, str] = "full"
        c0, e = config.model_channels, config.time_embed_dim
        self.time_embed = nn.Sequential(nn.Linear(c0, e), nn.SiLU(), nn.Linear(e, e))
        if config.kind == "ssr":
            self.aug_embed = nn.Sequential(nn.Linear(c0, e), nn.SiLU(), nn.Linear(e, e))
        # a learned "null" text token is always attendable: classifier-free guidance drops the
        # caption by masking every real token, and no attention row is ever fully masked.
        # (unconditional configs have no text input and no null token).
        if config.conditional:
            self.null_text = nn.Parameter(torch.zeros(1, 1, config.text_dim))
        if config.pooled_text:  # Imagen: pooled caption embedding joins the timestep's
            if config.text_pool == "attention":
                self.text_attention_pool = AttentionPool(config.text_dim,
                                                         text_pool_head_dim(config.text_dim))
            self.text_pool = nn.Linear(config.text_dim, e)
        self.conv_in = nn.Conv2d(config.in_channels + config.conditioning_channels, c0, 3,
                                 padding=1)
        blocks = [DiffusionBlock(s, e, config.text_dim, config.head_dim, config.norm_group_size,
                                 config.dropout, None if layouts is None else layouts[i],
                                 cfg=config)
                  for i, s in enumerate(self.specs)]
        self.blocks = nn.ModuleList(blocks)
        n = len(config.levels)
        self.downsamplers = nn.ModuleList(
            nn.Conv2d(config.level_width(i), config.level_width(i), 3, stride=2, padding=1)
            for i in range(n - 1))
        self.upsamplers = nn.ModuleList(
            nn.Conv2d(config.level_width(i), config.level_width(i), 3, padding=1)
            for i in range(1, n))
        self.norm_out = nn.GroupNorm(config.groups(c0), c0, eps=config.norm_eps)
        self.conv_out = nn.Conv2d(c0, config.out_channels, 3, padding=1)
        self._layouts = layouts
        if config.zero_init_residual:
            zero_init_residual_outputs(self)

    @property
    def config(self) -> ModelConfig:  # diffusers' config dict: `diffusers_config`
        return self._model_config

    @property
    def diffusers_config(self):
        """The registered diffusers config (a FrozenDict: model_config, arch, supernet, sned)."""
        return self._internal_dict

    # ----------------------------------------------------------------------------- forward
    def forward(self, sample: Tensor, timestep: Tensor, encoder_hidden_states: Tensor | None,
                encoder_attention_mask: Tensor | None = None, lowres: Tensor | None = None,
                noise_aug_level: Tensor | None = None, arch: Arch | None = None,
                trace: "Trace | None" = None) -> Tensor:
        """Predict the diffusion target (eps or v) of a noisy video.

        Args:
            sample: (B, C, T, H, W) noisy video; H, W divisible by ``downsample_factor``.
            timestep: (B,) or scalar diffusion timestep.
            encoder_hidden_states: (B, L, text_dim) text token embeddings; unconditional
                models ignore it (None is fine).
            encoder_attention_mask: (B, L) bool/0-1, True = real token (None = all real).
            lowres: SSR only — (B, C, T, H, W) condition: the low-resolution video already
                upsampled to the sample's (H, W) and noise-augmented, as built by
                :meth:`sned.diffusion.Objective.augment_lowres` (upsample, then noise — Imagen);
                concatenated on channels.
            noise_aug_level: SSR only — (B,) noise-augmentation level of ``lowres`` in [0, 1].
            arch: supernet only — the subnet to run (None = the full supernet).
            trace: an empty :class:`Trace` to fill with every stage's inputs and outputs (and
                the embeddings the blocks receive); used by DiffNAS distillation.
        Returns:
            (B, out_channels, T, H, W).
        """
        layouts = self._layouts_for(arch)
        b, c, t, hgt, wid = self._check_inputs(sample, encoder_hidden_states, lowres,
                                                 noise_aug_level)
        x = sample.transpose(1, 2).reshape(b * t, c, hgt, wid)
        if self.config.kind == "ssr":
            low = lowres.transpose(1, 2).reshape(b * t, c, hgt, wid)
            x = torch.cat([x, low.to(x.dtype)], dim=1)
        if self.config.position_input == "xyt":
            x = torch.cat([x, coordinate_planes(b, t, hgt, wid, x)], dim=1)
        emb = self._embed(timestep, noise_aug_level, b, sample.device)
        context, mask = (self._context(encoder_hidden_states, encoder_attention_mask)
                         if self.config.conditional else (None, None))
        if self.config.pooled_text:
            emb = emb + self._pooled_text(context, mask).to(emb.dtype)

        h = self.conv_in(x)
        skips = [h]
        if trace is not None:
            trace.emb, trace.context, trace.mask, trace.frames = emb, context, mask, t
        for stage in self.stages:
            h_in, n_in = h, len(skips)
            consumed = skips[n_in - len(stage.blocks):] if stage.kind == "up" else []
            h = self.run_stage(stage, h, skips, emb, context, mask, t, layouts)
            if trace is not None:
                produced = skips[n_in:] if stage.kind == "down" else []
                trace.stages.append(StageIO(h_in, consumed, h, produced))
        assert not skips
        out = self.conv_out(F.silu(self.norm_out(h)))
        return out.reshape(b, t, -1, hgt, wid).transpose(1, 2)

    def run_stage(self, stage: UNetStage, h: Tensor, skips: list[Tensor], emb: Tensor,
                  context: Tensor, mask: Tensor | None, frames: int,
                  layouts: list[BlockLayout] | None = None) -> Tensor:
        """Run one resolution-level stage on hidden states ``h`` (B*T, C, H, W).

        A ``down`` stage appends each block output and its downsampled output to ``skips``; an
        ``up`` stage pops one skip per block (ADM-style concatenation) and ends with its
        upsampler. Returns the stage's output hidden states.
        """
        for i in stage.blocks:
            x = torch.cat([h, skips.pop()], dim=1) if stage.kind == "up" else h
            h = self._run_block(i, x, emb, context, mask, frames, layouts)
            if stage.kind == "down":
                skips.append(h)
        if stage.resample and stage.kind == "down":
            h = self.downsamplers[stage.level](h)
            skips.append(h)
        elif stage.resample:
            h = F.interpolate(h, scale_factor=2.0, mode="nearest")
            h = self.upsamplers[stage.level - 1](h)
        return h

    def stage_modules(self, stage: UNetStage) -> list[nn.Module]:
        """The modules :meth:`run_stage` runs for ``stage``: its diffusion blocks, then its
        resampler when it has one."""
        mods = [self.blocks[i] for i in stage.blocks]
        if stage.resample:
            mods.append(self.downsamplers[stage.level] if stage.kind == "down"
                        else self.upsamplers[stage.level - 1])
        return mods

    def _run_block(self, i: int, h: Tensor, emb: Tensor, context: Tensor, mask: Tensor | None,
                   frames: int, layouts: list[BlockLayout] | None) -> Tensor:
        """Block ``i``, checkpointed as ``gradient_checkpointing`` says: the whole block as one
        unit (``checkpoint_unit="block"``) or each of its layers (``"layer"``), recomputed in
        full or selectively (``checkpoint_policy``; :mod:`sned.nn.checkpoint`); both either one
        value or a dict by block index (the memory planner's per-level choice)."""
        layout = None if layouts is None else layouts[i]
        block = self.blocks[i]
        ckpt = self.gradient_checkpointing
        on = (ckpt is True or bool(ckpt and i in ckpt)) and self.training \
            and torch.is_grad_enabled()
        unit, policy = (v if isinstance(v, str) else v[i] if on else None
                        for v in (self.checkpoint_unit, self.checkpoint_policy))
        if on and unit not in ("block", "layer"):
            raise ValueError(f"checkpoint_unit {unit!r}: use block or layer")
        block.checkpoint_layers = policy if on and unit == "layer" else None
        if on and unit == "block":
            return checkpoint.run(block, h, emb, context, mask, frames, layout, policy=policy)
        return block(h, emb, context, mask, frames, layout)

    def _layouts_for(self, arch: Arch | None) -> list[BlockLayout] | None:
        if not self.is_supernet:
            if arch is not None:
                raise TypeError("this is an extracted model; it runs its own arch and takes no "
                                "`arch=` argument")
            return None
        if arch is None:
            return None
        return resolve(self.config, arch, self.specs)

    def _embed(self, timestep: Tensor, aug: Tensor | None, b: int, device) -> Tensor:
        t = torch.as_tensor(timestep, device=device)
        t = t.expand(b) if t.ndim == 0 else t
        dtype = self.time_embed[0].weight.dtype
        emb = self.time_embed(sinusoidal_embedding(t, self.config.model_channels).to(dtype))
        if self.config.kind == "ssr":
            a = torch.as_tensor(aug, device=device)
            a = a.expand(b) if a.ndim == 0 else a
            # the level in [0, 1] is embedded like a timestep in [0, 1000)
            emb = emb + self.aug_embed(sinusoidal_embedding(a * 1000.0,
                                                          self.config.model_channels).to(dtype))
        return emb

    def _pooled_text(self, context: Tensor, mask: Tensor) -> Tensor:
        """(B, 1+L, D) tokens, (B, 1+L) mask → (B, E): the projected mean (``text_pool:
        mean``) or attention pool (``attention``) of the attendable tokens (a dropped caption
        pools to the null token alone)."""
        if self.config.text_pool == "attention":
            pool = self.text_attention_pool
            pooled = pool(context.to(pool.q.weight.dtype), mask)
        else:
            pooled = masked_mean(context, mask)
        return self.text_pool(pooled.to(self.text_pool.weight.dtype))

    def _context(self, text: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """Prepend the null token: (B, L, D) → (B, 1+L, D) and mask (B, 1+L) bool."""
        b, length, _ = text.shape
        null = self.null_text.to(text.dtype).expand(b, 1, -1)
        context = torch.cat([null, text], dim=1)
        real = (torch.ones(b, length, dtype=torch.bool, device=text.device) if mask is None
                else mask.to(device=text.device).bool())
        return context, torch.cat([real.new_ones(b, 1), real], dim=1)

    def _check_inputs(self, sample: Tensor, text: Tensor, lowres: Tensor | None,
                      noise_aug: Tensor | None) -> tuple[int, int, int, int, int]:
        cfg = self.config
        if sample.ndim != 5:
            raise ValueError(f"sample must be (B, C, T, H, W); got shape {tuple(sample.shape)}")
        b, c, t, h, w = sample.shape
        if c != cfg.in_channels:
            raise ValueError(f"sample has {c} channels; config {cfg.name!r} expects "
                             f"{cfg.in_channels}")
        if t < 1:
            raise ValueError(f"frames must be >= 1 (got {t})")
        f = cfg.downsample_factor
        if h % f or w % f or h < f or w < f:
            raise ValueError(f"resolution {h}x{w} is not divisible by the UNet's downsampling "
                             f"factor {f} (config {cfg.name!r})")
        if cfg.conditional and (text is None or text.ndim != 3 or text.shape[0] != b
                                or text.shape[2] != cfg.text_dim):
            raise ValueError(f"encoder_hidden_states must be (B={b}, L, {cfg.text_dim}); got "
                             f"{None if text is None else tuple(text.shape)}")
        if cfg.kind == "ssr":
            if lowres is None:
                raise ValueError("SSR models need `lowres` (B, C, T, h, w) and `noise_aug_level`")
            if noise_aug is None:
                raise ValueError("SSR models need `noise_aug_level` (B,) in [0, 1]")
            if lowres.ndim != 5 or lowres.shape != sample.shape:
                raise ValueError(f"lowres must be the upsampled, noise-augmented condition "
                                 f"(B={b}, C={c}, T={t}, H={h}, W={w}) — see "
                                 f"Objective.augment_lowres; got {tuple(lowres.shape)}")
        elif lowres is not None:
            raise ValueError(f"`lowres` is only for SSR models; config {cfg.name!r} is a base "
                             f"model")
        return b, c, t, h, w
