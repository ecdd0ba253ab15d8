"""Subnet extraction and the standalone model folder.

:func:`extract` builds a plain :class:`~sned.models.unet.VideoUNet` at exactly the arch's active
sizes and fills it through the elastic layers' ``active_weights`` — the very views the
supernet's forward uses. :func:`save_pretrained` / :func:`load_pretrained` write and read a
model folder without any search-space machinery; writes are atomic (temp folder + rename).

Folder layouts, all read by :func:`load_pretrained` / :func:`read_model_meta`:

* a diffusers model folder (what :func:`save_pretrained` writes, and ``VideoUNet.save_pretrained``):
  ``config.json`` (``_class_name: VideoUNet``; ``model_config``, ``arch``, ``supernet`` and the
  free ``sned`` metadata) + ``diffusion_pytorch_model.safetensors``;
* a pipeline folder (what ``sned extract`` writes, :mod:`sned.pipelines.diffusers_pipeline`):
  ``model_index.json`` + ``unet/`` (the above) + ``scheduler/`` (+ ``vae/``, ``ssr_unet/``);
* the 0.1 layout (``"format": "sned-model"`` config.json + ``model.safetensors``): still read
  (converted on load, with a note), written by :func:`save_legacy` / ``sned extract --legacy``.

``sned extract`` writes through :func:`sned.pipelines.export.export_subnet`: the pipeline folder
plus ``arch.json`` and a ``README.md`` model card with hub front-matter (:func:`model_card`).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn

from .arch import Arch, full_layout, resolve
from .config import ConfigError, config_from_dict
from .models.unet import VideoUNet
from .nn.elastic import ElasticConv2d, ElasticGroupNorm, ElasticLinear
from .store.files import (
    MODEL,
    CheckpointError,
    atomic_folder,
    check_output,
    check_state_dict,
    expected_digest,
    file_digest,
    load_safetensors,
    read_format_json,
    save_safetensors,
    write_json,
)

FORMAT = "sned-model"
FORMAT_VERSION = 1
WEIGHTS = "diffusion_pytorch_model.safetensors"
"""diffusers' weights file name (``ModelMixin.save_pretrained``)."""
LEGACY_WEIGHTS = "model.safetensors"


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
        static = VideoUNet(cfg, arch, supernet=False, layouts=layouts)
    static = static.to_empty(device=p.device)
    static = nn.Module.to(static, p.dtype)  # (ModelMixin.to warns on every dtype cast)
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
    """Write ``model`` as a diffusers model folder (``config.json`` +
    ``diffusion_pytorch_model.safetensors``, via ``model.save_pretrained``) atomically.

    ``model`` is an extracted model (its arch is recorded) or a supernet (saved whole).
    ``extra`` adds JSON-serialisable metadata (e.g. the diffusion config) under the config's
    ``sned`` key (what :func:`read_model_meta` returns at top level);
    ``files`` adds text files (e.g. ``README.md``, ``arch.json``) to the folder;
    ``write_more(tmp)`` writes anything else into the temporary folder, so the whole folder
    appears in one rename. ``VideoUNet.from_pretrained(folder)`` loads it.
    """
    folder = Path(folder)
    with atomic_folder(folder) as tmp:
        write_model(model, tmp, extra)
        for name, text in (files or {}).items():
            (tmp / name).write_text(text)
        if write_more is not None:
            write_more(tmp)
    return folder


def write_model(model: VideoUNet, folder: Path, extra: dict | None = None) -> None:
    """``model.save_pretrained(folder)`` with ``extra`` merged into its ``sned`` metadata (the
    model's own config is left as it was)."""
    before = dict(model.diffusers_config.get("sned") or {})
    model.register_to_config(sned=json.loads(json.dumps({**before, **(extra or {})})))
    try:
        model.save_pretrained(folder, safe_serialization=True)
    finally:
        model.register_to_config(sned=before)
    record_digests(folder / "config.json", folder.glob("*.safetensors"))


def record_digests(config: Path, weights: Iterable[Path]) -> None:
    """Add the digest of each weights file to ``config``'s ``sned.digests`` (what every load
    verifies, :func:`sned.store.files.expected_digest`); ``config`` is rewritten atomically."""
    raw = json.loads(config.read_text())
    raw.setdefault("sned", {})["digests"] = {p.name: file_digest(p) for p in sorted(weights)}
    write_json(config, raw, indent=2)


