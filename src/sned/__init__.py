"""sned — one weight-sharing video-diffusion supernet, many models (SNED + DiffNAS).

Python entry points::

    sned.build_supernet(config)          # VideoUNet supernet; forward(..., arch=)
    sned.search_space(config)            # SearchSpace: .preset("S" | 0.75), .sample(rng), .cost(arch)
    sned.extract(supernet, arch)         # plain model of exactly the active sizes
    sned.save_pretrained(model, folder)  # config.json + model.safetensors
    sned.load_pretrained(folder)         # rebuilds a saved model without the supernet
    sned.example_inputs(model, ...)      # keyword arguments of a valid forward call
"""

from __future__ import annotations

from .arch import Arch, ArchError, BlockArch
from .config import ConfigError, ModelConfig, load_config
from .cost import Cost, model_cost
from .extract import extract, load_pretrained, save_pretrained
from .files import CheckpointError
from .inputs import example_inputs
from .models.unet import VideoUNet
from .space import PRESETS, SearchSpace, parse_preset, search_space

__version__ = "0.1.0"


def build_supernet(config: ModelConfig | str, overrides: list[str] | None = None,
                   device=None, dtype=None) -> VideoUNet:
    """Build the supernet of ``config`` (built-in name, YAML path or ModelConfig).

    Use ``device="meta"`` to inspect a large config without allocating its weights.
    """
    import torch

    cfg = load_config(config, overrides)
    with torch.device(device or "cpu"):
        model = VideoUNet(cfg)
    return model if dtype is None else model.to(dtype)


__all__ = ["Arch", "ArchError", "BlockArch", "CheckpointError", "ConfigError", "Cost",
           "ModelConfig", "PRESETS", "SearchSpace", "VideoUNet", "build_supernet",
           "example_inputs", "extract", "load_config", "load_pretrained", "model_cost",
           "parse_preset", "save_pretrained", "search_space"]
