"""Generation pipelines: one-model sampling and the base → SSR → SSR cascade.

    from sned.pipelines import sample, generate, Stage

* :func:`sample` — DDIM / DPM-Solver++ / DDPM sampling of one denoiser (supernet + arch or an
  extracted model), classifier-free guidance, dynamic thresholding, SSR conditioning.
* :func:`generate` with :class:`Stage` — the Imagen-style cascade to a final resolution.
* :func:`sample_latent` — latent denoising then decoding through the autoencoder.
* :func:`compile_model` — ``torch.compile`` an extracted (static) model for serving.
"""

from __future__ import annotations

from .cascade import SEED_STRIDE, CascadeError, Stage, cascade_resolutions, generate
from .compiled import compile_model
from .latent import sample_latent
from .sampling import SeedLike, default_resolution, generators, initial_noise, sample

__all__ = ["CascadeError", "compile_model", "SEED_STRIDE", "SeedLike", "Stage", "cascade_resolutions",
           "default_resolution", "generate", "generators", "initial_noise", "sample", "sample_latent"]
