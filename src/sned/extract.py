"""Subnet extraction and the standalone model folder (``config.json`` + ``model.safetensors``).

:func:`extract` builds a plain :class:`~sned.models.unet.VideoUNet` at exactly the arch's active
sizes and fills it through the elastic layers' ``active_weights`` — the very views the
supernet's forward uses. :func:`save_pretrained` / :func:`load_pretrained` write and read the
folder without any search-space machinery; writes are atomic (temp folder + rename).
:func:`export_subnet` is what ``sned extract`` writes: the folder plus ``arch.json`` and a
``README.md`` model card (and, for latent models, the autoencoder and latent statistics).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Iterable

import torch
from safetensors.torch import save_file
from torch import nn

from .arch import Arch, full_layout, resolve, unet_blocks
from .config import ConfigError, config_from_dict
from .cost import decoder_cost
from .models.codec import FOLDER, save_autoencoder
from .models.unet import VideoUNet
from .nn.elastic import ElasticConv2d, ElasticGroupNorm, ElasticLinear
from .space import SearchSpace
from .store.files import (
    MODEL,
    CheckpointError,
    atomic_folder,
    check_output,
    check_state_dict,
    load_safetensors,
    read_format_json,
)

FORMAT = "sned-model"
FORMAT_VERSION = 1


def _active_weights_like(sup: nn.Module, static: nn.Module):
    """The supernet layer's active views at the static layer's sizes."""
    if isinstance(sup, ElasticLinear):
        return sup.active_weights(static.in_features, static.out_features)
    if isinstance(sup, ElasticConv2d):
        return sup.active_weights(static.in_channels, static.out_channels,
                                  static.kernel_size[0])
    if isinstance(sup, ElasticGroupNorm):
        return sup.active_weights(static.num_channels)
    return None


@torch.no_grad()
def extract(supernet: VideoUNet, arch: Arch | None = None) -> VideoUNet:
    """A standalone model of ``arch`` (None = the full supernet) with copied weights.

    The result is made of plain ``nn.Conv2d``/``nn.Linear``/``nn.GroupNorm`` layers, holds only
    the kept components, takes no ``arch=`` argument, and computes what ``supernet(...,
    arch=arch)`` computes. It is on the supernet's device and dtype, in eval mode.
    """
    if not supernet.is_supernet:
        raise TypeError("extract() needs a supernet; this model is already extracted")
    cfg = supernet.config
    if arch is None:
        layouts = [full_layout(s) for s in supernet.specs]
    else:
        layouts = resolve(cfg, arch, supernet.specs)
    p = next(supernet.parameters())
    with torch.device("meta"):
        static = VideoUNet(cfg, layouts, arch)
    static = static.to_empty(device=p.device).to(p.dtype)
    for view, dst in weight_pairs(supernet, static):
        dst.copy_(view)
    return static.eval()


def weight_pairs(supernet: VideoUNet, static: VideoUNet):
    """Yield ``(supernet view, static tensor)`` for every parameter and buffer of ``static``:
    the elastic layers' active views at the static layer's sizes, whole tensors otherwise.

    Copying right to left is extraction; left to right writes a static model back into the
    supernet views it occupies (DiffNAS's student initialisation, image-to-video transfer).
    """
    for _name, view, tensor in named_weight_pairs(supernet, static):
        yield view, tensor


class LayerMismatch(ValueError):
    """A static model's layer has no counterpart in a supernet, or does not fit its slice.
    The message names the layer and both shapes."""


def named_weight_pairs(supernet: VideoUNet, static: VideoUNet, skip=None):
    """:func:`weight_pairs` with the tensor's name: ``(name, supernet view, static tensor)``.

    ``skip(name) -> bool`` leaves out modules of ``static`` by name. Raises
    :class:`LayerMismatch` naming the first layer of ``static`` (in module order) that
    ``supernet`` lacks or whose tensor does not fit the supernet's (sliced) one.
    """
    sup_modules = dict(supernet.named_modules())
    for name, module in static.named_modules():
        own = dict(module.named_parameters(recurse=False))
        if not own or (skip is not None and skip(name)):
            continue
        src = sup_modules.get(name)
        if src is None:
            shapes = {k: tuple(v.shape) for k, v in own.items()}
            raise LayerMismatch(f"layer {name} {shapes} has no counterpart in the supernet")
        try:
            views = _active_weights_like(src, module)
        except (ValueError, AttributeError) as e:
            theirs = getattr(getattr(src, "weight", None), "shape", None)
            raise LayerMismatch(f"layer {name}: weight {tuple(module.weight.shape)} does not "
                                f"fit the supernet's {theirs and tuple(theirs)} ({e})") from None
        if views is None:  # a plain layer: whole tensors
            pairs = [(p, getattr(src, p, None), t) for p, t in own.items()]
        else:
            pairs = [("weight", views[0], module.weight)]
            if "bias" in own:
                pairs.append(("bias", views[1], module.bias))
        for pname, view, tensor in pairs:
            if view is None or tuple(view.shape) != tuple(tensor.shape):
                theirs = None if view is None else tuple(view.shape)
                raise LayerMismatch(f"layer {name}.{pname}: {tuple(tensor.shape)} vs the "
                                    f"supernet's {theirs}")
            yield f"{name}.{pname}" if name else pname, view, tensor
    for name, buf in static.named_buffers():
        yield name, supernet.get_buffer(name), buf


def save_pretrained(model: VideoUNet, folder: str | os.PathLike, extra: dict | None = None,
                    files: dict[str, str] | None = None,
                    write_more: Callable[[Path], None] | None = None) -> Path:
    """Write ``folder/config.json`` and ``folder/model.safetensors`` atomically.

    ``model`` is an extracted model (its arch is recorded) or a supernet (saved whole).
    ``extra`` adds JSON-serialisable fields to ``config.json`` (e.g. the diffusion config);
    ``files`` adds text files (e.g. ``README.md``, ``arch.json``) to the folder;
    ``write_more(tmp)`` writes anything else into the temporary folder (a latent model's
    ``autoencoder/``), so the whole folder appears in one rename.
    """
    folder = Path(folder)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION,
            "model_config": model.config.to_dict(),
            "supernet": model.is_supernet,
            "arch": None if model.arch is None else model.arch.to_dict()}
    meta.update(extra or {})
    with atomic_folder(folder) as tmp:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, tmp / "model.safetensors", metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(meta, indent=1) + "\n")
        for name, text in (files or {}).items():
            (tmp / name).write_text(text)
        if write_more is not None:
            write_more(tmp)
    return folder


def is_model_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a model folder (``config.json``, no ``state.json``: not a run)."""
    return (Path(path) / "config.json").is_file() and not (Path(path) / "state.json").is_file()


def read_model_meta(folder: str | os.PathLike) -> dict:
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"model folder {str(folder)!r} does not exist")
    meta = read_format_json(folder / "config.json", FORMAT, "sned model folder")
    return meta


