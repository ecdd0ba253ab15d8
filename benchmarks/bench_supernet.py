"""Supernet slicing overhead and subnet speed-ups, measured side by side in one run.

1. forward+backward of the supernet at arch B vs the extracted static B model (same inputs);
   target ratio <= 1.05.
2. forward latency of presets S/M/L vs B (extracted models) against their MACs ratios.
3. (--train) one training step: supernet(arch B) + masked AdamW vs static B + plain AdamW, and
   the masked-AdamW step alone vs torch AdamW (foreach).

Timings alternate between the compared models and report medians, so machine noise hits both.

    python benchmarks/bench_supernet.py --config tiny-base --device cpu
    python benchmarks/bench_supernet.py --config pixel-base --device cuda --dtype bf16 --batch 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import sned
from sned.train.masked_adamw import ActivityTracker, MaskedAdamW


def _timer(device: torch.device):
    if device.type == "cuda":
        def timed(fn):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end)
    else:
        def timed(fn):
            t = time.perf_counter()
            fn()
            return (time.perf_counter() - t) * 1e3
    return timed


def side_by_side(fns: dict, device, warmup: int, repeats: int) -> dict[str, float]:
    """Median ms per fn, alternating fns every repeat."""
    timed = _timer(device)
    for fn in fns.values():
        for _ in range(warmup):
            timed(fn)
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            times[k].append(timed(fn))
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="tiny-base")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--frames", type=int)
    ap.add_argument("--resolution", type=int)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--train", action="store_true", help="also time full training steps")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = False
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    space = sned.search_space(args.config)
    res = args.resolution or space.config.resolutions[0]
    torch.manual_seed(0)
    supernet = sned.build_supernet(args.config, device=device)
    archs = {p: space.preset(p, res) for p in "SMLB"}
    static = {p: sned.extract(supernet, a) for p, a in archs.items()}
    kw = sned.example_inputs(supernet, batch=args.batch, resolution=res, frames=args.frames)
    frames = kw["sample"].shape[2]
    autocast = (torch.autocast(device.type, dtype=dtype) if dtype != torch.float32
                else torch.autocast(device.type, enabled=False))
    results: dict = {"config": args.config, "device": _device_name(device), "dtype": args.dtype,
                     "batch": args.batch, "frames": frames, "resolution": res}

    def fwd_bwd(model, arch=None):
        def run():
            with autocast:
                out = model(**kw) if arch is None else model(**kw, arch=arch)
            out.float().square().mean().backward()
        return run

    supernet.train()
    for m in static.values():
        m.train()
    t = side_by_side({"supernet_B": fwd_bwd(supernet, archs["B"]),
                      "static_B": fwd_bwd(static["B"])}, device, args.warmup, args.repeats)
    results["fwd_bwd_ms"] = t
    results["slicing_overhead_ratio"] = t["supernet_B"] / t["static_B"]

    def fwd(model, arch=None):
        def run():
            with torch.no_grad(), autocast:
                model(**kw) if arch is None else model(**kw, arch=arch)
        return run

    for m in static.values():
        m.eval()
    supernet.eval()
    fw = side_by_side({p: fwd(static[p]) for p in "SMLB"} | {"supernet_S": fwd(supernet,
                                                                             archs["S"])},
                      device, args.warmup, args.repeats)
    macs = {p: space.cost(archs[p], frames=frames).macs for p in "SMLB"}
    params = {p: space.cost(archs[p]).params for p in "SMLB"}
    results["forward_ms"] = fw
    results["presets"] = {p: {"params": params[p], "macs_per_sample": macs[p],
                              "forward_ms": fw[p], "speedup_vs_B": fw["B"] / fw[p],
                              "macs_ratio_vs_B": macs["B"] / macs[p]} for p in "SMLB"}
    results["supernet_S_vs_static_S"] = fw["supernet_S"] / fw["S"]

    if args.train:
        results["train_step_ms"] = _train_steps(supernet, static["B"], archs["B"], kw, autocast,
                                                device, args)
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        _print(results)


def _train_steps(supernet, static_b, arch_b, kw, autocast, device, args) -> dict:
    tracker = ActivityTracker(supernet)
    masked = MaskedAdamW(supernet.parameters(), lr=1e-5)
    plain = torch.optim.AdamW(static_b.parameters(), lr=1e-5, foreach=True)
    plain_super = torch.optim.AdamW(supernet.parameters(), lr=1e-5, foreach=True)
    supernet.train()
    static_b.train()

    def step_super():
        tracker.reset()
        masked.zero_grad(set_to_none=True)
        with autocast:
            out = supernet(**kw, arch=arch_b)
        out.float().square().mean().backward()
        masked.step(regions=tracker.regions())

    def step_static():
        plain.zero_grad(set_to_none=True)
        with autocast:
            out = static_b(**kw)
        out.float().square().mean().backward()
        plain.step()

    t = side_by_side({"supernet_B_masked_adamw": step_super, "static_B_adamw": step_static},
                     device, args.warmup, args.repeats)
    # the optimizer step alone: masked (regions of arch B) vs torch AdamW foreach
    regions = tracker.regions()
    opt = side_by_side({"masked_adamw_step": lambda: masked.step(regions=regions),
                        "torch_adamw_step": lambda: plain_super.step()},
                       device, args.warmup, args.repeats)
    t.update(opt)
    t["train_step_ratio"] = t["supernet_B_masked_adamw"] / t["static_B_adamw"]
    t["masked_optimizer_overhead_of_step"] = ((opt["masked_adamw_step"] - opt["torch_adamw_step"])
                                              / t["supernet_B_masked_adamw"])
    return t


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _print(r: dict) -> None:
    print(f"{r['config']} on {r['device']} ({r['dtype']}), batch {r['batch']}, "
          f"{r['frames']}x{r['resolution']}x{r['resolution']}")
    t = r["fwd_bwd_ms"]
    print(f"fwd+bwd  supernet(arch B) {t['supernet_B']:.2f} ms  static B {t['static_B']:.2f} ms"
          f"  ratio {r['slicing_overhead_ratio']:.3f}")
    print(f"{'preset':<7}{'params':>14}{'GMACs/sample':>14}{'fwd ms':>10}{'speed-up':>10}"
          f"{'MACs ratio':>12}")
    for p, d in r["presets"].items():
        print(f"{p:<7}{d['params']:>14,}{d['macs_per_sample'] / 1e9:>14.2f}{d['forward_ms']:>10.2f}"
              f"{d['speedup_vs_B']:>10.2f}{d['macs_ratio_vs_B']:>12.2f}")
    print(f"forward supernet(arch S) / static S: {r['supernet_S_vs_static_S']:.3f}")
    if "train_step_ms" in r:
        for k, v in r["train_step_ms"].items():
            print(f"  {k}: {v:.3f}")


if __name__ == "__main__":
    main()
