"""Latency of sampling one video per preset S/M/L/B: supernet(arch) vs extracted model.

For every preset the two ways of running the same subnet — the supernet under ``arch=`` and the
model ``sned.extract`` builds — are timed side by side in the same run: warm-up first, then the
two alternate every repeat and the median is reported, so machine noise hits both. The table
gives the ratio extracted/supernet (slicing overhead of the supernet shows as a ratio < 1) and
each preset's speed-up over B.

``--cascade`` times the whole base → SSR → SSR cascade to the final resolution instead (tiny-base
+ tiny-ssr: 16 → 32 → 64; pixel-base + pixel-ssr: 64 → 128 → 256), every stage at the preset.

Random weights (latency only). Examples::

    python benchmarks/bench_sampling.py --config tiny-base --steps 4 --frames 4 --repeats 2
    python benchmarks/bench_sampling.py --cascade --config tiny-base --steps 2 --frames 2
    python benchmarks/bench_sampling.py --device cuda --config pixel-base --dtype bf16
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from typing import Callable

import torch

import sned
from sned.pipelines import Stage, generate, sample


def _timer(device: torch.device) -> Callable[[Callable[[], object]], float]:
    """A function that runs ``fn`` once and returns its wall time in ms (CUDA-synchronised)."""
    def timed(fn):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return (time.perf_counter() - t) * 1e3
    return timed


def side_by_side(fns: dict[str, Callable[[], object]], device: torch.device, warmup: int,
                 repeats: int) -> dict[str, float]:
    """Median ms per fn; the fns alternate every repeat after ``warmup`` calls each."""
    timed = _timer(device)
    for fn in fns.values():
        for _ in range(warmup):
            timed(fn)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            times[k].append(timed(fn))
    return {k: statistics.median(v) for k, v in times.items()}


def _text(cfg, device, dtype, batch: int):
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(batch, min(cfg.text_len, 16), cfg.text_dim, generator=g)
    return emb.to(device, dtype), torch.ones(emb.shape[:2], dtype=torch.bool, device=device)


def bench_single(args, device: torch.device, dtype: torch.dtype) -> list[dict]:
    """One model (base or SSR) per preset: supernet(arch) vs extracted."""
    space = sned.search_space(args.config)
    cfg = space.config
    res = args.resolution or cfg.resolutions[0]
    torch.manual_seed(0)
    supernet = sned.build_supernet(args.config, device=device, dtype=dtype).eval()
    text = _text(cfg, device, dtype, args.batch)
    extra = {}
    if cfg.kind == "ssr":
        g = torch.Generator().manual_seed(1)
        extra["lowres"] = (torch.rand(args.batch, cfg.in_channels, args.frames, res // 2,
                                      res // 2, generator=g) * 2 - 1).to(device)
    common = dict(steps=args.steps, frames=args.frames, scheduler=args.scheduler,
                  guidance_scale=args.guidance, progress=False, **extra)
    rows = []
    for name in args.presets:
        arch = space.preset(name, res)
        static = sned.extract(supernet, arch)
        fns = {"supernet": lambda: sample(supernet, *text, arch=arch, **common),
               "extracted": lambda: sample(static, *text, **common)}
        ms = side_by_side(fns, device, args.warmup, args.repeats)
        cost = space.cost(arch, res, args.frames)
        rows.append({"preset": name, "resolution": res, "params": cost.params,
                     "macs_per_forward": cost.macs, "supernet_ms": ms["supernet"],
                     "extracted_ms": ms["extracted"]})
        del static, fns
        gc.collect()
    return rows


def _ssr_config(args) -> str:
    if args.ssr_config:
        return args.ssr_config
    if args.config.endswith("-base"):
        return args.config[: -len("-base")] + "-ssr"
    raise SystemExit(f"--cascade: cannot guess the SSR config of {args.config!r}; pass "
                     f"--ssr-config")


def bench_cascade(args, device: torch.device, dtype: torch.dtype) -> list[dict]:
    """The full cascade per preset (every stage at that preset): supernets vs extracted."""
    bspace, sspace = sned.search_space(args.config), sned.search_space(_ssr_config(args))
    torch.manual_seed(0)
    base = sned.build_supernet(bspace.config, device=device, dtype=dtype).eval()
    ssr = sned.build_supernet(sspace.config, device=device, dtype=dtype).eval()
    base_res = args.resolution or bspace.config.resolutions[0]
    final = args.final_resolution or base_res * 4
    text = _text(bspace.config, device, dtype, args.batch)
    common = dict(final_resolution=final, steps=args.steps, frames=args.frames,
                  scheduler=args.scheduler, guidance_scale=args.guidance, progress=False)
    rows = []
    for name in args.presets:
        barch = bspace.preset(name, base_res)
        sarch = sspace.preset(name)  # re-targeted to each step's resolution by the cascade
        sup = dict(base=Stage(base, barch), ssr=Stage(ssr, sarch))
        ext = dict(base=Stage(sned.extract(base, barch)), ssr=Stage(sned.extract(ssr, sarch)))
        fns = {"supernet": lambda: generate(*text, **sup, **common),
               "extracted": lambda: generate(*text, **ext, **common)}
        ms = side_by_side(fns, device, args.warmup, args.repeats)
        rows.append({"preset": name, "resolution": final,
                     "params": bspace.cost(barch).params + sspace.cost(sarch).params,
                     "supernet_ms": ms["supernet"], "extracted_ms": ms["extracted"]})
        del ext, fns
        gc.collect()
    return rows


def add_ratios(rows: list[dict]) -> None:
    """extracted/supernet ratio and speed-up over the B row (or the largest preset timed)."""
    ref = next((r for r in rows if r["preset"] == "B"), rows[-1])
    for r in rows:
        r["ratio_extracted_over_supernet"] = r["extracted_ms"] / r["supernet_ms"]
        r["speedup_vs_B_supernet"] = ref["supernet_ms"] / r["supernet_ms"]
        r["speedup_vs_B_extracted"] = ref["extracted_ms"] / r["extracted_ms"]


def print_table(rows: list[dict], title: str) -> None:
    print(title)
    head = (f"{'preset':>6} {'res':>5} {'params':>14} {'supernet ms':>12} {'extracted ms':>13} "
            f"{'ext/sup':>8} {'vs B (sup)':>10} {'vs B (ext)':>10}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['preset']:>6} {r['resolution']:>5} {r['params']:>14,} "
              f"{r['supernet_ms']:>12.1f} {r['extracted_ms']:>13.1f} "
              f"{r['ratio_extracted_over_supernet']:>8.3f} {r['speedup_vs_B_supernet']:>9.2f}x "
              f"{r['speedup_vs_B_extracted']:>9.2f}x")
    rs = {r["preset"]: r for r in rows}
    if "S" in rs and "B" in rs:
        print(f"S vs B speed-up: supernet {rs['S']['speedup_vs_B_supernet']:.2f}x, extracted "
              f"{rs['S']['speedup_vs_B_extracted']:.2f}x")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--config", help="default: tiny-base on CPU, pixel-base on CUDA")
    ap.add_argument("--ssr-config", help="--cascade SSR config (default: <base>-ssr)")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"],
                    help="weights' dtype (bf16 = deployment setting on GPU)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--resolution", type=int, help="(base) resolution; default config's first")
    ap.add_argument("--final-resolution", type=int, help="--cascade: default 4x base")
    ap.add_argument("--scheduler", default="ddim", choices=["ddim", "dpm", "ddpm"])
    ap.add_argument("--guidance", type=float, default=1.0, help="CFG scale (1 = no CFG)")
    ap.add_argument("--presets", default="SMLB", help="presets to time, e.g. SB")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    ap.add_argument("--cascade", action="store_true", help="time the base→SSR→SSR cascade")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    args.config = args.config or ("pixel-base" if device.type == "cuda" else "tiny-base")
    args.presets = [p for p in args.presets.upper() if p.strip()]
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = False
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    with torch.inference_mode():
        rows = (bench_cascade if args.cascade else bench_single)(args, device, dtype)
    add_ratios(rows)
    settings = {k: v for k, v in vars(args).items() if k != "json"}
    settings["ssr_config"] = _ssr_config(args) if args.cascade else None
    settings["device_name"] = (torch.cuda.get_device_name(device) if device.type == "cuda"
                               else f"cpu x{torch.get_num_threads()}")
    if args.json:
        json.dump({"settings": settings, "rows": rows}, sys.stdout, indent=1)
        print()
    else:
        what = (f"cascade {args.config} + {settings['ssr_config']} → "
                f"{rows[0]['resolution']}px" if args.cascade else args.config)
        print_table(rows, f"sampling latency: {what}, {args.frames} frames, {args.steps} "
                          f"{args.scheduler} steps, batch {args.batch}, {args.dtype}, "
                          f"{settings['device_name']} (median of {args.repeats})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
