"""Image-to-video transfer: start a video supernet from an image diffusion model (SNED §3.4).

The source is an image model of the same family — a training run / checkpoint / model folder
of a supernet or of an extracted (static) model whose config has the target's spatial
structure and no temporal layers (or ``frames: 1``). Every source weight is written into the
target supernet through :func:`sned.extract.named_weight_pairs` — the same ``active_weights``
views extraction reads, so a static model's smaller weights land in the prefix slices of the
elastic ones. What has no counterpart starts so that its branch outputs zero:

* each temporal attention's output projection, each feed-forward that only exists in the
  target (a block whose only attention is temporal), the pooled-text projection when the
  source has none, and the output layer of every component an extracted source dropped are
  zeroed — such a branch then returns its input;
* for a static source, the input columns of every residual branch's output layer (ResBlock
  ``conv2``, attention ``to_out``, feed-forward ``fc2``) beyond the source's width are zeroed,
  so a wider subnet adds nothing the source did not compute.

At step 0 the video supernet under ``arch`` then predicts, for every frame of a clip, what the
image model predicts for that frame alone under :func:`image_arch` ``(arch)`` (same noise,
timestep and text) — see ``tests/test_transfer.py``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..arch import Arch, ArchError, BlockArch, unet_blocks
from ..config import ConfigError
from ..extract import LayerMismatch, extract, named_weight_pairs
from ..models.codec import is_autoencoder_folder
from ..models.unet import VideoUNet
from ..pipelines.loading import load_denoiser
from ..store.files import CheckpointError

TEMPORAL = "temporal_attn"
FUNCTION_KEYS = ("kind", "conditional", "head_dim", "norm_group_size", "text_dim",
                 "in_channels", "out_channels", "ssr_residual", "norm_groups", "norm_eps",
                 "time_embedding", "attention_norm", "attention_bias")
"""Config keys that change what a layer computes without changing its weights' shapes (or
that name the model family): they must be equal in the source and the target."""


class TransferError(ConfigError):
    """The source cannot start this target (missing, another family, mismatching layer). The
    message names the source and the first mismatching layer or key."""


@dataclass
class Transfer:
    """What :func:`transfer_weights` did (JSON in ``state.json`` as ``init_from``).

    Attributes:
        source: ``path`` (as given, resolved), ``weights_file`` (the file read),
            ``sha256`` (of that file), ``weights`` (ema/raw),
            ``kind`` (supernet/extracted), ``config`` and, for extracted sources, ``arch``.
        copied: number of target tensors written from the source; ``copied_params`` their
            elements.
        new: target modules without a counterpart, started at zero output.
        dropped: source modules not copied (temporal layers of a ``frames: 1`` source).
        notes: differences the user should know of (diffusion settings, dropped layers).
    """

    source: dict
    copied: int = 0
    copied_params: int = 0
    new: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {**self.source, "copied_tensors": self.copied, "copied_params": self.copied_params,
                "new_zero_output": self.new, "dropped": self.dropped, "notes": self.notes}

    def summary(self) -> str:
        new = ", ".join(self.new) or "none"
        src = self.source
        text = (f"initialised from {src.get('path')} ({src.get('kind', 'model')}, "
                f"{src.get('weights', 'unknown')} weights, "
                f"sha256 {str(src.get('sha256'))[:12]}…): "
                f"copied {self.copied} tensors ({self.copied_params:,} values); without a "
                f"counterpart, started at zero output: {new}")
        if self.dropped:
            text += f"; not copied: {', '.join(self.dropped)}"
        return text + "".join(f"; {n}" for n in self.notes)


# --------------------------------------------------------------------------------- loading
def init_from(model: VideoUNet, source: str | os.PathLike, diffusion=None,
              ema: bool | None = None) -> Transfer:
    """Load ``source`` (a run folder, checkpoint or model folder of an image model) and write
    it into the supernet ``model`` in place; returns the :class:`Transfer` record.

    ``diffusion``: the target run's :class:`~sned.diffusion.DiffusionConfig` (a different
    source schedule or prediction type is noted). ``ema``: None = the source checkpoint's EMA
    weights when it has them (as every command), True / False insist. Raises
    :class:`TransferError` naming the file, the layer or the key; ``model`` is untouched then.
    """
    path = Path(source)
    if not path.exists():
        raise TransferError(f"train.init_from: {str(path)!r} does not exist (expected an image "
                            f"model's training run, checkpoint or model folder)")
    if is_autoencoder_folder(path):
        raise TransferError(f"train.init_from={path} is an autoencoder folder "
                            f"({path / 'config.json'}); --init-from takes an image diffusion "
                            f"model")
    try:
        den = load_denoiser(path, ema=ema)
    except (CheckpointError, ConfigError, ArchError, ValueError, KeyError) as e:
        raise TransferError(f"train.init_from={path}: not a diffusion model run or model "
                            f"folder sned can start from: {e}") from None
    record = {"path": str(path.resolve()), **_weights_file(den)}
    record.update(kind="supernet" if den.model.is_supernet else "extracted",
                  config=den.config.name, weights=den.weights or "unknown")
    if not den.model.is_supernet and den.model.arch is not None:
        record["arch"] = den.model.arch.to_dict()
    result = transfer_weights(model, den.model, record, label=str(path))
    if diffusion is not None and den.diffusion.to_dict() != diffusion.to_dict():
        mine, theirs = diffusion.to_dict(), den.diffusion.to_dict()
        keys = [k for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)]
        result.notes.append("the source was trained with other diffusion settings: " + ", ".join(
            f"{k} {theirs.get(k)!r} (source) vs {mine.get(k)!r}" for k in keys))
    return result


def _weights_file(den) -> dict:
    """``weights_file`` and ``sha256`` of the file ``den``'s weights were read from."""
    from ..extract import is_model_folder, weights_file

    folder = Path(den.source)
    if den.weights == "ema" and (folder / "ema.safetensors").is_file():
        path = folder / "ema.safetensors"
    else:  # a model folder of any layout (pipeline: unet/…), or a checkpoint
        path = weights_file(folder) if is_model_folder(folder) else folder / "model.safetensors"
    return {"weights_file": str(path), "sha256": file_sha256(path)}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------------- the copy
