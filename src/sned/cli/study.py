"""``sned study``: supernet vs standalone training and the paper's ablations, measured."""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys

from ..app.study import run_study
from ..app.study_plan import QUICK, StudyPlan
from ..config import ConfigError


def study_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output folder (results.json, results.md, runs/)")
    p.add_argument("--quick", action="store_true",
                   help="a few minutes, 1 seed: indicative numbers only")
    p.add_argument("--config", default="tiny-base", help="base model config (name or YAML)")
    p.add_argument("--seeds", type=int, help="seeds of supernet vs standalone (default 3; "
                                              "--quick 1)")
    p.add_argument("--steps", type=int, help="steps per run (default 2000; --quick 20)")
    p.add_argument("--methods", help="comma-separated subset of: supernet, standalone, "
                                     "uniform-draws, no-distill, previous-recipe, parent-third, "
                                     "parent-two-thirds, grown-from-B, supernet-uniform, "
                                     "zero-init-off, per-tensor-adam, constant-lr, "
                                     "supernet-sandwich, no-warmup, plain-adamw, per-resolution "
                                     "(default: the first eight)")
    p.add_argument("--i3d", help="I3D weights for FVD/KVD (or SNED_I3D_WEIGHTS); only used "
                                 "when clips have >= 9 frames")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--resolutions", help="comma-separated subset of the config's resolutions "
                                         "(default 16; --quick: all), e.g. 16,32")
    p.add_argument("--curve-points", type=int, help="evaluations along each run (the learning "
                                                     "curve; default 4, --quick 2)")
    p.add_argument("--jobs", default="auto",
                   help="runs trained at once in worker processes, each with cores/jobs torch "
                        "threads (default auto: one per CPU core on CPU, 1 on a GPU)")
    p.add_argument("--partial", action="store_true",
                   help="train nothing: write results.json/results.md from the runs finished so "
                        "far (the same settings as the study; it may still be running)")
    p.add_argument("--ablation-seeds", type=int, help="seeds of the ablation methods (default 1)")
    p.add_argument("--plateau-seeds", type=int,
                   help="seeds of the second horizon (2 × steps: supernet, standalone S and B; "
                        "default 0 = none)")
    p.add_argument("--plateau-seeds-ml", type=int,
                   help="seeds of standalone M and L at the second horizon (default 1)")
    p.add_argument("--frames", type=int, help="clip length of the study's task (default 4)")
    p.add_argument("--max-objects", type=int,
                   help="objects per synthetic clip of the study's task (default 1)")


def run_study_cli(args: argparse.Namespace) -> int:
    plan = QUICK if args.quick else StudyPlan()
    changes = {"config": args.config}
    if args.seeds is not None:
        changes["seeds"] = args.seeds
    if args.steps is not None:
        changes["steps"] = args.steps
    if args.resolutions:
        try:
            changes["resolutions"] = tuple(int(r) for r in args.resolutions.split(","))
        except ValueError:
            raise ConfigError(f"--resolutions {args.resolutions!r}: comma-separated "
                              f"integers") from None
    if args.curve_points is not None:
        changes["curve_points"] = args.curve_points
    for key in ("ablation_seeds", "plateau_seeds", "plateau_seeds_ml", "frames", "max_objects"):
        if getattr(args, key) is not None:
            changes[key] = getattr(args, key)
    if args.methods:
        changes["methods"] = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    plan = dataclasses.replace(plan, **changes)
    jobs = _jobs(args.jobs, args.device)
    old = signal.signal(signal.SIGTERM, _interrupt)  # also while evaluating, not only training
    try:
        path = run_study(args.out, plan, device=args.device, i3d=args.i3d, jobs=jobs,
                         partial=args.partial)
    except KeyboardInterrupt:
        print(f"sned study: interrupted; finished runs are kept in {args.out} — rerun the same "
              f"command to continue", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, old)
    print(f"sned study: wrote {path} and {path.with_name('results.md')}")
    return 0


def _jobs(value: str, device: str) -> int:
    """``--jobs``: an integer, or ``auto`` — one job per CPU core on CPU, 1 on a GPU."""
    import os

    import torch

    if value == "auto":
        on_gpu = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        return 1 if on_gpu else max(1, os.cpu_count() or 1)
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"--jobs {value!r}: a positive integer or 'auto'")
    return int(value)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