def load_pretrained(folder: str | os.PathLike, device: str | torch.device = "cpu",
                    dtype: torch.dtype | None = None) -> VideoUNet:
    """Rebuild a model saved by :func:`save_pretrained` (no supernet needed for subnets)."""
    folder = Path(folder)
    meta = read_model_meta(folder)
    try:
        cfg = config_from_dict(meta["model_config"], f"{folder / 'config.json'}")
        arch = None if meta.get("arch") is None else Arch.from_dict(meta["arch"])
    except (KeyError, ConfigError, ValueError) as e:
        raise CheckpointError(f"{folder / 'config.json'}: {e}") from None
    if meta.get("supernet"):
        layouts = None
    else:
        layouts = ([full_layout(s) for s in unet_blocks(cfg)] if arch is None
                   else resolve(cfg, arch))
    weights = folder / "model.safetensors"
    state = load_safetensors(weights, device)
    with torch.device("meta"):
        model = VideoUNet(cfg, layouts, arch)
    check_state_dict(model.state_dict(), state, str(weights), str(folder / "config.json"))
    model.load_state_dict(state, assign=True)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()


def refuse_existing(folder: str | os.PathLike, overwrite: bool = False,
                    inputs: Iterable = ()) -> Path:
    """``folder`` as a Path, checked by the output-folder rule (:func:`sned.store.files.check_output`,
    kind :data:`sned.store.files.MODEL`): OutputError (naming it and why) when it is a file, one of
    ``inputs`` (or inside / around one), ``.`` or a parent of it, a folder of another kind or
    with other files, or a model folder and ``overwrite`` is False. Nothing is touched."""
    folder = Path(folder)
    check_output(folder, MODEL, inputs, overwrite=overwrite)
    return folder


