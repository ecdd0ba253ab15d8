"""Compiled serving: ``torch.compile`` of extracted (static) models.

A supernet cannot be compiled usefully — every arch is another graph, so it would recompile
per subnet — but an extracted model runs one fixed set of plain layers, which is what users
deploy. :func:`compile_model` compiles such a model's forward in place (``nn.Module.compile``,
static shapes), so it stays a :class:`~sned.models.unet.VideoUNet` every sampler takes; the
first call of each input shape compiles (seconds to minutes), later calls reuse the graph.
Sampling a fixed batch and resolution keeps one shape for every denoising step.

Outputs equal eager execution within float rounding (``tests/test_compile.py``: a forward
within 1e-4 of eager, sampled frames within 1e-3; inductor fuses and reorders float ops).
"""

from __future__ import annotations

from ..models.unet import VideoUNet


def compile_model(model: VideoUNet, mode: str | None = None) -> VideoUNet:
    """Compile an extracted model's forward in place and return it.

    Args:
        model: an extracted model (:func:`sned.extract`, :func:`sned.load_pretrained`).
        mode: ``torch.compile`` mode (None = default; ``"max-autotune"`` on a GPU).
    Raises:
        TypeError for a supernet (extract the arch first: :meth:`sned.loading.Denoiser.
        compiled` does).
    """
    if not isinstance(model, VideoUNet):
        raise TypeError(f"compile_model takes a sned VideoUNet (got {type(model).__name__})")
    if model.is_supernet:
        raise TypeError("compile_model compiles extracted (static) models; a supernet would "
                        "recompile for every arch — pass sned.extract(supernet, arch)")
    model.compile(dynamic=False, mode=mode)
    return model