def save_legacy(model: VideoUNet, folder: str | os.PathLike, extra: dict | None = None,
                files: dict[str, str] | None = None,
                write_more: Callable[[Path], None] | None = None) -> Path:
    """The 0.1 layout: ``config.json`` (``"format": "sned-model"``) + ``model.safetensors``
    (``sned extract --legacy``, for tools that read it)."""
    folder = Path(folder)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION,
            "model_config": model.config.to_dict(),
            "supernet": model.is_supernet,
            "arch": None if model.arch is None else model.arch.to_dict()}
    meta.update(extra or {})
    with atomic_folder(folder) as tmp:
        meta["digests"] = {LEGACY_WEIGHTS: save_safetensors(model.state_dict(),
                                                            tmp / LEGACY_WEIGHTS)}
        (tmp / "config.json").write_text(json.dumps(meta, indent=1) + "\n")
        for name, text in (files or {}).items():
            (tmp / name).write_text(text)
        if write_more is not None:
            write_more(tmp)
    return folder


def is_pipeline_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a diffusers pipeline (``model_index.json``)."""
    return (Path(path) / "model_index.json").is_file()


def is_model_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a model folder (``config.json`` or ``model_index.json``, no
    ``state.json``: not a run)."""
    p = Path(path)
    return ((p / "config.json").is_file() or is_pipeline_folder(p)) \
        and not (p / "state.json").is_file()


def unet_folder(folder: str | os.PathLike) -> Path:
    """The folder holding the denoiser's ``config.json``: ``unet/`` of a pipeline folder, else
    ``folder`` itself."""
    folder = Path(folder)
    return folder / "unet" if is_pipeline_folder(folder) else folder


def weights_file(folder: str | os.PathLike) -> Path:
    """The denoiser's weights file in a model folder of any layout."""
    sub = unet_folder(folder)
    return sub / LEGACY_WEIGHTS if (sub / LEGACY_WEIGHTS).is_file() else sub / WEIGHTS


def _read_weights(path: Path, device, digests: dict | None, record: Path) -> dict:
    """The tensors of ``path``, or of every shard its diffusers index
    (``diffusion_pytorch_model.safetensors.index.json``, ``save_pretrained(max_shard_size=)``)
    names when ``path`` itself is absent; each file checked against the digest ``record``
    lists for it in ``digests`` (None: an older folder, loaded with a note)."""
    def load(file: Path) -> dict:
        return load_safetensors(file, device, expected_digest(file, digests, record))

    index = path.with_name(path.name + ".index.json")
    if path.is_file() or not index.is_file():
        return load(path)
    try:
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{index}: not a safetensors shard index ({e})") from None
    state: dict = {}
    for name in shards:
        state.update(load(path.parent / name))
    return state


