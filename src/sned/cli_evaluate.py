"""``sned search`` and ``sned evaluate``: architecture search and paper-style tables."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from .cli import command


# --------------------------------------------------------------------------------- search
def _search_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="supernet training run dir or checkpoint folder")
    p.add_argument("--resolution", type=int, required=True)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--max-params", type=float, help="parameter budget (e.g. 1.5e6)")
    g.add_argument("--max-macs", type=float, help="MACs budget per forward (batch 1)")
    g.add_argument("--max-latency-ms", type=float, help="measured denoiser latency budget")
    p.add_argument("--budget", type=int, default=100, help="distinct archs evaluated per method")
    p.add_argument("--population", type=int, default=16)
    p.add_argument("--n-videos", type=int, default=32, help="held-out clips of the val proxy")
    p.add_argument("--frames", type=int, help="frames of the val proxy (default: config's)")
    p.add_argument("--no-random", action="store_true", help="skip the random-search baseline")
    p.add_argument("--ema", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-arch", action="append", default=[], metavar="NAME=RANK",
                   help="save the front's point RANK (0 = cheapest) as OUT/NAME.json")
    p.add_argument("--out", required=True, help="output folder (pareto.json, pareto.png)")


@command("search", "evolutionary search for the best subnet under a budget")(_search_args)
def run_search(args: argparse.Namespace) -> int:
    from .loading import load_denoiser
    from .metrics.latency import LatencyTable, denoiser_latency
    from .metrics.val_loss import synthetic_proxy
    from .inputs import example_inputs
    from .search import (evolutionary_search, hypervolume_2d, pareto_front, plot_pareto,
                         random_search, reference_point, save_arch, save_pareto_json)
    from .space import SearchSpace

    den = load_denoiser(args.checkpoint, ema=args.ema, resolution=args.resolution)
    space = SearchSpace(den.config)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    proxy = synthetic_proxy(den.model, den.diffusion, args.resolution, args.n_videos,
                            args.frames)
    latency_fn = None
    if args.max_latency_ms:
        table = LatencyTable(out / "latency_table.json")
        inputs = example_inputs(den.model, batch=1, resolution=args.resolution,
                                frames=args.frames)
        latency_fn = table.latency_fn(den.config.name, args.resolution,
                                      inputs["sample"].shape[2], 1, "fp32",
                                      lambda a: denoiser_latency(den.model, a, inputs))
    common = dict(budget=args.budget, resolution=args.resolution, frames=args.frames,
                  max_params=args.max_params, max_macs=args.max_macs,
                  max_latency_ms=args.max_latency_ms, latency_fn=latency_fn, seed=args.seed)
    evo = evolutionary_search(space, proxy, population_size=args.population,
                              parents=max(1, min(5, args.population // 3)), **common)
    runs = {"evolution": evo.points}
    summary = {"config": den.config.name, "checkpoint": den.source, "resolution":
               args.resolution, "budget": args.budget, "evolution": evo.summary()}
    if not args.no_random:
        rnd = random_search(space, proxy, **common)
        runs["random"] = rnd.points
        ref, ideal = reference_point(evo.points, rnd.points)
        hv = {k: hypervolume_2d(pareto_front(v), ref, ideal_point=ideal) for k, v in runs.items()}
        summary.update(random=rnd.summary(), hypervolume=hv,
                       best_val_loss={"evolution": evo.best.objective,
                                      "random": rnd.best.objective})
        save_pareto_json(out / "pareto_random.json", rnd.points)
    front = pareto_front(evo.points)
    save_pareto_json(out / "pareto.json", evo.points)
    plot_pareto(out / "pareto.png", runs, title=f"{den.config.name} @ {args.resolution}px")
    for item in args.save_arch:
        name, _, rank = item.partition("=")
        idx = int(rank or 0)
        if not 0 <= idx < len(front):
            raise ValueError(f"--save-arch {item}: the front has {len(front)} points")
        save_arch(front[idx], out / f"{name}.json")
    (out / "search.json").write_text(json.dumps(summary, indent=1, default=str))
    print(json.dumps({k: summary[k] for k in summary if k in
                      ("hypervolume", "best_val_loss")} | {"front": len(front),
                                                           "out": str(out)}))
    return 0



# --------------------------------------------------------------------------------- evaluate
METRICS = ("fvd", "kvd", "caption", "val_loss", "latency")


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="base model: run dir / checkpoint or model folder")
    p.add_argument("--ssr", help="SSR model for resolutions above the base's")
    p.add_argument("--presets", default="S,M,L,B")
    p.add_argument("--resolution", type=int, help="final resolution (default: the base's)")
    p.add_argument("--metrics", default="fvd,kvd,caption,val_loss,latency")
    p.add_argument("--n-videos", type=int, default=64, help="generated (and real) videos per run")
    p.add_argument("--runs", type=int, default=1, help="repeat with different seeds: mean ± std")
    p.add_argument("--frames", type=int, help="frames per video (FVD needs >= 9)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--cfg", type=float, default=5.0)
    p.add_argument("--batch", type=int, default=16, help="videos generated per batch")
    p.add_argument("--i3d", help="I3D weights (i3d_pretrained_400.pt); or set SNED_I3D_WEIGHTS")
    p.add_argument("--random-features", action="store_true",
                   help="random I3D weights: relative comparisons only (labelled everywhere)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True)


@command("evaluate", "paper-style table: FVD/KVD, caption accuracy, val loss, latency")(
    _evaluate_args)
def run_evaluate(args: argparse.Namespace) -> int:
    import torch

    from .cli_generate import load_stages
    from .data.synthetic import SyntheticVideoDataset, sample_prompts
    from .metrics.caption import caption_accuracy
    from .metrics.fvd import compute_features, fvd_kvd, real_stats
    from .metrics.latency import denoiser_latency
    from .metrics.val_loss import synthetic_proxy
    from .inputs import example_inputs
    from .pipelines.cascade import Stage, generate
    from .report import markdown_table, write_report
    from .space import SearchSpace
    from .text import TextEncoder
    from .video_io import to_uint8

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    bad = [m for m in metrics if m not in METRICS]
    if bad:
        raise ValueError(f"--metrics: unknown {bad}; choose from {list(METRICS)}")
    if args.runs < 1 or args.n_videos < 1:
        raise ValueError("--runs and --n-videos must be >= 1")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" \
        else args.device
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    detector = None
    if {"fvd", "kvd"} & set(metrics):
        from .metrics.i3d import load_i3d

        detector = (load_i3d(random_init=True, device=device) if args.random_features
                    else load_i3d(args.i3d, device=device))
    feature_label = " (RANDOM I3D features: relative comparisons only)" \
        if detector is not None and getattr(detector, "random_features", False) else ""
    rows = []
    for preset in [p.strip() for p in args.presets.split(",")]:
        base, ssr = load_stages(args.checkpoint, args.ssr, [preset], None, args.resolution,
                                ema=True, device=device)
        final = ssr[-1] if ssr else base
        frames = args.frames or base.config.frames
        enc = TextEncoder(max_length=base.config.text_len, device=device)
        res = args.resolution or (base.resolution or base.config.resolutions[0])
        space = SearchSpace(final.config)
        arch = final.arch if final.arch is not None else final.model.arch
        cost = space.cost(arch, resolution=res, frames=frames)
        per_run: dict[str, list[float]] = {}
        sample_s = []
        for run in range(args.runs):
            prompts = sample_prompts(args.n_videos, seed=1000 + run)
            videos = []
            for i in range(0, args.n_videos, args.batch):
                emb, mask = enc.encode(prompts[i:i + args.batch])
                t0 = time.perf_counter()
                v = generate(emb, mask, base=Stage.from_denoiser(base),
                             ssr=[Stage.from_denoiser(s) for s in ssr] or None,
                             final_resolution=res, steps=args.steps,
                             guidance_scale=[args.cfg] + [1.0] * len(ssr), frames=frames,
                             seed=run * 100_000 + i, progress=True)
                sample_s.append((time.perf_counter() - t0) / v.shape[0])
                videos.append(to_uint8(v))
            fake = np.concatenate(videos)
            if "caption" in metrics:
                per_run.setdefault("caption", []).append(
                    caption_accuracy(fake, prompts)["all_correct"])
            if detector is not None:
                real = real_stats("synthetic", res, frames, args.n_videos,
                                  lambda: (to_uint8(SyntheticVideoDataset(
                                      args.n_videos, frames, res, seed=50_000 + run)[j]["video"])
                                           for j in range(args.n_videos)),
                                  out / "cache", detector, device=device)
                fake_stats = compute_features([fake], detector, device=device, keep_features=True)
                scores = fvd_kvd(real, fake_stats, seed=run)
                for k in ("fvd", "kvd"):
                    if k in metrics and scores.get(k) is not None:
                        per_run.setdefault(k, []).append(float(scores[k]))
        row = {"preset": preset, "resolution": res, "params": cost.params, "macs": cost.macs,
               "sample_s": float(np.median(sample_s))}
        for k, vals in per_run.items():
            row["caption_all" if k == "caption" else k] = (
                {"mean": float(np.mean(vals)), "std": float(np.std(vals))} if len(vals) > 1
                else vals[0])
        if "val_loss" in metrics:
            row["val_loss"] = synthetic_proxy(final.model, final.diffusion, res,
                                              n_videos=min(32, args.n_videos), frames=frames
                                              )(final.arch)
        if "latency" in metrics:
            kw = example_inputs(final.model, batch=1, resolution=res, frames=frames)
            row["latency_ms"] = denoiser_latency(final.model, final.arch, kw)
        rows.append(row)
    note = (f"{args.n_videos} videos per run, {args.runs} run(s), {frames} frames, "
            f"{res}x{res}; FVD/KVD against synthetic real videos{feature_label}. "
            f"Sample s = seconds per video for the whole cascade.")
    (out / "table.json").write_text(json.dumps({"rows": rows, "note": note,
                                                "random_features": bool(feature_label)},
                                               indent=1))
    write_report(out, "sned evaluate", note, [{"title": f"{res}x{res}", "rows": rows}])
    print(markdown_table(rows))
    print(note)
    return 0
