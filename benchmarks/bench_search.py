"""Time of one evolutionary search (and the random baseline) with a REAL supernet objective.

The objective is the mean MSE denoising (eps-prediction) loss of ``supernet(..., arch=arch)`` on
one fixed small batch from ``sned.example_inputs`` with fixed noise and timesteps (deterministic:
the same arch always gets the same value). The supernet is randomly initialised, so the numbers
measure the search machinery and the cost of an evaluation, not the quality of a trained model.

Reports, for evolution and random search at the same budget and constraint: wall time,
evaluations/s, the best objective, and the hypervolume of both Pareto fronts (params vs loss)
normalised to a shared reference box.

    python benchmarks/bench_search.py                      # tiny-base, 60 evaluations, CPU
    python benchmarks/bench_search.py --budget 200 --out runs/bench-search --latency
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import sned
from sned.search import (Constraints, evolutionary_search, hypervolume_2d, plot_pareto, random_search,
                         reference_point, save_pareto_json)


def make_objective(model: sned.VideoUNet, resolution: int, batch: int, seed: int):
    """``arch -> mean MSE(eps_pred, eps)`` on a fixed noised batch (no grad, eval mode)."""
    from diffusers import DDPMScheduler

    inputs = sned.example_inputs(model, batch=batch, resolution=resolution, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    x0 = inputs["sample"].clamp(-1, 1)
    noise = torch.randn(x0.shape, generator=g).to(x0)
    sched = DDPMScheduler(num_train_timesteps=1000)
    t = torch.linspace(50, 950, batch).long().to(x0.device)
    inputs = {**inputs, "sample": sched.add_noise(x0, noise, t), "timestep": t}

    @torch.inference_mode()
    def evaluate(arch) -> float:
        pred = model(**inputs, arch=arch)
        return float(torch.nn.functional.mse_loss(pred.float(), noise.float()))

    return evaluate, inputs


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="tiny-base")
    ap.add_argument("--budget", type=int, default=60, help="distinct arch evaluations per search")
    ap.add_argument("--resolution", type=int, default=16)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--max-params-frac", type=float, default=0.6,
                    help="param constraint as a fraction of the supernet's params")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--latency", action="store_true",
                    help="also measure every evaluated arch's latency (LatencyTable, in memory)")
    ap.add_argument("--out", default=None, help="folder for pareto.json files and pareto.png")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    model = sned.build_supernet(args.config, device=device).eval()
    space = sned.search_space(args.config)
    full = space.cost(space.largest(args.resolution))
    max_params = args.max_params_frac * full.params
    evaluate, inputs = make_objective(model, args.resolution, args.batch, args.seed)

    latency_fn = None
    if args.latency:
        from sned.metrics.latency import LatencyTable, denoiser_latency
        table = LatencyTable(device=device, autosave=False)
        one = {k: v[:1] for k, v in inputs.items()}
        latency_fn = table.latency_fn(args.config, args.resolution, space.config.frames, 1,
                                      "float32",
                                      lambda a: denoiser_latency(model, a, one, 1, 3))

    kw = dict(budget=args.budget, resolution=args.resolution,
              constraints=Constraints(max_params=max_params, latency_fn=latency_fn),
              seed=args.seed)
    evaluate(space.largest(args.resolution))  # warm-up (first-call allocations)
    results = {}
    for name, search in (("evolution", evolutionary_search), ("random", random_search)):
        t0 = time.perf_counter()
        results[name] = search(space, evaluate, **kw)
        results[name].wall_s = time.perf_counter() - t0

    ref, ideal = reference_point(*(r.points for r in results.values()))
    report = {"config": args.config, "resolution": args.resolution, "batch": args.batch,
              "budget": args.budget, "max_params": int(max_params),
              "supernet_params": full.params, "threads": torch.get_num_threads(),
              "device": str(device)}
    print(f"{args.config} @ {args.resolution}px, batch {args.batch}, budget {args.budget}, "
          f"max_params {max_params:,.0f} ({args.max_params_frac:.0%} of {full.params:,}), "
          f"{torch.get_num_threads()} threads")
    print(f"{'method':<10} {'wall s':>7} {'eval/s':>7} {'best loss':>10} {'best params':>12} "
          f"{'front':>6} {'HV':>7} {'rejected':>8} {'dups':>5}")
    for name, r in results.items():
        hv = hypervolume_2d(r.front(), ref, ideal_point=ideal)
        row = {"wall_s": round(r.wall_s, 3), "evals_per_s": round(len(r.points) / r.wall_s, 2),
               "evaluations": len(r.points), "best_val_loss": r.best.objective,
               "best_params": r.best.params, "front_size": len(r.front()),
               "hypervolume": round(hv, 4), "rejected": r.rejected,
               "duplicates": r.duplicates, "generations": r.generations}
        report[name] = row
        print(f"{name:<10} {row['wall_s']:>7.2f} {row['evals_per_s']:>7.2f} "
              f"{row['best_val_loss']:>10.5f} {row['best_params']:>12,} {row['front_size']:>6} "
              f"{row['hypervolume']:>7.4f} {row['rejected']:>8} {row['duplicates']:>5}")
    if args.out:
        from pathlib import Path
        out = Path(args.out)
        for name, r in results.items():
            save_pareto_json(out / f"pareto_{name}.json", r.points)
        plot_pareto(out / "pareto.png", {n: r.points for n, r in results.items()})
        (out / "bench_search.json").write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {out}/pareto_*.json, pareto.png, bench_search.json")
    return report


if __name__ == "__main__":
    main()
