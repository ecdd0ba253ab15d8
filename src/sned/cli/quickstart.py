"""``sned quickstart``: parse and call :func:`sned.quickstart.quickstart`."""

from __future__ import annotations

import argparse

from ..app.quickstart import quickstart
from . import args as check


def quickstart_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="quickstart", help="output folder (default ./quickstart)")
    p.add_argument("--minutes", type=float, default=7.5,
                   help="wall-time budget (default 7.5); training takes ~55 %% of it")
    p.add_argument("--device", default="auto", help="auto (GPU if present), cpu or cuda")
    p.add_argument("--prompts", type=int, help="prompts of each set (training-split and "
                                               "held-out) sampled per preset (default: 36 each)")
    p.add_argument("--sample-steps", type=int, default=10,
                   help="DPM-Solver++ steps of the base stage (SSR stages: 60 %% of them)")
    p.add_argument("--max-steps", type=int, help="cap training steps (for smoke tests)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the runs, models and videos of an earlier quickstart in --out")


def run_quickstart(args: argparse.Namespace) -> int:

    check.above("--minutes", args.minutes, 0)
    check.at_least("--sample-steps", args.sample_steps, 1)
    check.at_least("--max-steps", args.max_steps, 1)
    report = quickstart(args.out, args.minutes, args.device, args.prompts, args.sample_steps,
                        args.max_steps, overwrite=args.overwrite)
    print(f"report: {report}")
    return 0
