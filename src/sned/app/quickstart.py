"""``sned quickstart``: the whole SNED workflow on the embedded synthetic data, in minutes.

1. train a tiny base supernet (16/32 px) and a tiny SSR supernet (32/64 px) — super-position
   training with the sampling warm-up, exact freezing and EMA — within a wall-time budget;
2. extract the S/M/L/B subnets of both as standalone model folders;
3. generate training-split prompts and the held-out prompts (combinations the training split
   never shows) with every preset through base 16 px → SSR 32 px, and a few held-out clips'
   captions on through SSR 64 px (:func:`evaluate_presets`);
4. measure, per resolution and preset (:func:`sned.app.evaluation.evaluate_preset`): params, MACs,
   denoiser latency, sampling time, validation loss (and at initialisation), caption accuracy
   per attribute and the temporal coherence of the object's track (:mod:`sned.metrics.coherence`)
   with n and 95 % intervals for each prompt set, each SSR stage's consistency with its input
   (with its interval) and, at 64 px, FVD/KVD with the Kinetics-400 I3D;
5. the latent section (:mod:`sned.app.quickstart_latent`): a tiny video autoencoder and a tiny
   latent supernet on its latents, presets B / 0.75 / 0.5 with decoder cost and AE PSNR;
6. write ``report.md`` / ``report.html``: one section function per part (:data:`SECTIONS`).

Every training stage has a minimum of steps (:data:`MIN_STEPS`): on a busy machine the stage
trains its minimum even if that takes longer than the budget, or stops before training with a
one-line message when even the minimum would take far longer
(:class:`~sned.app.timed_training.TooSlow`); the report lists the steps every model trained and
flags any model below its minimum (e.g. ``--max-steps`` smoke runs) as under-trained.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..data.heldout import describe_source, run_data_config
from ..data.synthetic import held_out_prompts, sample_prompts
from ..device import resolve_device
from ..metrics.coherence import coherence_columns
from ..pipelines.export import export_subnet
from ..metrics.i3d import I3DWeightsMissing, load_i3d
from ..models.unet import VideoUNet
from ..pipelines.loading import load_denoiser
from ..report import (CAPTION_COLUMNS, COHERENCE_COLUMNS, plot_cost_quality, plot_loss_curve,
                      write_report)
from ..search.proxy import heldout_proxy
from ..store.files import QUICKSTART, check_output, remove_entries, write_json
from ..train.config import load_run_config
from ..video_io import write_frame_grid, write_video
from .evaluation import EvalSettings, evaluate_preset
from .quickstart_latent import LATENT_MIN_STEPS, run_latent
from .quickstart_latent import section_latent as latent
from .timed_training import train_for

# 8-frame clips (the configs' length) and small batches keep a 2-core CPU busy with many small
# steps: the supernets need several hundred steps to draw coloured moving shapes.
_COMMON = ["data.num_videos=4096", "train.lr=1e-3", "train.lr_warmup_steps=20",
           "train.ema_decay=0.995", "train.checkpoint_every=200", "train.log_every=5",
           "train.draw=uniform", "train.inplace_distill=false"]
"""The supernets keep issue 18's recipe (per-layer draws, no distillation): issue 26's default
(family draws + distillation) is not yet measured in the quickstart, and with it the base stage's
steps took 1.6–1.9× as long here (0.61 / 0.38 s vs 0.33 / 0.25 s per step in / after the warm-up,
2-core CPU, 2026-12-07; larger draws and the teacher's forward), pushing the main job past 10
minutes with its minimum steps."""
QUICK_BASE = _COMMON + ["model.resolutions=[16]", "train.batch_size=4"]
"""The base supernet trains at 16 px only — the resolution the cascade samples it at — with batch
4 (twice the steps of batch 8 for the same compute); the measurements behind both choices are in
docs/results.md. Super-position is shown by the SSR supernet (32 and 64 px)."""
QUICK_SSR = _COMMON + ["train.batch_size=4", "train.batch_size_per_resolution={64: 1}"]
PRESETS = ("S", "M", "L", "B")
TRAIN_SHARE = 0.55
"""Share of the wall-time budget spent training (base :data:`BASE_SHARE` of it, the SSR the
rest; the latent section's :data:`LATENT_SHARE` included)."""
BASE_SHARE = 0.7
"""The base needs the steps (captions); the residual SSR follows its input early."""
SAMPLE_STEPS = 10
"""DPM-Solver++ (2M) steps of the base stage."""
SSR_STEP_SHARE = 0.3
"""SSR stages start from a conditioning video and take this share of the base's steps (the
residual SSR follows its input better with fewer: 3 steps gave 28.0 dB at 32 px vs 27.8 with 6)."""
GUIDANCE = 5.0
"""Classifier-free guidance of the base stage."""
TRAIN_PROMPTS = 36
"""Training-split prompts sampled per preset (``sample_prompts(…, split="train")``)."""
LATENT_SHARE = 0.1
"""Share of the wall-time budget of the latent section (:mod:`sned.app.quickstart_latent`), taken
from the pixel supernets' training time."""


MIN_STEPS = {"base": 800, "ssr": 100, **LATENT_MIN_STEPS}
"""Training steps each model needs before its numbers mean anything; a stage trains at least
this many whatever the clock says. Base: a standalone B's objects stop jumping between 200 and
500 of its own steps, and the supernet gives B about half of its steps (the warm-up third, then
one in four; docs/results.md, issue 31). SSR / AE / latent: below the step counts an idle
2-core machine plans in the budget (≈ 130 / 170 / 290), above the fewest that gave usable
results."""


@dataclass
class Budget:
    """Wall-time plan for the run (seconds)."""

    total: float
    start: float

    def left(self) -> float:
        return self.total - (time.monotonic() - self.start)

    def elapsed_min(self) -> float:
        return (time.monotonic() - self.start) / 60


@dataclass
class Quickstart:
    """Everything the report sections read."""

    out: Path
    budget: Budget
    prompts: list[str]
    rows: list[dict] = field(default_factory=list)
    media: dict[int, list] = field(default_factory=dict)
    fvd: dict = field(default_factory=dict)  # detector, real data, n, frames (or why skipped)
    latent: dict | None = None
    train_prompts: list[str] = field(default_factory=list)  # training-split combinations
    training: dict[str, dict] = field(default_factory=dict)  # model → steps, minimum


def _say(msg: str) -> None:
    print(f"[quickstart] {msg}", flush=True)


# --------------------------------------------------------------------------------- training
def train_supernet(name: str, config: str, overrides: list[str], out: Path, seconds: float,
                   device: torch.device, max_steps: int | None = None,
                   min_steps: int = 0) -> int:
    """Train ``config`` for about ``seconds`` and at least ``min_steps`` steps
    (:func:`~sned.app.timed_training.train_for`: the steps planned from measured steps, the
    warm-up their first third); returns the steps trained."""
    return train_for(config, overrides, out, seconds, device, max_steps, progress=True,
                     say=lambda msg: _say(f"{name} supernet: {msg}"), min_steps=min_steps)


def _initial_supernet(run_dir: Path, device: torch.device):
    """The supernet exactly as training initialised it (same seed), for before/after losses."""
    raw = json.loads((run_dir / "run_config.json").read_text())
    run = load_run_config(raw)
    torch.manual_seed(run.train.seed)
    return VideoUNet(run.model).to(device).eval()


def stage_steps(base_steps: int) -> list[int]:
    """Sampling steps of base → SSR 32 px → SSR 64 px."""
    ssr = max(1, round(SSR_STEP_SHARE * base_steps))
    return [base_steps, ssr, ssr]


def check_out(out: Path, overwrite: bool) -> None:
    """The output-folder rule (:func:`sned.store.files.check_output`, kind ``QUICKSTART``): refuse
    (OutputError naming the folder) an ``out`` that holds a previous quickstart unless
    ``overwrite`` — then its ``runs/``, ``models/`` and ``videos/`` are removed, and nothing
    else; a file, ``.`` with ``--overwrite``, or a folder of another kind is refused."""
    remove_entries(out, check_output(out, QUICKSTART, overwrite=overwrite))


# --------------------------------------------------------------------------------- workflow
def quickstart(out: str | Path = "quickstart", minutes: float = 7.5, device: str = "auto",
               prompts: int | None = None, sample_steps: int = SAMPLE_STEPS,
               max_steps: int | None = None, overwrite: bool = False) -> Path:
    """Run the whole workflow; returns the path of ``report.html``.

    ``prompts``: how many prompts of each set to sample (default all 36 held-out prompts and
    :data:`TRAIN_PROMPTS` training-split ones).
    ``sample_steps``: DPM-Solver++ steps of the base stage (SSR stages: :func:`stage_steps`).
    ``max_steps``: cap every training stage (smoke tests; the report flags models below
    :data:`MIN_STEPS` as under-trained).
    """
    out = Path(out)
    dev = resolve_device(device)
    texts = held_out_prompts()
    seen = sample_prompts(TRAIN_PROMPTS, seed=0, split="train")
    if prompts is not None:
        if not 1 <= prompts <= len(texts):
            raise ValueError(f"--prompts {prompts}: choose 1 to {len(texts)} (the held-out "
                             f"prompts)")
        texts, seen = texts[:prompts], seen[:prompts]
    check_out(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    qs = Quickstart(out, Budget(minutes * 60, time.monotonic()), texts, train_prompts=seen)
    _say(f"output folder {out.resolve()}, budget {minutes:g} min, device {dev}")
    train_s = (TRAIN_SHARE - LATENT_SHARE) * qs.budget.total
    for name, config, recipe, share in (("base", "tiny-base", QUICK_BASE, BASE_SHARE),
                                        ("ssr", "tiny-ssr", QUICK_SSR, 1 - BASE_SHARE)):
        steps = train_supernet(name, config, recipe, out / "runs" / name, share * train_s, dev,
                               max_steps, MIN_STEPS[name])
        qs.training[name] = {"steps": steps, "minimum": MIN_STEPS[name]}

    _say("extracting presets S/M/L/B of both supernets (EMA weights)")
    folders = {}
    for kind in ("base", "ssr"):
        for p in PRESETS:
            den = load_denoiser(out / "runs" / kind, preset=p, device=dev)
            folders[kind, p] = export_subnet(den, out / "models" / f"{kind}-{p}")

    evaluate_presets(qs, folders, dev, sample_steps)

    qs.latent = run_latent(out, LATENT_SHARE * qs.budget.total, dev, sample_steps, max_steps)
    for name in ("ae", "latent"):
        qs.training[name] = {"steps": qs.latent["steps"][name], "minimum": MIN_STEPS[name]}
    report = write_quickstart_report(qs)
    _say(f"done in {qs.budget.elapsed_min():.1f} min: {report}")
    return report


def _init_loss(qs: Quickstart, device: torch.device) -> Callable:
    """A metric: the validation loss of the stage's arch in the supernet as initialised."""
    init = {kind: _initial_supernet(qs.out / "runs" / kind, device) for kind in ("base", "ssr")}
    proxies: dict = {}  # one held-out set per (supernet, resolution, frames), shared by presets

    def val_loss_init(ctx) -> dict:
        kind = "base" if ctx.index == 0 else "ssr"
        key = (kind, ctx.resolution, ctx.frames)
        if key not in proxies:
            proxies[key] = heldout_proxy(init[kind], ctx.den.diffusion, ctx.resolution,
                                         n_videos=ctx.settings.val_videos, frames=ctx.frames,
                                         data=ctx.settings.data, text_encoder=ctx.encoder())
        return {"val_loss_init": proxies[key](ctx.den.arch_at(ctx.resolution))}

    return val_loss_init


def coherence_metric(ctx) -> dict:
    """A metric: the temporal coherence of the stage's videos (:mod:`sned.metrics.coherence`),
    against the prompted speeds."""
    return coherence_columns(np.concatenate(ctx.videos), [p for run in ctx.prompts for p in run])


def _keep_videos(qs: Quickstart, stages: set[int], count: int = 3, tag: str = "",
                 unseen: bool = False) -> Callable:
    """An ``on_stage`` hook: ``count`` GIF/MP4 videos and a frame grid of each stage in
    ``stages``; ``unseen`` marks their captions as combinations training never shows."""
    def keep(ctx) -> None:
        if ctx.index not in stages:
            return
        vids, frames = [], ctx.videos[0]
        for i, prompt in enumerate(ctx.prompts[0][:count]):
            stem = f"{ctx.resolution}px_{ctx.preset}{tag}_{i}"
            gif = write_video(qs.out / "videos" / f"{stem}.gif", frames[i], fps=6)
            mp4 = write_video(qs.out / "videos" / f"{stem}.mp4", frames[i], fps=6)
            label = f"{ctx.preset} · {prompt}" + (" (unseen combination)" if unseen else "")
            vids.append((label, str(gif.relative_to(qs.out)), str(mp4.relative_to(qs.out))))
        write_frame_grid(qs.out / "videos" / f"grid_{ctx.resolution}px_{ctx.preset}{tag}.png",
                         frames[:16])
        qs.media.setdefault(ctx.resolution, []).extend(vids)

    return keep


def evaluate_presets(qs: Quickstart, folders: dict, device: torch.device, steps: int) -> None:
    """Every preset, in three passes (rows into ``qs.rows``, videos into ``qs.media``):

    1. the training-split prompts (``qs.train_prompts``) through base 16 px → SSR 32 px, at
       the training clip length: a row per stage (caption accuracy and coherence, validation
       loss, latency; the SSR stage's consistency), ``prompts: "train"``;
    2. the held-out prompts (``qs.prompts``: combinations training never shows) the same way,
       caption accuracy and coherence only, ``prompts: "held-out"``;
    3. :data:`TOP_VIDEOS` held-out real clips' captions through the whole cascade to 64 px, at
       :data:`TOP_FRAMES` frames (I3D's minimum): the 64 px row, with FVD/KVD against those
       clips when the I3D weights are installed (:func:`fvd_detector`).
    """
    data = run_data_config(qs.out / "runs" / "base")
    common = dict(scheduler="dpm", guidance=GUIDANCE, progress=False, data=data, val_videos=16,
                  latency_repeats=5)
    metrics = ("latency", "val_loss", _init_loss(qs, device), "caption", coherence_metric,
               "consistency")
    seen = EvalSettings(metrics=metrics, prompts=lambda n, run: qs.train_prompts[:n],
                        n_videos=len(qs.train_prompts), steps=stage_steps(steps)[:2],
                        batch=len(qs.train_prompts), every_stage=True, **common)
    unseen = EvalSettings(metrics=("caption", coherence_metric),
                          prompts=lambda n, run: qs.prompts[:n], n_videos=len(qs.prompts),
                          steps=stage_steps(steps)[:2], batch=len(qs.prompts),
                          every_stage=True, **common)
    detector = fvd_detector(qs, device)
    top = EvalSettings(metrics=metrics + (("fvd", "kvd") if detector else ()),
                       n_videos=TOP_VIDEOS, frames=TOP_FRAMES, steps=stage_steps(steps),
                       batch=TOP_VIDEOS, detector=detector, cache=qs.out / "cache", **common)
    (qs.out / "videos").mkdir(exist_ok=True)
    for p in PRESETS:
        base = load_denoiser(folders["base", p], device=device)
        ssr = load_denoiser(folders["ssr", p], device=device)
        _say(f"preset {p}: {len(qs.train_prompts)} training-split and {len(qs.prompts)} "
             f"held-out prompts base 16px → SSR 32px; {TOP_VIDEOS} on to 64px "
             f"({TOP_FRAMES} frames), then metrics")
        rows = evaluate_preset(p, base, [ssr], seen, on_stage=_keep_videos(qs, {0, 1}))
        rows += evaluate_preset(p, base, [ssr], unseen,
                                on_stage=_keep_videos(qs, {0, 1}, 2, "_unseen", True))
        for r, kind in zip(rows, ("train", "train", "held-out", "held-out")):
            r["prompts"] = kind
        qs.rows += rows
        with warnings.catch_warnings():  # N < d = 400 for FVD: said in the report
            warnings.filterwarnings("ignore", message=".*rank-deficient")
            qs.rows += evaluate_preset(p, base, [ssr, ssr], top,
                                       on_stage=_keep_videos(qs, {2}))
    if detector is not None:
        qs.fvd.update(detector=detector.record(), real_data=top.real_data["fvd"][0],
                      n=TOP_VIDEOS, frames=TOP_FRAMES)
    write_json(qs.out / "results.json", qs.rows)


TOP_VIDEOS = 8
"""Videos per preset through the whole cascade to 64 px (the 64 px row, FVD/KVD)."""
TOP_FRAMES = 9
"""Frames of the 64 px pass: I3D's minimum, one more than the training clips."""


def fvd_detector(qs: Quickstart, device: torch.device):
    """The Kinetics-400 I3D (``sned.metrics.load_i3d()``), or None — and ``qs.fvd`` says why —
    when its weights are not installed."""
    try:
        return load_i3d(device=device)
    except I3DWeightsMissing as e:
        qs.fvd = {"skipped": str(e)}
        _say(f"FVD/KVD skipped: {e}")
        return None


# --------------------------------------------------------------------------------- report
TRAINING_COLUMNS = [("model", "Model"), ("steps", "Steps trained"), ("minimum", "Minimum"),
                    ("status", "Status")]


def under_trained(qs: Quickstart) -> list[str]:
    """The models that trained fewer steps than their :data:`MIN_STEPS`."""
    return [k for k, v in qs.training.items() if v["steps"] < v["minimum"]]


def section_training(qs: Quickstart) -> list[dict]:

    runs = qs.out / "runs"
    plot_loss_curve(qs.out / "training_loss.png", {k: runs / k / "metrics.jsonl"
                                                   for k in ("base", "ssr")})
    fell = sum(r["val_loss"] < r["val_loss_init"] for r in qs.rows
               if r.get("val_loss_init") is not None)
    pairs = sum(r.get("val_loss_init") is not None for r in qs.rows)
    rows = [{"model": k, "steps": v["steps"], "minimum": v["minimum"],
             "status": "ok" if v["steps"] >= v["minimum"] else
             "UNDER-TRAINED: its numbers below do not show what the model can do"}
            for k, v in qs.training.items()]
    return [{"title": "Training",
             "text": f"Two supernets trained on the synthetic captioned-shapes set with "
                     f"the sampling warm-up over the first third of the steps and exact "
                     f"freezing; the SSR supernet with super-position over 32 and 64 px (the "
                     f"base at 16 px only, the resolution the cascade samples it at). Every "
                     f"model trains at least its minimum of steps, whatever the clock says. "
                     f"Validation loss fell from initialisation in {fell} of {pairs} "
                     f"(resolution, preset) pairs.",
             "rows": rows, "columns": TRAINING_COLUMNS,
             "images": ["training_loss.png"] if (qs.out / "training_loss.png").exists()
             else []}]


def section_resolutions(qs: Quickstart) -> list[dict]:
    out = []
    for res in sorted(qs.media):
        kind = "base model alone" if res == 16 else f"cascade up to {res}px"
        out.append({"title": f"{res}×{res} ({kind})",
                    "text": "Params/GMACs: the model producing this resolution (one denoiser "
                            "forward, batch 1). Denoiser ms: median forward latency on this "
                            "machine. Sample s: the whole cascade, seconds per video. Caption "
                            "acc.: colour, shape and motion all recovered from the pixels, "
                            "with its 95 % Wilson interval, over n videos (16 and 32 px: the "
                            f"{len(qs.train_prompts)} training-split prompts at the training "
                            f"clip length — the held-out prompts are in the next sections; "
                            f"64 px: {TOP_VIDEOS} held-out clips' captions at {TOP_FRAMES} "
                            "frames). SSR consistency: mean PSNR of the SSR output downsampled "
                            "to its input resolution vs the video it was conditioned on, with "
                            "its 95 % interval. Videos marked \"unseen combination\" come "
                            "from prompts whose (colour, shape, motion) training never shows.",
                    "rows": [r for r in qs.rows
                             if r["resolution"] == res and r.get("prompts") != "held-out"],
                    "videos": qs.media[res]})
    return out


def section_captions(qs: Quickstart) -> list[dict]:
    rows = [r for r in qs.rows if r.get("prompts")]
    cols = [("prompts", "Prompts")] + CAPTION_COLUMNS
    return [{"title": "Does the video follow its prompt? Caption accuracy per attribute",
             "text": f"Prompts \"train\": {len(qs.train_prompts)} captions drawn from the "
                     f"combinations training shows (e.g. {'; '.join(qs.train_prompts[:3])}). "
                     f"Prompts \"held-out\": {len(qs.prompts)} captions whose (colour, shape, "
                     f"motion) combination training never shows (e.g. "
                     f"{'; '.join(qs.prompts[:3])}). Colour, shape and motion direction are "
                     f"recovered from the pixels (sned.metrics.caption). Each cell: accuracy "
                     f"[95 % Wilson interval]; chance is 17 % colour, 33 % shape, 25 % motion, "
                     f"1.4 % all three.",
             "rows": rows, "columns": cols},
            {"title": "Temporal coherence: does the object move steadily?",
             "text": "The dominant object's centroid track from the pixels "
                     "(sned.metrics.coherence). Coherent: the object is present in every "
                     "frame and no frame-to-frame jump exceeds the prompted speed (2.5 % of "
                     "the frame per frame slowly, 5 % quickly) plus half a pixel. Jump / "
                     "prompted speed: the mean jump over the prompted speed (1 = as "
                     "prompted; an object that jumps around scores several times that). Track "
                     "residual: RMS distance from a straight constant-speed track, in "
                     "fractions of the frame side. Each cell with its 95 % interval; the "
                     "same videos as above.",
             "rows": rows, "columns": [("prompts", "Prompts"), ("preset", "Model"),
                                       ("resolution", "Resolution"), *COHERENCE_COLUMNS,
                                       ("coherence_n", "n")]}]


def section_fvd(qs: Quickstart) -> list[dict]:

    if not qs.fvd or "skipped" in qs.fvd:
        return [{"title": "FVD / KVD", "text": "Not measured: " + qs.fvd.get(
            "skipped", "no detector") + " (see `sned evaluate`)."}]
    det, real = qs.fvd["detector"], qs.fvd["real_data"]
    rows = [r for r in qs.rows if r.get("fvd") is not None]
    return [{"title": "FVD / KVD (64×64, whole cascade)",
             "text": f"{det['name']} (weights sha256 {det['sha256']}), against "
                     f"{describe_source(real)}; {qs.fvd['n']} generated videos of "
                     f"{qs.fvd['frames']} frames per preset (every preset), prompted with the "
                     f"real clips' captions. With N = {qs.fvd['n']} (far below the 400 feature dimensions) "
                     "FVD is strongly biased: compare the presets with each other only, never "
                     "with published numbers.",
             "rows": rows, "columns": [("preset", "Model"), ("params", "#Params"),
                                       ("fvd", "FVD"), ("kvd", "KVD")]}]


def section_consistency(qs: Quickstart) -> list[dict]:
    rows = [r for r in qs.rows if r.get("ssr_psnr_db") is not None]
    return [{"title": "Cascade consistency per SSR stage",
             "text": "PSNR (dB) of each SSR stage's output, downsampled back to its input "
                     "resolution (antialiased bilinear, as the training pairs are made), vs "
                     "the video it was conditioned on: mean [95 % interval of the mean] over "
                     "n videos. Higher = the stage upsampled rather than changed the content "
                     "(upsampling with no detail added scores about 33 dB at 32 px and 36 dB at "
                     "64 px on real clips).",
             "rows": rows, "columns": [("preset", "Model"),
                                       ("resolution", "SSR output"),
                                       ("ssr_psnr_db", "PSNR dB"), ("ssr_psnr_n", "n")]}]


def section_cost_quality(qs: Quickstart) -> list[dict]:

    rows = [r for r in qs.rows if r.get("prompts") != "held-out"]  # one point per stage
    plot_cost_quality(qs.out / "cost_vs_val_loss.png", rows)
    plot_cost_quality(qs.out / "cost_vs_caption.png", rows, "caption_all",
                      "caption accuracy (all attributes, training-split prompts)")
    return [{"title": "Cost vs quality",
             "images": [p for p in ("cost_vs_val_loss.png", "cost_vs_caption.png")
                        if (qs.out / p).exists()]}]


def section_latent(qs: Quickstart) -> list[dict]:

    return latent(qs.out, qs.latent)


def section_files(qs: Quickstart) -> list[dict]:
    return [{"title": "Files",
             "text": "runs/base and runs/ssr: training runs (metrics.jsonl, checkpoints/latest, "
                     "tensorboard/); runs/ae and runs/latent: the latent section's autoencoder and latent "
                     "supernet (latent_results.json). models/: extracted subnets (load with "
                     "sned.load_pretrained; sample with sned sample). results.json: every "
                     "number above; cache/: the real set's I3D statistics."}]


SECTIONS: list[Callable[[Quickstart], list[dict]]] = [
    section_training, section_resolutions, section_captions, section_fvd, section_consistency,
    section_cost_quality, section_latent, section_files]
"""The report, in order: each function returns its sections (see :func:`sned.report.write_report`)."""


def write_quickstart_report(qs: Quickstart) -> Path:

    sections = [s for fn in SECTIONS for s in fn(qs)]
    intro = (f"One supernet per model, served at four sizes without retraining. Generated "
             f"{time.strftime('%Y-%m-%d %H:%M')}, {qs.budget.elapsed_min():.1f} min.")
    short = under_trained(qs)
    if short:
        intro += (f" WARNING: under-trained ({', '.join(short)}: fewer steps than the minimum "
                  f"in the Training section) — the numbers and videos of those models do not "
                  f"show what they can do.")
    _, html_path = write_report(qs.out, "sned quickstart", intro, sections)
    return html_path
