"""diffusers ``UNet2DModel`` → sned :class:`~sned.models.unet.VideoUNet` (static, one frame).

The DDPM / ADM UNet of diffusers is one of sned's model family once four block options are
set (:class:`~sned.config.ModelConfig`): ``norm_groups`` (a fixed number of GroupNorm groups),
``time_embedding`` (``add`` = diffusers' ``"default"``, ``scale_shift``), ``attention_norm:
group`` and ``attention_bias``. Block by block:

==============================  =============================================================
diffusers                       sned
==============================  =============================================================
``time_proj`` + ``time_embedding``  ``sinusoidal_embedding`` (cos, sin) + ``time_embed.{0,2}``
``DownBlock2D`` / ``UpBlock2D``     a level with components ``[resblock]``
``AttnDownBlock2D`` / ``AttnUp…``   a level with ``[resblock, spatial_attn]`` (no feed-forward)
``ResnetBlock2D``                   ``blocks.i.resblock`` (+ ``blocks.i.skip`` = conv_shortcut)
``Attention`` (group norm, bias)    ``blocks.i.spatial_attn``
``Downsample2D`` (conv, pad 1)      ``downsamplers.l``
``Upsample2D`` (nearest + conv)     ``upsamplers.l-1``
``UNetMidBlock2D``                  middle blocks ``[[resblock, spatial_attn], [resblock]]``
``conv_norm_out`` / ``conv_out``    ``norm_out`` / ``conv_out``
==============================  =============================================================

Everything else — Fourier or learned time embeddings, class embeddings, skip / resnet
up/downsamplers, other activations, output scale factors, a frequency shift, per-level
attention head dims, a mid block whose attention has no norm — is refused before anything is
written, by :class:`UnmappableError` naming the block and the attribute.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from ..arch import unet_blocks
from ..config import COMPONENTS, ConfigError, LevelConfig, ModelConfig
from ..models.unet import VideoUNet
from ..space import SearchSpace

ATTN_BLOCKS = {"AttnDownBlock2D": "down", "AttnUpBlock2D": "up"}
PLAIN_BLOCKS = {"DownBlock2D": "down", "UpBlock2D": "up"}


class UnmappableError(ConfigError):
    """A diffusers model (or one of its blocks) has no exact sned counterpart; the message
    names the block and the attribute."""


def _refuse(block: str, attr: str, value, why: str) -> None:
    raise UnmappableError(f"{block}: {attr}={value!r} {why}")


def _expect(conf: Mapping, key: str, allowed, default, block: str = "UNet2DModel") -> None:
    value = conf.get(key, default)
    if value not in allowed:
        _refuse(block, key, value, f"has no sned counterpart (supported: "
                                   f"{', '.join(repr(a) for a in allowed)})")


def config_from_unet2d(conf: Mapping, name: str = "imported") -> ModelConfig:
    """The sned config of a diffusers ``UNet2DModel`` config (its ``config.json`` dict);
    :class:`UnmappableError` for anything without an exact counterpart."""
    cls = conf.get("_class_name", "UNet2DModel")
    if cls != "UNet2DModel":
        raise UnmappableError(f"{cls}: only diffusers UNet2DModel can be imported (got "
                              f"_class_name={cls!r}); see docs/serving.md for "
                              f"UNet2DConditionModel")
    _expect(conf, "time_embedding_type", ("positional",), "positional")
    _expect(conf, "flip_sin_to_cos", (True,), True)
    _expect(conf, "freq_shift", (0,), 0)
    _expect(conf, "center_input_sample", (False,), False)
    _expect(conf, "act_fn", ("silu", "swish"), "silu")
    _expect(conf, "class_embed_type", (None,), None)
    _expect(conf, "num_class_embeds", (None,), None)
    _expect(conf, "downsample_type", ("conv",), "conv")
    _expect(conf, "upsample_type", ("conv",), "conv")
    _expect(conf, "downsample_padding", (1,), 1)
    _expect(conf, "mid_block_scale_factor", (1, 1.0), 1)
    _expect(conf, "mid_block_type", ("UNetMidBlock2D",), "UNetMidBlock2D")
    _expect(conf, "resnet_time_scale_shift", ("default", "scale_shift"), "default")
    boc = list(conf.get("block_out_channels", (224, 448, 672, 896)))
    down = list(conf.get("down_block_types", ("DownBlock2D",) + ("AttnDownBlock2D",) * 3))
    up = list(conf.get("up_block_types", ("AttnUpBlock2D",) * 3 + ("UpBlock2D",)))
    if len(down) != len(boc) or len(up) != len(boc):
        _refuse("UNet2DModel", "down_block_types", down, "needs one type per block_out_channels")
    c0 = boc[0]
    groups = conf.get("norm_num_groups", 32)
    if groups is None:
        _refuse("UNet2DModel", "norm_num_groups", None, "must be set (sned keeps a fixed "
                                                        "number of GroupNorm groups)")
    shift = conf.get("resnet_time_scale_shift", "default")
    attn_groups = conf.get("attn_norm_num_groups")
    add_attention = conf.get("add_attention", True)
    if add_attention:
        mid_groups = attn_groups if attn_groups is not None else (
            groups if shift == "default" else None)
        if mid_groups != groups:
            _refuse("mid_block.attentions.0", "attn_norm_num_groups", attn_groups,
                    f"gives the mid attention {'no norm' if mid_groups is None else mid_groups} "
                    f"groups; sned's attention norms have norm_num_groups={groups}")
    head_dim = conf.get("attention_head_dim", 8)
    has_attn = [t in ATTN_BLOCKS for t in down]
    if head_dim is None and (any(has_attn) or add_attention):
        _refuse("UNet2DModel", "attention_head_dim", None, "gives every level its own head "
                                                           "dim (its width); sned has one head_dim")
    head_dim = head_dim or 1
    levels, heads = [], []
    for i, (d, ch) in enumerate(zip(down, boc)):
        if (ATTN_BLOCKS | PLAIN_BLOCKS).get(d) != "down":
            _refuse(f"down_blocks.{i}", "type", d, "has no sned counterpart (supported: "
                                                   "DownBlock2D, AttnDownBlock2D)")
        u = up[len(boc) - 1 - i]
        want = "AttnUpBlock2D" if d in ATTN_BLOCKS else "UpBlock2D"
        if u != want:
            _refuse(f"up_blocks.{len(boc) - 1 - i}", "type", u,
                    f"must mirror down_blocks.{i} ({d} → {want}): a sned level has one set of "
                    f"components for its encoder and decoder blocks")
        if ch % c0:
            _refuse(f"down_blocks.{i}", "block_out_channels", ch,
                    f"is not a multiple of block_out_channels[0]={c0} (sned levels are "
                    f"model_channels × an integer mult)")
        if ch % groups:
            _refuse(f"down_blocks.{i}", "norm_num_groups", groups,
                    f"does not divide its {ch} channels")
        levels.append(LevelConfig(ch // c0, int(conf.get("layers_per_block", 2)),
                                  ("resblock", "spatial_attn") if d in ATTN_BLOCKS
                                  else ("resblock",)))
        heads.append(max(1, ch // head_dim))
    if conf.get("time_embedding_dim") not in (None, c0 * 4):
        pass  # any width maps: time_embed_dim below
    sample = conf.get("sample_size") or 32
    if isinstance(sample, (list, tuple)):
        if len(set(sample)) != 1:
            _refuse("UNet2DModel", "sample_size", sample, "is not square (sned runs H = W)")
        sample = sample[0]
    factor = 2 ** (len(boc) - 1)
    res = max(factor, (int(sample) // factor) * factor)
    mid = (("resblock", "spatial_attn"), ("resblock",)) if add_attention else \
        (("resblock",), ("resblock",))
    try:
        return ModelConfig(
            name=name, kind="base", in_channels=int(conf.get("in_channels", 3)),
            out_channels=int(conf.get("out_channels", 3)), model_channels=c0,
            levels=tuple(levels), mid_components=mid, head_dim=int(head_dim),
            heads=tuple(heads), ff_mult=0, resblock_mult=1, norm_group_size=c0 // groups,
            time_embed_dim=int(conf.get("time_embedding_dim") or c0 * 4), frames=1,
            resolutions=(res,), dropout=float(conf.get("dropout", 0.0)), conditional=False,
            zero_init_residual=False, norm_groups=int(groups),
            norm_eps=float(conf.get("norm_eps", 1e-5)),
            time_embedding="add" if shift == "default" else "scale_shift",
            attention_norm="group", attention_bias=True)
    except ConfigError as e:
        raise UnmappableError(f"UNet2DModel: {e}") from None


def _resnet(dst: str, src: str, shift: str) -> list[tuple[str, str, slice | None]]:
    """(sned name, diffusers name, slice of the source's rows) of one ResnetBlock2D."""
    pairs = [(f"{dst}.resblock.{n}", f"{src}.{n}", None) for n in ("norm1", "conv1", "norm2",
                                                                  "conv2")]
    if shift == "scale_shift":  # time_emb_proj → [scale; shift]
        pairs += [(f"{dst}.resblock.emb_scale", f"{src}.time_emb_proj", slice(0, 1)),
                  (f"{dst}.resblock.emb_shift", f"{src}.time_emb_proj", slice(1, 2))]
    else:
        pairs.append((f"{dst}.resblock.emb_add", f"{src}.time_emb_proj", None))
    pairs.append((f"{dst}.skip", f"{src}.conv_shortcut", None))
    return pairs


def _attention(dst: str, src: str) -> list[tuple[str, str, slice | None]]:
    return [(f"{dst}.spatial_attn.norm", f"{src}.group_norm", None)] + [
        (f"{dst}.spatial_attn.{n}", f"{src}.{n}", None) for n in ("to_q", "to_k", "to_v")] + [
        (f"{dst}.spatial_attn.to_out", f"{src}.to_out.0", None)]


def module_map(cfg: ModelConfig) -> list[tuple[str, str, slice | None]]:
    """(sned module, diffusers module, half of the source rows or None) for every layer."""
    shift = "add" if cfg.time_embedding == "add" else "scale_shift"
    pairs = [("time_embed.0", "time_embedding.linear_1", None),
             ("time_embed.2", "time_embedding.linear_2", None), ("conv_in", "conv_in", None),
             ("norm_out", "conv_norm_out", None), ("conv_out", "conv_out", None)]
    n = len(cfg.levels)
    for i, spec in enumerate(unet_blocks(cfg)):
        part, *rest = spec.name.split(".")
        if part == "down":
            lvl, j = map(int, rest)
            src = f"down_blocks.{lvl}"
        elif part == "up":
            lvl, j = map(int, rest)
            src = f"up_blocks.{n - 1 - lvl}"
        else:
            j, src = int(rest[0]), "mid_block"
        pairs += _resnet(f"blocks.{i}", f"{src}.resnets.{j}", shift)
        if "spatial_attn" in spec.components:
            pairs += _attention(f"blocks.{i}", f"{src}.attentions.{j}")
    for lvl in range(n - 1):
        pairs.append((f"downsamplers.{lvl}", f"down_blocks.{lvl}.downsamplers.0.conv", None))
        pairs.append((f"upsamplers.{lvl}", f"up_blocks.{n - 1 - (lvl + 1)}.upsamplers.0.conv",
                      None))
    return pairs


@torch.no_grad()
def convert_unet2d(unet, name: str = "imported") -> VideoUNet:
    """A static sned model computing what the diffusers ``UNet2DModel`` ``unet`` computes
    (``model(x[:, :, None], t, None)[:, :, 0] == unet(x, t).sample``); eval mode, on the CPU
    in float32. Every tensor of ``unet`` must be used exactly once (else UnmappableError)."""
    cfg = config_from_unet2d(dict(unet.config), name)
    space = SearchSpace(cfg)
    with torch.device("meta"):
        model = VideoUNet(cfg, space.largest(), supernet=False)
    model = model.to_empty(device="cpu")
    model = torch.nn.Module.to(model, torch.float32)
    src = {k: v.detach().float().cpu() for k, v in unet.state_dict().items()}
    dst = dict(model.state_dict())
    used: set[str] = set()
    for mine, theirs, half in module_map(cfg):
        for p in ("weight", "bias"):
            key = f"{mine}.{p}"
            if key not in dst:
                continue
            skey = f"{theirs}.{p}"
            if skey not in src:
                raise UnmappableError(f"{theirs}: {p} is missing in the diffusers model (sned "
                                      f"needs it for {key})")
            value = src[skey]
            if half is not None:
                value = value.chunk(2, dim=0)[half.start]
            if tuple(value.shape) != tuple(dst[key].shape):
                raise UnmappableError(f"{theirs}: {p} shape {tuple(value.shape)} does not match "
                                      f"sned's {key} {tuple(dst[key].shape)}")
            dst[key].copy_(value)
            used.add(skey)
    filled = {f"{m}.{p}" for m, _, _ in module_map(cfg) for p in ("weight", "bias")}
    left = sorted(k for k in dst if k not in filled)
    if left:
        raise UnmappableError(f"sned tensor {left[0]} has no diffusers counterpart")
    unused = sorted(set(src) - used)
    if unused:
        block = unused[0].rsplit(".", 1)[0]
        raise UnmappableError(f"{block}: {unused[0].rsplit('.', 1)[1]} has no sned "
                              f"counterpart ({len(unused)} tensor(s) left over)")
    return model.eval()


def load_unet2d_config(src: str | os.PathLike) -> tuple[dict, Path]:
    """The ``UNet2DModel`` config dict of ``src`` (a model folder with ``config.json`` or a
    pipeline folder with ``unet/``) and the folder holding it."""
    import json

    p = Path(src)
    folder = p / "unet" if (p / "model_index.json").is_file() else p
    path = folder / "config.json"
    if not path.is_file():
        raise UnmappableError(f"{src}: no config.json (expected a diffusers UNet2DModel folder "
                              f"or a pipeline folder with unet/)")
    try:
        conf = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UnmappableError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(conf, dict):
        raise UnmappableError(f"{path}: not a diffusers model config")
    return conf, folder


def import_unet2d(src: str | os.PathLike, name: str | None = None) -> VideoUNet:
    """Read the diffusers ``UNet2DModel`` at ``src`` (safetensors weights only: nothing in the
    folder can run code) and convert it. The config is checked first, so an unmappable model
    is refused before its weights are read."""
    from diffusers import UNet2DModel

    conf, folder = load_unet2d_config(src)
    config_from_unet2d(conf, name or Path(src).name)  # refuse before reading weights
    unet = UNet2DModel.from_pretrained(folder, use_safetensors=True)
    return convert_unet2d(unet, name or Path(src).name)


__all__ = ["ATTN_BLOCKS", "COMPONENTS", "UnmappableError", "config_from_unet2d",
           "convert_unet2d", "import_unet2d", "load_unet2d_config", "module_map"]