@torch.no_grad()
def transfer_weights(target: VideoUNet, source: VideoUNet, record: dict | None = None,
                     label: str = "the source") -> Transfer:
    """Write the image model ``source`` (supernet or extracted) into the supernet ``target``.

    Checks first, copies after: on a TransferError ``target`` is unchanged.
    """
    if not target.is_supernet:
        raise TypeError("transfer_weights needs a target supernet (VideoUNet built from a config)")
    _check_configs(target.config, source.config, label)
    static = extract(source, None) if source.is_supernet else source
    kind = "supernet" if source.is_supernet else "extracted"
    result = Transfer({"path": label, "kind": kind, "config": source.config.name,
                       **(record or {})})
    skip = {name for name, _ in static.named_modules() if _is_temporal(name)}
    if skip:  # a frames: 1 source with temporal layers: they acted per frame
        result.dropped = sorted({n.split(f".{TEMPORAL}")[0] + f".{TEMPORAL}" for n in skip})
        result.notes.append("the source's temporal layers ran on one frame and are not copied; "
                            "the video model does not equal the source exactly")
    try:
        pairs = list(named_weight_pairs(target, static, skip=_is_temporal))
    except LayerMismatch as e:
        raise TransferError(f"train.init_from={label} ({source.config.name}) does not fit "
                            f"{target.config.name}: {e}") from None
    covered = {name for name, _, _ in pairs}
    new = _new_modules(target, covered, source, label)
    outputs = _branch_outputs(target)
    for name, view, tensor in pairs:
        view.copy_(tensor.to(view.dtype))
        result.copied += 1
        result.copied_params += tensor.numel()
        module = outputs.get(name)
        if module is not None and view.shape[1] < module.weight.shape[1]:
            module.weight[:, view.shape[1]:] = 0  # unfilled inputs of a branch output add 0
    for module_name in new:
        zero_output(target.get_submodule(module_name))
    result.new = new
    return result


def _check_configs(target, source, label: str) -> None:
    if source.kind != target.kind:
        raise TransferError(f"train.init_from={label} is a {source.kind!r} model "
                            f"({source.name}); the target {target.name} is {target.kind!r}")
    for key in FUNCTION_KEYS:
        if getattr(source, key) != getattr(target, key):
            raise TransferError(f"train.init_from={label} ({source.name}) does not fit "
                                f"{target.name}: config key {key} is {getattr(source, key)!r} in "
                                f"the source, {getattr(target, key)!r} in the target")
    order = [a for a in target.attention_order if a != TEMPORAL]
    if [a for a in source.attention_order if a != TEMPORAL] != order:
        raise TransferError(f"train.init_from={label}: attention_order "
                            f"{list(source.attention_order)} differs from the target's "
                            f"{list(target.attention_order)}")
    has_temporal = any(TEMPORAL in s.components for s in unet_blocks(source))
    if has_temporal and source.frames > 1:
        raise TransferError(f"train.init_from={label} ({source.name}) is a video model (frames "
                            f"{source.frames}, temporal layers); --init-from starts a video "
                            f"model from an image model (frames: 1 or no temporal layers)")


