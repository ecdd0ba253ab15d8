"""Cost of ``train.fixed_arch``: training one preset inside the supernet vs its extracted model.

One training step each, alternating, after a warm-up: the supernet with ``arch=`` + masked AdamW
(exact freeze: only the preset's slices move) + EMA over the supernet's weights, vs the
extracted static model + torch AdamW + EMA over its own weights — the same maths (the masked
update of the active slices equals AdamW on the static weights). Prints median ms and the ratio
with its spread (min/max over rounds).

    python benchmarks/bench_fixed_arch.py --preset S --rounds 10
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from diffusers.training_utils import EMAModel

import sned
from sned.models.inputs import example_inputs
from sned.train.masked_adamw import ActivityTracker, MaskedAdamW


def _stepper(model, arch, kw, masked: bool):
    params = list(model.parameters())
    opt = (MaskedAdamW if masked else torch.optim.AdamW)(params, lr=1e-4)
    tracker = ActivityTracker(model) if masked else None
    ema = EMAModel(params, decay=0.999, foreach=True)

    def step() -> float:
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        if tracker is not None:
            tracker.reset()
        out = model(**kw, arch=arch) if arch is not None else model(**kw)
        out.square().mean().backward()
        if tracker is not None:
            opt.step(regions=tracker.regions())
        else:
            opt.step()
        ema.step(params)
        return time.perf_counter() - t0
    return step


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="tiny-base")
    ap.add_argument("--preset", default="S")
    ap.add_argument("--resolution", type=int, default=16)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    cfg = sned.config.load_config(args.config, [f"frames={args.frames}"])
    sup = sned.build_supernet(cfg).train()
    arch = sned.search_space(cfg).preset(args.preset, args.resolution)
    static = sned.extract(sup, arch).train()
    kw = example_inputs(sup, batch=args.batch, resolution=args.resolution)
    fns = {"supernet": _stepper(sup, arch, kw, True), "static": _stepper(static, None, kw, False)}
    for _ in range(args.warmup):
        for f in fns.values():
            f()
    times = {k: [] for k in fns}
    for _ in range(args.rounds):  # alternating, so load changes hit both sides alike
        for k, f in fns.items():
            times[k].append(f())
    ratios = np.array(times["supernet"]) / np.array(times["static"])
    row = {"config": args.config, "preset": args.preset, "resolution": args.resolution,
           "batch": args.batch, "frames": args.frames,
           "supernet_ms": 1e3 * float(np.median(times["supernet"])),
           "static_ms": 1e3 * float(np.median(times["static"])),
           "ratio_median": float(np.median(ratios)), "ratio_min": float(ratios.min()),
           "ratio_max": float(ratios.max()), "threads": torch.get_num_threads()}
    print(row)
    return row


if __name__ == "__main__":
    main()
