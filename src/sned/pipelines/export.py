"""``sned extract``'s output: a subnet of a supernet as a standalone model folder.

:func:`export_subnet` writes a base model as a diffusers pipeline folder
(:func:`~sned.pipelines.diffusers_pipeline.pipeline_from_denoiser`), an SSR model as a diffusers
model folder, or (``legacy``) the 0.1 layout — with ``arch.json`` and a ``README.md`` model card
(:func:`sned.extract.model_card`, hub front-matter by :func:`sned.extract.front_matter`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from ..cost import decoder_cost
from ..extract import (extract, front_matter, model_card, record_digests, refuse_existing,
                       save_legacy, save_pretrained)
from ..models.codec import FOLDER, save_autoencoder
from ..space import SearchSpace
from ..store.files import atomic_folder
from .diffusers_pipeline import pipeline_from_denoiser

__all__ = ["export_subnet"]


def export_subnet(den, out: str | os.PathLike, overwrite: bool = False,
                  inputs: Iterable = (), legacy: bool = False, ssr=None) -> Path:
    """Extract ``den``'s subnet (a :class:`sned.loading.Denoiser` of a supernet) and save it: a
    base model as a diffusers pipeline folder
    (:func:`sned.pipelines.diffusers_pipeline.pipeline_from_denoiser`:
    ``model_index.json``, ``unet/``, ``scheduler/``, for latent models ``vae/``) with
    ``arch.json`` and a ``README.md`` model card — all in one atomic folder; an SSR model (a
    cascade stage, ``SnedPipeline``'s ``ssr_unet``) as a diffusers model folder
    (:func:`save_pretrained`) with the same two files. ``legacy`` writes
    the 0.1 layout instead (``config.json`` + ``model.safetensors`` + ``autoencoder/``).
    ``ssr``: a :class:`~sned.pipelines.loading.Denoiser` of an SSR model whose subnet becomes
    the pipeline's ``ssr_unet`` (one folder for the whole cascade; its card lists both).
    Refuses an ``out`` the output-folder rule refuses (see :func:`refuse_existing`;
    ``den.source`` always counts as an input)."""
    out = refuse_existing(out, overwrite, [den.source, *inputs,
                                           *([] if ssr is None else [ssr.source])])
    if ssr is not None and (legacy or den.codec is not None or den.config.kind != "base"):
        raise ValueError(f"--ssr: a cascade folder needs a pixel base model and the pipeline "
                         f"layout ({den.source} is {den.config.kind!r}"
                         f"{', latent' if den.codec is not None else ''}"
                         f"{', --legacy' if legacy else ''})")
    space = SearchSpace(den.config)
    card, text = model_card(den, space.cost(den.arch), space.full_params)
    if den.codec is not None:
        dec, frames, res = decoder_cost(den.config, den.arch.resolution)
        card.update(pixel_resolution=res, pixel_frames=frames, decoder_macs=dec.macs,
                    latent=True)
    files = {"README.md": front_matter(card) + text, "arch.json": den.arch.to_json(indent=1)}
    if not legacy and den.config.kind == "ssr":  # a cascade stage: a diffusers model folder
        extra = {"diffusion": den.diffusion.to_dict(), "card": card}
        if den.data is not None:
            extra["data"] = den.data
        return save_pretrained(extract(den.model, den.arch), out, extra=extra, files=files)
    if not legacy:
        if ssr is not None:
            ssr_space = SearchSpace(ssr.config)
            ssr_cost = ssr_space.cost(ssr.arch) if ssr.arch is not None else None
            card["ssr"] = {"config": ssr.config.name, "subnet": ssr.label,
                           "source": ssr.source, "resolution": ssr.resolution,
                           "params": None if ssr_cost is None else ssr_cost.params,
                           "macs": None if ssr_cost is None else ssr_cost.macs}
            files["README.md"] += (f"\nSSR stage (`ssr_unet/`): {ssr.config.name} / {ssr.label} "
                                   f"from `{ssr.source}`"
                                   + ("" if ssr_cost is None else
                                      f", {ssr_cost.params:,} params") + ".\n")
        pipe = pipeline_from_denoiser(den, ssr, card=card)
        with atomic_folder(out) as tmp:
            pipe.save_pretrained(tmp, safe_serialization=True)
            for denoiser in ("unet", "ssr_unet"):  # what every sned load verifies
                if (tmp / denoiser / "config.json").is_file():
                    record_digests(tmp / denoiser / "config.json",
                                   (tmp / denoiser).glob("*.safetensors"))
            for name, content in files.items():
                (tmp / name).write_text(content)
        return out
    static = extract(den.model, den.arch)
    extra = {"diffusion": den.diffusion.to_dict(), "card": card}
    if den.data is not None:  # the training data: held-out evaluation of the folder uses it
        extra["data"] = den.data
    if den.train is not None:  # its training recipe (sned diffnas retrains the same way)
        extra["train"] = den.train
    write_more = None
    if den.codec is not None:  # a latent model carries its decoder and latent stats
        extra["latent"] = {"autoencoder": FOLDER, **den.codec.stats.to_dict()}

        def write_more(tmp: Path) -> None:
            # the whole AE: sampling needs the decoder, the validation loss also the encoder
            save_autoencoder(den.codec.ae, tmp / FOLDER, den.codec.stats)
    return save_legacy(static, out, extra=extra, write_more=write_more, files=files)