def read_model_meta(folder: str | os.PathLike) -> dict:
    """The folder's metadata in one shape, whatever its layout: ``model_config``, ``supernet``,
    ``arch`` and the recorded extras (``diffusion``, ``card``, ``data``, ``latent``) at top
    level; ``layout`` says which it was (``diffusers`` | ``pipeline`` | ``sned-model``).
    CheckpointError names the file when it is none of them."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"model folder {str(folder)!r} does not exist")
    pipeline = is_pipeline_folder(folder)
    path = unet_folder(folder) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: not a sned model folder")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None
    if isinstance(raw, dict) and raw.get("_class_name") == "VideoUNet":
        meta = dict(raw.get("sned") or {})
        meta.update(format=FORMAT, model_config=raw.get("model_config"),
                    supernet=bool(raw.get("supernet")), arch=raw.get("arch"),
                    layout="pipeline" if pipeline else "diffusers")
        return meta
    if isinstance(raw, dict) and raw.get("_class_name") == "UNet2DModel":
        raise CheckpointError(f"{path} is a diffusers UNet2DModel: convert it first with "
                              f"`sned import {path.parent} --out DIR`")
    meta = read_format_json(path, FORMAT, "sned model folder")
    return {**meta, "layout": FORMAT}


_NOTED: set[str] = set()


def load_pretrained(folder: str | os.PathLike, device: str | torch.device = "cpu",
                    dtype: torch.dtype | None = None) -> VideoUNet:
    """Rebuild a model saved by :func:`save_pretrained` (no supernet needed for subnets), from
    any layout :func:`read_model_meta` reads (a pipeline folder gives its ``unet``). A 0.1
    ``sned-model`` folder is converted on load (a one-time note says how to rewrite it)."""
    folder = Path(folder)
    meta = read_model_meta(folder)
    cfg_path = unet_folder(folder) / "config.json"
    try:
        cfg = config_from_dict(meta["model_config"], f"{cfg_path}")
        arch = None if meta.get("arch") is None else Arch.from_dict(meta["arch"])
    except (KeyError, TypeError, ConfigError, ValueError) as e:
        raise CheckpointError(f"{cfg_path}: {e}") from None
    if meta["layout"] == FORMAT and str(folder) not in _NOTED:
        _NOTED.add(str(folder))
        warnings.warn(f"{folder} is a sned 0.1 model folder (\"format\": \"sned-model\"); "
                      f"read and converted. Rewrite it in the diffusers layout with "
                      f"sned.save_pretrained(sned.load_pretrained(folder), new_folder)",
                      FutureWarning, stacklevel=2)
    weights = weights_file(folder)
    state = _read_weights(weights, device, meta.get("digests"), cfg_path)
    extras = {k: v for k, v in meta.items()
              if k not in ("format", "format_version", "model_config", "supernet", "arch",
                           "layout", "digests")}
    with torch.device("meta"):
        model = VideoUNet(cfg, arch, supernet=bool(meta.get("supernet")), sned=extras)
    check_state_dict(model.state_dict(), state, str(weights), str(cfg_path))
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


def front_matter(card: dict, license: str = "apache-2.0") -> str:
    """The YAML front-matter a model hub indexes, from a card dict: ``library_name: sned``,
    ``pipeline_tag`` (text-to-video / text-to-image; none for unconditional models),
    ``license``, ``tags`` and ``base_model`` where the card records one (a DiffNAS teacher, an
    image model a video supernet started from, an imported diffusers model)."""
    import yaml

    frames = card.get("pixel_frames") or card.get("frames") or 1
    meta: dict = {"library_name": "sned", "license": license}
    if card.get("conditional", True):
        meta["pipeline_tag"] = "text-to-video" if frames > 1 else "text-to-image"
    tags = ["sned", "diffusers", "video-diffusion" if frames > 1 else "image-diffusion"]
    if card.get("subnet"):
        tags.append(f"sned-subnet-{card['subnet']}")
    if card.get("kind") == "ssr":
        tags.append("super-resolution")
    if card.get("latent"):
        tags.append("latent-diffusion")
    meta["tags"] = tags + list(card.get("tags") or [])
    if card.get("base_model"):
        meta["base_model"] = card["base_model"]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n\n"


def model_card(den, cost, supernet_params: int) -> tuple[dict, str]:
    """The card of an exported subnet: a JSON dict (kept in the unet's ``config.json``) and
    README text (with hub front-matter, :func:`front_matter`).

    ``den`` is a :class:`sned.loading.Denoiser`; ``cost`` its :class:`~sned.cost.Cost`.
    ``card["subnet"]`` is the preset label (``S`` …) that ``sned sample`` puts in file names.
    """
    card = {"config": den.config.name, "kind": den.config.kind, "subnet": den.label,
            "resolution": den.arch.resolution, "frames": den.config.frames,
            "params": cost.params, "macs": cost.macs, "supernet_params": supernet_params,
            "weights": den.weights, "source": den.source,
            "conditional": den.config.conditional}
    text = (f"# sned subnet: {den.config.name} / {den.label}\n\n"
            f"Extracted from `{den.source}` ({den.weights} weights).\n\n"
            f"| kind | resolution | frames | params | MACs / forward (batch 1) | of supernet |\n"
            f"|---|---|---|---|---|---|\n"
            f"| {den.config.kind} | {card['resolution']} | {card['frames']} | "
            f"{cost.params:,} | {cost.macs:,} | {cost.params / supernet_params:.1%} |\n\n"
            f"Load with `sned.SnedPipeline.from_pretrained(folder)` (or "
            f"`sned.load_pretrained(folder)` for the denoiser); sample with `sned sample "
            f"folder --prompt ...`.\n")
    init = getattr(den, "init_from", None)
    if init:  # image-to-video transfer: the run's starting point
        card["init_from"] = {k: init.get(k) for k in ("path", "weights_file", "sha256", "kind",
                                                      "config", "weights", "base_model")}
        card["base_model"] = init.get("base_model") or init.get("path")
        text += (f"\nThe supernet started from the image model `{init.get('path')}` "
                 f"({init.get('config')}, {init.get('kind')}; weights sha256 "
                 f"`{init.get('sha256')}`).\n")
    return card, text
