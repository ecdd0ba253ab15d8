"""sned — one weight-sharing video-diffusion supernet, many models (SNED + DiffNAS).

Python entry points::

    sned.build_supernet(config)          # VideoUNet supernet; forward(..., arch=)
    sned.search_space(config)            # SearchSpace: .preset("S" | 0.75), .sample(rng), .cost(arch)
    sned.extract(supernet, arch)         # plain model of exactly the active sizes
    sned.save_pretrained(model, folder)  # config.json + model.safetensors
    sned.load_pretrained(folder)         # rebuilds a saved model without the supernet
    sned.example_inputs(model, ...)      # keyword arguments of a valid forward call
    sned.SnedPipeline.from_pretrained(folder)  # a diffusers pipeline: pipe(prompt).frames

``VideoUNet`` and ``VideoAutoencoder`` are diffusers models (``from_pretrained`` /
``save_pretrained``); ``model_index.json`` files name them as ``["sned", "VideoUNet"]``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings

from .arch import Arch, ArchError, BlockArch
from .config import ConfigError, ModelConfig, load_config
from .cost import Cost, model_cost
from .extract import extract, load_pretrained, save_pretrained
from diffusers import ModelMixin  # noqa: F401 — diffusers' loader finds the base class of a
# ["sned", "VideoUNet"] component in the library itself (``sned.ModelMixin``)

from .models.autoencoder import VideoAutoencoder
from .models.inputs import example_inputs
from .models.unet import VideoUNet
from .space import PRESETS, SearchSpace, parse_preset, search_space
from .store.files import CheckpointError

__version__ = "0.1.0"

# Module paths before the 0.2 layout (docs/design.md, "Layers") → where they live now. Importing an
# old path still works for one release and warns; it gives the very same module object.
MOVED_MODULES = {
    "sned.files": "sned.store.files",
    "sned.train.checkpoint": "sned.store.checkpoint",
    "sned.latent": "sned.models.codec",
    "sned.inputs": "sned.models.inputs",
    "sned.heldout": "sned.data.heldout",
    "sned.metrics.val_loss": "sned.search.proxy",
    "sned.generation": "sned.pipelines.generation",
    "sned.loading": "sned.pipelines.loading",
    "sned.evaluation": "sned.app.evaluation",
    "sned.quickstart": "sned.app.quickstart",
    "sned.quickstart_latent": "sned.app.quickstart_latent",
    "sned.study": "sned.app.study",
    "sned.study_report": "sned.app.study_report",
    "sned.cli_args": "sned.cli.args",
    "sned.cli_train": "sned.cli.train",
    "sned.cli_generate": "sned.cli.generate",
    "sned.cli_evaluate": "sned.cli.evaluate",
    "sned.cli_quickstart": "sned.cli.quickstart",
    "sned.cli_diffnas": "sned.cli.diffnas",
    "sned.cli_study": "sned.cli.study",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves an old module path (:data:`MOVED_MODULES`) to the module at its new path."""

    def __init__(self) -> None:
        self._specs: dict[str, importlib.machinery.ModuleSpec] = {}

    def find_spec(self, name, path=None, target=None):
        if name not in MOVED_MODULES:
            return None
        return importlib.util.spec_from_loader(name, self)

    def create_module(self, spec):
        new = MOVED_MODULES[spec.name]
        warnings.warn(f"{spec.name} moved to {new}; the old path goes away in the next release",
                      DeprecationWarning, stacklevel=3)
        module = importlib.import_module(new)
        self._specs[new] = module.__spec__  # the import system overwrites it with the alias's
        return module

    def exec_module(self, module):  # the module is the new one, already executed
        module.__spec__ = self._specs[module.__name__]


if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())


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




def __getattr__(name: str):
    """The pipelines load lazily (``import sned`` stays light)."""
    if name in ("SnedPipeline", "SnedLatentPipeline"):
        from .pipelines import diffusers_pipeline
        return getattr(diffusers_pipeline, name)
    raise AttributeError(f"module 'sned' has no attribute {name!r}")


__all__ = ["Arch", "ArchError", "BlockArch", "CheckpointError", "ConfigError", "Cost",
           "ModelConfig", "PRESETS", "SearchSpace", "SnedLatentPipeline", "SnedPipeline",
           "VideoAutoencoder", "VideoUNet", "build_supernet",
           "example_inputs", "extract", "load_config", "load_pretrained", "model_cost",
           "parse_preset", "save_pretrained", "search_space"]
