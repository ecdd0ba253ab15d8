"""Generation pipelines: one-model sampling and the base → SSR → SSR cascade.

    from sned.pipelines import sample, generate, Stage

* :func:`sample` — DDIM / DPM-Solver++ / DDPM sampling of one denoiser (supernet + arch or an
  extracted model), classifier-free guidance, dynamic thresholding, SSR conditioning.
* :func:`generate` with :class:`Stage` — the Imagen-style cascade to a final resolution.
* :func:`sample_latent` — latent denoising then decoding through the autoencoder.
* :func:`compile_model` — ``torch.compile`` an extracted (static) model for serving.
* :class:`SnedPipeline` / :class:`SnedLatentPipeline` — the same as diffusers pipelines
  (:mod:`.diffusers_pipeline`, loaded on first use).
"""

from __future__ import annotations

from .cascade import SEED_STRIDE, CascadeError, Stage, cascade_resolutions, generate
from .compiled import compile_model
from .latent import sample_latent
from .sampling import SeedLike, default_resolution, generators, initial_noise, sample


def __getattr__(name: str):
    if name in ("SnedPipeline", "SnedLatentPipeline", "SnedPipelineOutput"):
        from . import diffusers_pipeline
        return getattr(diffusers_pipeline, name)
    raise AttributeError(f"module 'sned.pipelines' has no attribute {name!r}")


__all__ = ["CascadeError", "SnedLatentPipeline", "SnedPipeline", "compile_model", "SEED_STRIDE",
           "SeedLike", "Stage", "cascade_resolutions",
           "default_resolution", "generate", "generators", "initial_noise", "sample", "sample_latent"]