def model_card(den, cost, supernet_params: int) -> tuple[dict, str]:
    """The card of an exported subnet: a JSON dict (kept in ``config.json``) and README text.

    ``den`` is a :class:`sned.loading.Denoiser`; ``cost`` its :class:`~sned.cost.Cost`.
    ``card["subnet"]`` is the preset label (``S`` …) that ``sned sample`` puts in file names.
    """
    card = {"config": den.config.name, "kind": den.config.kind, "subnet": den.label,
            "resolution": den.arch.resolution, "frames": den.config.frames,
            "params": cost.params, "macs": cost.macs, "supernet_params": supernet_params,
            "weights": den.weights, "source": den.source}
    text = (f"# sned subnet: {den.config.name} / {den.label}\n\n"
            f"Extracted from `{den.source}` ({den.weights} weights).\n\n"
            f"| kind | resolution | frames | params | MACs / forward (batch 1) | of supernet |\n"
            f"|---|---|---|---|---|---|\n"
            f"| {den.config.kind} | {card['resolution']} | {card['frames']} | "
            f"{cost.params:,} | {cost.macs:,} | {cost.params / supernet_params:.1%} |\n\n"
            f"Load with `sned.load_pretrained(folder)`; sample with `sned sample folder "
            f"--prompt ...`.\n")
    init = getattr(den, "init_from", None)
    if init:  # image-to-video transfer: the run's starting point
        card["init_from"] = {k: init.get(k) for k in ("path", "weights_file", "sha256", "kind",
                                                      "config", "weights")}
        text += (f"\nThe supernet started from the image model `{init.get('path')}` "
                 f"({init.get('config')}, {init.get('kind')}; weights sha256 "
                 f"`{init.get('sha256')}`).\n")
    return card, text


def export_subnet(den, out: str | os.PathLike, overwrite: bool = False,
                  inputs: Iterable = ()) -> Path:
    """Extract ``den``'s subnet (a :class:`sned.loading.Denoiser` of a supernet) and save it with
    ``arch.json``, a ``README.md`` model card and, for latent models, ``autoencoder/`` — all in
    one atomic folder. Refuses an ``out`` the output-folder rule refuses (see
    :func:`refuse_existing`; ``den.source`` always counts as an input)."""
    out = refuse_existing(out, overwrite, [den.source, *inputs])
    space = SearchSpace(den.config)
    card, text = model_card(den, space.cost(den.arch), space.full_params)
    static = extract(den.model, den.arch)
    extra = {"diffusion": den.diffusion.to_dict(), "card": card}
    if den.data is not None:  # the training data: held-out evaluation of the folder uses it
        extra["data"] = den.data
    if den.train is not None:  # its training recipe (sned diffnas retrains the same way)
        extra["train"] = den.train
    write_more = None
    if den.codec is not None:  # a latent model carries its decoder and latent stats

        dec, frames, res = decoder_cost(den.config, den.arch.resolution)
        card.update(pixel_resolution=res, pixel_frames=frames, decoder_macs=dec.macs)
        extra["latent"] = {"autoencoder": FOLDER, **den.codec.stats.to_dict()}

        def write_more(tmp: Path) -> None:
            # the whole AE: sampling needs the decoder, the validation loss also the encoder
            save_autoencoder(den.codec.ae, tmp / FOLDER, den.codec.stats)
    return save_pretrained(static, out, extra=extra, write_more=write_more,
                           files={"README.md": text, "arch.json": den.arch.to_json(indent=1)})
