"""Evaluate one preset of a cascade: generate, then measure — shared by ``sned evaluate`` and
``sned quickstart``.

:func:`evaluate_preset` samples ``settings.runs`` × ``settings.n_videos`` prompts through a
loaded cascade (base → SSR → …) and returns one row per reported stage (the final one, or every
stage with ``every_stage``): cost (params, MACs at the stage's resolution; cumulative over the
cascade), seconds per video, then one group of columns per metric.

A metric is a function ``fn(ctx: StageContext) -> dict`` of columns, looked up by name in
:data:`METRICS` (or passed as a callable); adding one is adding a function:

* ``caption``     — caption accuracy on held-out prompts, per attribute, with n and the 95 %
  Wilson interval (pooled over runs);
* ``fvd`` / ``kvd`` — against the run's held-out real set (:func:`sned.heldout.held_out_set`
  of ``settings.data``: a folder's val split, or the synthetic held-out split; run ``r`` draws
  its own), mean ± std over runs;
* ``consistency`` — SSR stages: PSNR of the output downsampled to its input vs that input;
* ``val_loss`` / ``latency`` — of the stage's denoiser at its resolution (val loss on the same
  held-out data).

Generation prompts default to the captions of the held-out real clips, so FVD compares like with
like. ``settings.real_data`` collects the source record of every real set used.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..cost import autoencoder_cost, decoder_cost
from ..data.config import DataConfig
from ..data.heldout import held_out_set
from ..data.synthetic import SyntheticVideoDataset
from ..metrics.caption import caption_accuracy, wilson_interval
from ..metrics.consistency import ssr_consistency
from ..metrics.fvd import compute_features, fvd_kvd, real_set_stats, real_stats
from ..metrics.latency import denoiser_latency, measure_latency
from ..metrics.reconstruction import reconstruction_quality
from ..models.codec import to_latent
from ..models.inputs import example_inputs
from ..pipelines import sample_latent
from ..pipelines.cascade import Stage, generate
from ..pipelines.loading import Denoiser
from ..search.profile import timestep_profile
from ..search.proxy import heldout_proxy
from ..space import SearchSpace
from ..text import TextEncoder
from ..video_io import to_uint8

METRIC_NAMES = ("fvd", "kvd", "caption", "val_loss", "latency", "consistency")
CAPTION_KEYS = ("color", "shape", "direction", "all_correct")


@dataclass
class EvalSettings:
    """What :func:`evaluate_preset` generates and measures.

    Attributes:
        metrics: names from :data:`METRICS` or callables ``fn(ctx) -> dict``.
        prompts: ``prompts(n, run) -> n captions`` (default: the held-out real clips' captions).
        n_videos / runs: videos per run; runs use different prompts, seeds and real sets.
        frames / scheduler / steps / guidance / batch / seed: generation (``steps``: one
            value or one per stage, base first; guidance is the base stage's, SSR stages run
            without guidance).
        every_stage: one row per cascade stage instead of the final one only.
        data: the run's data config (:class:`sned.data.config.DataConfig`; None = the
            synthetic defaults): where the held-out real set, the prompts and the val-loss clips
            come from (:mod:`sned.heldout`).
        detector / real_videos / cache: FVD/KVD — the feature detector, optionally a custom
            ``real_videos(res, frames, n, run) -> (key, iterable of uint8 (T, H, W, 3))``
            instead of the held-out set, and the stats cache.
        val_videos: held-out clips of the validation-loss proxy.
        real_data: filled in: ``{"fvd": [source records], "val_loss": [...]}``.
        latency_repeats: timed forwards per latency measurement.
    """

    metrics: Sequence[str | Callable] = ("caption", "val_loss", "latency")
    prompts: Callable[[int, int], list[str]] | None = None
    n_videos: int = 64
    runs: int = 1
    frames: int | None = None
    scheduler: str = "ddim"
    steps: int | Sequence[int] = 50
    guidance: float = 5.0
    batch: int = 16
    seed: int = 0
    every_stage: bool = False
    detector: Any = None
    real_videos: Callable[[int, int, int, int], tuple[str, Iterable]] | None = None
    cache: Path | None = None
    val_videos: int = 32
    latency_repeats: int = 10
    progress: bool = True
    _encoders: dict = field(default_factory=dict, repr=False)
    data: Any = None
    real_data: dict = field(default_factory=dict)

    def held_out(self, n: int, frames: int, resolution: int, run: int = 0):
        """The held-out real set of draw ``run`` (see :func:`sned.heldout.held_out_set`)."""
        return held_out_set(self.data or DataConfig(), n, frames, resolution, seed=run)

    def record(self, metric: str, source: dict) -> None:
        """Remember the source record of a real set ``metric`` used (once each)."""
        seen = self.real_data.setdefault(metric, [])
        if source not in seen:
            seen.append(source)

    def text_encoder(self, max_length: int, device: torch.device):
        """One frozen text encoder per (length, device), shared by every preset and metric."""
        key = (max_length, str(device))
        if key not in self._encoders:
            self._encoders[key] = TextEncoder(max_length=max_length, device=str(device))
        return self._encoders[key]


@dataclass
class StageContext:
    """What a metric sees: one cascade stage of one preset, all runs.

    ``videos[r]`` / ``inputs[r]``: uint8 (N, T, R, R, 3) output of this stage in run ``r`` and
    the video it was conditioned on (None for the base stage); ``prompts[r]``: its captions.
    ``resolution`` / ``frames`` are the videos'; a latent denoiser runs at
    :attr:`unet_resolution` / :attr:`unet_frames` (the autoencoder's factors smaller).
    """

    preset: str
    index: int
    den: Denoiser
    resolution: int
    frames: int
    prompts: list[list[str]]
    videos: list[np.ndarray]
    inputs: list[np.ndarray] | None
    settings: EvalSettings
    cache: dict = field(default_factory=dict)

    @property
    def unet_resolution(self) -> int:
        if self.den.codec is None:
            return self.resolution

        return to_latent(self.den.config, self.resolution)[0]

    @property
    def unet_frames(self) -> int:
        if self.den.codec is None:
            return self.frames
        return self.den.codec.latent_frames(self.frames)

    @property
    def arch(self):
        """The arch to pass the denoiser (None for extracted models)."""
        return None if self.den.arch is None else self.den.arch.at(self.unet_resolution)

    @property
    def device(self) -> torch.device:
        return next(self.den.model.parameters()).device

    def encoder(self):
        """The shared text encoder for this stage's config."""
        return self.settings.text_encoder(self.den.config.text_len, self.device)


def _mean_std(values: list[float]) -> float | dict:
    if len(values) == 1:
        return float(values[0])
    return {"mean": float(np.mean(values)), "std": float(np.std(values))}


# --------------------------------------------------------------------------------- metrics
def caption_metric(ctx: StageContext) -> dict:
    """Caption accuracy over all runs' videos: ``caption_<attr>`` (fraction), ``caption_n`` and
    ``caption_ci`` ({attr: [lo, hi]}, 95 % Wilson). ``caption_all`` = every attribute right."""
    if not ctx.den.config.conditional:
        return {"caption_all": None}  # unconditional: nothing to follow
    if ctx.settings.data is not None and ctx.settings.data.kind != "synthetic":
        return {"caption_all": None}  # the analytic detector reads the synthetic captions only
    videos = np.concatenate(ctx.videos)
    prompts = [p for run in ctx.prompts for p in run]
    acc = caption_accuracy(videos, prompts)
    n = int(acc["n"])
    row: dict[str, Any] = {"caption_n": n, "caption_ci": {}}
    for key in CAPTION_KEYS:
        name = "all" if key == "all_correct" else key
        row[f"caption_{name}"] = float(acc[key])
        row["caption_ci"][name] = list(wilson_interval(round(acc[key] * n), n))
    return row


def fvd_metric(ctx: StageContext) -> dict:
    """FVD and KVD per run against the run's held-out real set (mean ± std over runs)."""
    s = ctx.settings
    if s.detector is None:
        raise ValueError("FVD/KVD need a detector (EvalSettings.detector)")
    cache = s.cache or Path(".sned-cache")
    fvd, kvd = [], []
    for run, fake in enumerate(ctx.videos):
        if s.real_videos is not None:
            key, videos = s.real_videos(ctx.resolution, ctx.frames, len(fake), run)
            real = real_stats(key, ctx.resolution, ctx.frames, len(fake), lambda: videos,
                              cache, s.detector, device=ctx.device)
        else:
            held = s.held_out(len(fake), ctx.frames, ctx.resolution, run)
            s.record("fvd", held.source)
            real = real_set_stats(held, cache, s.detector, device=ctx.device)
        fake_stats = compute_features([fake], s.detector, device=ctx.device, keep_features=True)
        scores = fvd_kvd(real, fake_stats, seed=run)
        fvd.append(float(scores["fvd"]))
        if scores.get("kvd") is not None:
            kvd.append(float(scores["kvd"]))
    return {"fvd": _mean_std(fvd), "kvd": _mean_std(kvd) if kvd else None}


def consistency_metric(ctx: StageContext) -> dict:
    """SSR stages: mean PSNR (dB) of the output downsampled to its input vs that input, over
    ``ssr_psnr_n`` videos, with a 95 % normal interval of the mean (``ssr_psnr_ci``)."""
    if ctx.inputs is None:
        return {"ssr_psnr_db": None}
    db = np.concatenate([ssr_consistency(o, i) for o, i in zip(ctx.videos, ctx.inputs)])
    if db.size < 2:  # no interval from one video
        return {"ssr_psnr_db": float(db.mean()), "ssr_psnr_n": int(db.size), "ssr_psnr_ci": None}
    half = 1.959964 * db.std(ddof=1) / np.sqrt(db.size)
    return {"ssr_psnr_db": float(db.mean()), "ssr_psnr_n": int(db.size),
            "ssr_psnr_ci": [float(db.mean() - half), float(db.mean() + half)]}


def held_out_proxy(den: Denoiser, settings: EvalSettings, resolution: int, frames: int,
                   n_videos: int | None = None, pairs_per_clip: int = 1):
    """The validation-loss proxy (:func:`sned.search.proxy.heldout_proxy`) of ``den``'s model on
    ``n_videos`` (default ``settings.val_videos``) held-out clips of ``settings.data`` at the
    denoiser's ``resolution`` / ``frames``, recorded as the ``val_loss`` real set."""
    device = next(den.model.parameters()).device
    enc = (settings.text_encoder(den.config.text_len, device) if den.config.conditional
           else None)
    proxy = heldout_proxy(den.model, den.diffusion, resolution,
                          n_videos=n_videos or settings.val_videos, frames=frames,
                          data=settings.data, text_encoder=enc, codec=den.codec,
                          pairs_per_clip=pairs_per_clip)
    settings.record("val_loss", proxy.source)
    return proxy


def val_loss_metric(ctx: StageContext) -> dict:
    """Validation-loss proxy of the stage's denoiser on the held-out real clips."""
    proxy = held_out_proxy(ctx.den, ctx.settings, ctx.unet_resolution, ctx.unet_frames)
    return {"val_loss": proxy(ctx.arch)}


def per_timestep_profile(den: Denoiser, archs: dict, settings: EvalSettings, resolution: int,
                         frames: int, buckets: int = 10, pairs_per_clip: int = 8,
                         n_videos: int | None = None) -> dict:
    """The per-timestep profile (:func:`sned.search.profile.timestep_profile`) of ``archs``
    (label → arch of ``den``'s supernet; None = an extracted model itself) on the same
    ``n_videos × pairs_per_clip`` held-out (clip, t, noise) pairs; differences against the
    last label (put B last). ``resolution`` / ``frames`` are the denoiser's."""
    proxy = held_out_proxy(den, settings, resolution, frames, n_videos, pairs_per_clip)
    space = SearchSpace(den.config)
    costs = {}
    for k, a in archs.items():
        c = space.cost(a if a is not None else den.arch_at(resolution), resolution, frames)
        costs[k] = {"params": c.params, "macs": c.macs}
    return timestep_profile(proxy, {k: None if a is None else a.at(resolution)
                                    for k, a in archs.items()}, buckets, costs=costs)


def latency_metric(ctx: StageContext) -> dict:
    """Median ms of one denoiser forward (batch 1) at the stage's resolution; latent models
    add ``decode_ms`` (one decoder forward) and ``latency_total_ms`` = steps × forward + decode
    (what sampling one video costs)."""
    kw = example_inputs(ctx.den.model, batch=1, resolution=ctx.unet_resolution,
                        frames=ctx.unet_frames, seed=ctx.index)
    warm, reps = min(3, ctx.settings.latency_repeats), ctx.settings.latency_repeats
    row = {"latency_ms": denoiser_latency(ctx.den.model, ctx.arch, kw, warmup=warm,
                                          repeats=reps)}
    if ctx.den.codec is not None:
        z = torch.randn(1, ctx.den.config.in_channels, ctx.unet_frames, ctx.unet_resolution,
                        ctx.unet_resolution, device=ctx.device)
        row["decode_ms"] = measure_latency(lambda: ctx.den.codec.decode(z), warm, reps)
        row["latency_total_ms"] = ctx.settings.steps * row["latency_ms"] + row["decode_ms"]
    return row


METRICS: dict[str, Callable[[StageContext], dict]] = {
    "caption": caption_metric, "fvd": fvd_metric, "kvd": fvd_metric,
    "consistency": consistency_metric, "val_loss": val_loss_metric, "latency": latency_metric}


# --------------------------------------------------------------------------------- the routine
def check_metrics(metrics: Sequence[str | Callable]) -> None:
    """ValueError naming the first unknown metric name."""
    bad = [m for m in metrics if not callable(m) and m not in METRICS]
    if bad:
        raise ValueError(f"--metrics: unknown {bad[0]!r}; choose from {list(METRICS)}")


def _generate(base: Denoiser, ssr: list[Denoiser], settings: EvalSettings, keep: set[int]
              ) -> tuple[list[list[str]], dict[int, list[np.ndarray]], list[float], int]:
    """Prompts per run, uint8 stage outputs per run for the stages in ``keep``, seconds per
    video and the frame count."""
    enc = (settings.text_encoder(base.config.text_len, next(base.model.parameters()).device)
           if base.config.conditional else None)
    frames = settings.frames or (base.config.frames if base.codec is None
                                 else base.codec.pixel_frames(base.config.frames))
    res = base.resolution or base.config.resolutions[0]
    if base.codec is not None:  # the held-out clips are videos: pixel units
        res *= base.codec.config.spatial_factor
    make_prompts = settings.prompts or (  # the captions of the held-out real clips
        lambda n, run: settings.held_out(n, frames, res, run).captions())
    prompts, outputs, seconds = [], {j: [] for j in keep}, []
    for run in range(settings.runs):
        texts = make_prompts(settings.n_videos, run)
        per_stage: dict[int, list[np.ndarray]] = {j: [] for j in keep}
        for i in range(0, len(texts), settings.batch):
            t0 = time.perf_counter()
            if base.codec is not None:  # latent: denoise + decode (no SSR after it)
                stages = [_latent_videos(base, enc, texts[i:i + settings.batch], settings,
                                         frames, settings.seed + run * 100_000 + i)]
                seconds.append((time.perf_counter() - t0) / stages[0].shape[0])
                for j in keep:
                    per_stage[j].append(to_uint8(stages[j]))
                continue
            emb, mask = enc.encode(texts[i:i + settings.batch])
            t0 = time.perf_counter()
            _, stages = generate(emb, mask, base=Stage.from_denoiser(base),
                                 ssr=[Stage.from_denoiser(s) for s in ssr] or None,
                                 scheduler=settings.scheduler, steps=settings.steps,
                                 guidance_scale=[settings.guidance] + [1.0] * len(ssr),
                                 frames=frames, seed=settings.seed + run * 100_000 + i,
                                 progress=settings.progress, return_stages=True)
            seconds.append((time.perf_counter() - t0) / emb.shape[0])
            for j in keep:
                per_stage[j].append(to_uint8(stages[j]))
        prompts.append(texts)
        for j in keep:
            outputs[j].append(np.concatenate(per_stage[j]))
    return prompts, outputs, seconds, frames


def _latent_videos(base: Denoiser, enc, texts: list[str], settings: EvalSettings, frames: int,
                   seed: int):

    emb, mask = enc.encode(texts) if enc is not None else (None, None)
    return sample_latent(base.model, base.codec, emb, mask, batch=len(texts), arch=base.arch,
                         diffusion=base.diffusion, frames=frames, steps=settings.steps,
                         guidance_scale=settings.guidance, seed=seed,
                         progress=settings.progress)


def evaluate_preset(label: str, base: Denoiser, ssr: list[Denoiser], settings: EvalSettings,
                    on_stage: Callable[[StageContext], None] | None = None) -> list[dict]:
    """Rows of one preset: the final stage, or every stage (base first) with ``every_stage``.

    Every row has ``preset``, ``resolution``, ``stage`` (config name), ``params`` / ``macs`` of
    the stage's denoiser (one forward, batch 1, at its resolution and frames),
    ``cascade_params`` / ``cascade_macs`` (distinct weights counted once), ``sample_s``
    (seconds per video for the whole cascade, on the final row) and the metrics' columns.
    ``on_stage(ctx)`` is called for every reported stage (e.g. to write its videos).
    """
    check_metrics(settings.metrics)
    dens = [base] + list(ssr)
    last = len(dens) - 1
    report = list(range(len(dens))) if settings.every_stage else [last]
    keep = set(report) | {j - 1 for j in report if j > 0}
    prompts, outputs, seconds, frames = _generate(base, ssr, settings, keep)
    base_res = base.resolution or base.config.resolutions[0]
    rows, counted, cum_params, cum_macs = [], set(), 0, 0
    for j, den in enumerate(dens):
        res = base_res * 2 ** j
        unet_frames = frames if den.codec is None else den.codec.latent_frames(frames)
        cost = SearchSpace(den.config).cost(den.arch_at(res), frames=unet_frames)
        latent = {}
        if den.codec is not None:  # cost at the latent size; the row speaks video units

            dec, _, res = decoder_cost(den.config, res, unet_frames)
            latent = {"latent_resolution": base_res, "decoder_macs": dec.macs}
        weights = (id(den.model), None if den.arch is None else den.arch.blocks)
        if weights not in counted:
            counted.add(weights)
            cum_params += cost.params
        cum_macs += cost.macs
        if j not in report:
            continue
        ctx = StageContext(label, j, den, res, frames, prompts, outputs[j],
                           outputs[j - 1] if j else None, settings)
        row: dict[str, Any] = {"preset": label, "resolution": res, "stage": den.config.name,
                               "params": cost.params, "macs": cost.macs,
                               "cascade_params": cum_params, "cascade_macs": cum_macs,
                               "sample_s": float(np.median(seconds)) if j == last else None,
                               **latent}
        done: set[Callable] = set()
        for m in settings.metrics:
            fn = m if callable(m) else METRICS[m]
            if fn not in done:
                done.add(fn)
                row.update(fn(ctx))
        if on_stage is not None:
            on_stage(ctx)
        rows.append(row)
    return rows


def evaluate_autoencoder(ae, frames: int | None = None, n_videos: int = 16,
                         resolutions: Sequence[int] | None = None) -> list[dict]:
    """Reconstruction PSNR / SSIM of an autoencoder on the synthetic held-out split, one row
    per resolution (default: the ones it was trained at), with its encoder / decoder MACs."""
    cfg = ae.config
    frames = frames or cfg.frames
    rows = []
    for res in resolutions or cfg.resolutions:
        data = SyntheticVideoDataset(n_videos, frames, res, seed=50_000, split="held_out")
        videos = torch.stack([data[i]["video"] for i in range(n_videos)])
        rows.append({"resolution": res, "frames": frames, "n": n_videos,
                     **reconstruction_quality(ae, videos),
                     "encoder_macs": autoencoder_cost(cfg, "encoder", frames, res).macs,
                     "decoder_macs": autoencoder_cost(cfg, "decoder", frames, res).macs})
    return rows
