"""``sned search`` and ``sned evaluate``: architecture search and paper-style tables."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

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

