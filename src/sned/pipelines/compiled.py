"""Compiled serving: ``torch.compile`` of extracted (static) models.

A supernet cannot be compiled usefully — every arch is another graph, so it would recompile
per subnet — but an extracted model runs one fixed set of plain layers, which is what users
deploy. :func:`compile_model` compiles such a model's forward in place (``nn.Module.compile``,
static shapes), so it stays a :class:`~sned.models.unet.VideoUNet` every sampler takes; the
first call of each input shape compiles (seconds to minutes), later calls reuse the graph.
Sampling a fixed batch and resolution keeps one shape for every denoising step, so on CUDA the
default mode is ``"reduce-overhead"``: the whole forward is captured as a CUDA graph and
replayed each step (one launch instead of hundreds — what makes a small subnet as fast as
its FLOPs say). :func:`sned.pipelines.sample` marks each step for the graph trees and copies
the output before the next replay overwrites it.

Outputs equal eager execution within float rounding (``tests/test_compile.py``: a forward
within 1e-4 of eager, sampled frames within 1e-3; inductor fuses and reorders float ops).
"""

from __future__ import annotations

import importlib.util
import shutil

import torch

from ..models.unet import VideoUNet

MODES = ("auto", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class CompileUnavailable(RuntimeError):
    """torch.compile's inductor backend cannot build kernels on this machine."""


def resolve_mode(mode: str | None, device: torch.device) -> str | None:
    """``"auto"``: ``"reduce-overhead"`` (CUDA graphs) on CUDA, inductor's default elsewhere
    (None); ``"default"`` → None; other modes as given."""
    if mode not in MODES and mode is not None:
        raise ValueError(f"compile mode {mode!r} is not one of {', '.join(MODES)}")
    if mode == "auto":
        return "reduce-overhead" if device.type == "cuda" else None
    return None if mode == "default" else mode


def check_compilable(device: torch.device) -> None:
    """Raise :class:`CompileUnavailable` (one line, what is missing) when inductor cannot
    build kernels for ``device``: a C++ compiler on CPU, Triton on CUDA."""
    if device.type == "cuda":
        if importlib.util.find_spec("triton") is None:
            raise CompileUnavailable("--compile on CUDA needs Triton (pip install triton); "
                                     "sample without --compile")
        return
    from torch._inductor import config

    cxx = config.cpp.cxx
    names = [c for c in (cxx if isinstance(cxx, (tuple, list)) else (cxx,)) if c]
    if not any(shutil.which(c) for c in names + ["g++", "c++", "clang++"]):
        raise CompileUnavailable("--compile on the CPU needs a C++ compiler (g++ or clang++) "
                                 "for torch.compile's kernels; install one or sample "
                                 "without --compile")


def compile_model(model: VideoUNet, mode: str | None = "auto") -> VideoUNet:
    """Compile an extracted model's forward in place and return it.

    Args:
        model: an extracted model (:func:`sned.extract`, :func:`sned.load_pretrained`), on the
            device it will run on.
        mode: ``torch.compile`` mode: ``"auto"`` (default: ``"reduce-overhead"`` — CUDA graphs
            — on CUDA, the default mode on CPU), ``"default"``/None, or any torch mode.
    Raises:
        TypeError for a supernet (extract the arch first: :meth:`sned.loading.Denoiser.
        compiled` does); :class:`CompileUnavailable` when inductor cannot build kernels here.
    """
    if not isinstance(model, VideoUNet):
        raise TypeError(f"compile_model takes a sned VideoUNet (got {type(model).__name__})")
    if model.is_supernet:
        raise TypeError("compile_model compiles extracted (static) models; a supernet would "
                        "recompile for every arch — pass sned.extract(supernet, arch)")
    device = next(model.parameters()).device
    resolved = resolve_mode(mode, device)
    check_compilable(device)
    model.compile(dynamic=False, mode=resolved)
    model.__dict__["_sned_compile_mode"] = resolved or "default"
    return model


def uses_cuda_graphs(model: torch.nn.Module) -> bool:
    """Whether ``model`` (or a subnet of a schedule's :class:`~sned.schedule.folder.
    ScheduledSubnets`) was compiled on CUDA to replay CUDA graphs: its outputs live in the
    graph's memory until the next replay."""
    models = list(getattr(model, "subnets", None) or []) + [model]
    return any(m.__dict__.get("_sned_compile_mode") in ("reduce-overhead", "max-autotune")
               and next(m.parameters()).device.type == "cuda" for m in models)