def _is_temporal(name: str) -> bool:
    return f".{TEMPORAL}" in f".{name}"


def _new_modules(target: VideoUNet, covered: set[str], source: VideoUNet, label: str
                 ) -> list[str]:
    """Target modules that got nothing from the source; only branches that can start at zero
    output may be new (see :func:`_zeroable`) — any other is a TransferError naming it."""
    specs = unet_blocks(source.config)
    new: list[str] = []
    for name, param in target.named_parameters():
        if name in covered:
            continue
        module = name.rsplit(".", 1)[0]
        branch = _zeroable(target, module, specs)
        if branch is None:
            raise TransferError(f"train.init_from={label} ({source.config.name}) does not fit "
                                f"{target.config.name}: layer {name} {tuple(param.shape)} has no "
                                f"counterpart in the source")
        if branch not in new:
            new.append(branch)
    return new


def _zeroable(target: VideoUNet, module: str, source_specs) -> str | None:
    """The zero-output branch ``module`` belongs to, or None: a temporal attention; a
    feed-forward of a block whose only attention is temporal; a component the source's config
    has but an extracted source dropped; the pooled-text projection."""
    parts = module.split(".")
    if parts[0] == "text_pool":
        return "text_pool"
    if parts[0] != "blocks" or len(parts) < 3:
        return None
    comp, block = parts[2], target.blocks[int(parts[1])]
    ours = comp == TEMPORAL or (comp == "ff" and all(a == TEMPORAL
                                                    for a in block.spec.attentions))
    dropped = comp in source_specs[int(parts[1])].slots
    return ".".join(parts[:3]) if ours or dropped else None


def zero_output(module: nn.Module) -> None:
    """Zero what ``module`` adds to its residual stream (attention ``to_out``, FF ``fc2``,
    ResBlock ``conv2``, a linear projection itself)."""
    last = next((getattr(module, n) for n in ("to_out", "fc2", "conv2") if hasattr(module, n)),
                module)
    with torch.no_grad():
        last.weight.zero_()
        if last.bias is not None:
            last.bias.zero_()


def _branch_outputs(target: VideoUNet) -> dict[str, nn.Module]:
    """``{"<module>.weight": module}`` for the output layer of every residual branch."""
    out = {}
    for i, block in enumerate(target.blocks):
        for child, last in (("resblock", "conv2"), ("spatial_attn", "to_out"),
                            ("cross_attn", "to_out"), ("ff", "fc2")):
            if hasattr(block, child):
                out[f"blocks.{i}.{child}.{last}.weight"] = getattr(getattr(block, child), last)
    return out


# --------------------------------------------------------------------------------- archs
def image_arch(arch: Arch, source_config) -> Arch:
    """The source (image) arch that a target (video) ``arch`` runs at step 0: the same choices
    without the temporal attentions, for ``source_config``'s blocks.

    Raises ArchError for a block that keeps its temporal attention and none of the others
    while the image block has a feed-forward: the video block then runs that (copied)
    feed-forward and the image block does not, so the two differ.
    """
    specs = unet_blocks(source_config)
    if len(specs) != len(arch.blocks):
        raise ArchError(f"arch has {len(arch.blocks)} blocks; {source_config.name} has "
                        f"{len(specs)}")
    blocks = []
    for spec, b in zip(specs, arch.blocks):
        keep = tuple(c for c in b.keep if c != TEMPORAL)
        bad = [c for c in keep if c not in spec.components]
        if bad:
            raise ArchError(f"block {spec.name}: {bad[0]!r} is not in {source_config.name}")
        if TEMPORAL in b.keep and spec.ff_hidden and not any(c in spec.attentions for c in keep):
            raise ArchError(f"block {spec.name} keeps only its temporal attention: the video "
                            f"block runs its feed-forward, the image block has none to run")
        ratios = dict(b.ratios)
        blocks.append(BlockArch(keep, tuple((s, ratios[s]) for s in spec.slots), b.kernel))
    return Arch(arch.resolution, tuple(blocks), source_config.name)
