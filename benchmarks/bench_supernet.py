"""Supernet slicing overhead and subnet speed-ups, measured side by side in one run.

1. forward+backward of the supernet at arch B vs the extracted static B model (same inputs);
   target ratio <= 1.05.
2. forward latency of presets S/M/L vs B (extracted models) against their MACs ratios.
3. (--train) one training step: supernet(arch B) + masked AdamW vs static B + plain AdamW, and
   the masked-AdamW step alone vs torch AdamW (foreach).

Every comparison is a pair (or group) timed side by side: all sides are warmed up, get identical
(cloned) inputs, run alternately with the order reversed every round, and the report gives the
median, the interquartile range and the per-round paired ratio, so machine noise and order
effects hit both sides alike.

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


def _stats(xs: list[float]) -> dict[str, float]:
    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return {"median": statistics.median(xs), "p25": q[0], "p75": q[2], "min": min(xs),
            "max": max(xs), "n": len(xs)}


def side_by_side(fns: dict, device, warmup: int, repeats: int) -> dict[str, dict]:
    """Time every fn ``repeats`` times, alternating: each round runs all fns, in forward order
    on even rounds and reversed on odd ones, so drift and order effects hit every side alike.
    Every fn is warmed up ``warmup`` times first (also alternating).

    Returns {name: {median, p25, p75, min, max, n}} in ms, and for the first fn against each
    other fn the per-round paired ratio as ``"{a}/{b}"``.
    """
    timed = _timer(device)
    names = list(fns)
    for i in range(warmup):
        for k in (names if i % 2 == 0 else names[::-1]):
            timed(fns[k])
    times: dict[str, list[float]] = {k: [] for k in names}
    for i in range(repeats):
        for k in (names if i % 2 == 0 else names[::-1]):
            times[k].append(timed(fns[k]))
    out = {k: _stats(v) for k, v in times.items()}
    a = names[0]
    for b in names[1:]:
        out[f"{a}/{b}"] = _stats([x / y for x, y in zip(times[a], times[b])])
    return out


def _clone_inputs(kw: dict) -> dict:
    """An identical, independent copy of the forward inputs (no shared tensors between sides)."""
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in kw.items()}


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
        inputs = _clone_inputs(kw)  # same values for every side, no shared tensors

        def run():
            model.zero_grad(set_to_none=True)  # every call allocates its gradients afresh
            with autocast:
                out = model(**inputs) if arch is None else model(**inputs, arch=arch)
            out.float().square().mean().backward()
        return run

    supernet.train()
    for m in static.values():
        m.train()
    t = side_by_side({"supernet_B": fwd_bwd(supernet, archs["B"]),
                      "static_B": fwd_bwd(static["B"])}, device, args.warmup, args.repeats)
    results["fwd_bwd_ms"] = t
    results["slicing_overhead_ratio"] = t["supernet_B/static_B"]["median"]
    supernet.zero_grad(set_to_none=True)
    static["B"].zero_grad(set_to_none=True)

    def fwd(model, arch=None):
        inputs = _clone_inputs(kw)

        def run():
            with torch.no_grad(), autocast:
                model(**inputs) if arch is None else model(**inputs, arch=arch)
        return run

    for m in static.values():
        m.eval()
    supernet.eval()
    order = "BSML"  # B first: every preset gets a paired ratio against B
    fw = side_by_side({p: fwd(static[p]) for p in order}, device, args.warmup, args.repeats)
    sup = side_by_side({"supernet_S": fwd(supernet, archs["S"]), "static_S": fwd(static["S"])},
                       device, args.warmup, args.repeats)
    macs = {p: space.cost(archs[p], frames=frames).macs for p in "SMLB"}
    params = {p: space.cost(archs[p]).params for p in "SMLB"}
    results["forward_ms"] = fw
    results["presets"] = {
        p: {"params": params[p], "macs_per_sample": macs[p], "forward_ms": fw[p]["median"],
            "speedup_vs_B": 1.0 if p == "B" else fw[f"B/{p}"]["median"],
            "speedup_iqr": (None if p == "B" else [fw[f"B/{p}"]["p25"], fw[f"B/{p}"]["p75"]]),
            "macs_ratio_vs_B": macs["B"] / macs[p]} for p in "SMLB"}
    results["supernet_S_vs_static_S"] = sup["supernet_S/static_S"]

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
    t["train_step_ratio"] = t["supernet_B_masked_adamw/static_B_adamw"]["median"]
    t["masked_optimizer_overhead_of_step"] = (
        (opt["masked_adamw_step"]["median"] - opt["torch_adamw_step"]["median"])
        / t["supernet_B_masked_adamw"]["median"])
    return t


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _ms(d: dict) -> str:
    return f"{d['median']:.2f} ms [IQR {d['p25']:.2f}-{d['p75']:.2f}]"


def _ratio(d: dict) -> str:
    return f"{d['median']:.3f} [IQR {d['p25']:.3f}-{d['p75']:.3f}, n={d['n']}]"


def _print(r: dict) -> None:
    print(f"{r['config']} on {r['device']} ({r['dtype']}), batch {r['batch']}, "
          f"{r['frames']}x{r['resolution']}x{r['resolution']}")
    t = r["fwd_bwd_ms"]
    print(f"fwd+bwd  supernet(arch B) {_ms(t['supernet_B'])}  static B {_ms(t['static_B'])}"
          f"  paired ratio {_ratio(t['supernet_B/static_B'])}")
    print(f"{'preset':<7}{'params':>14}{'GMACs/sample':>14}{'fwd ms':>10}{'speed-up':>10}"
          f"{'IQR':>16}{'MACs ratio':>12}")
    for p, d in r["presets"].items():
        iqr = "" if d["speedup_iqr"] is None else "{:.2f}-{:.2f}".format(*d["speedup_iqr"])
        print(f"{p:<7}{d['params']:>14,}{d['macs_per_sample'] / 1e9:>14.2f}{d['forward_ms']:>10.2f}"
              f"{d['speedup_vs_B']:>10.2f}{iqr:>16}{d['macs_ratio_vs_B']:>12.2f}")
    print(f"forward supernet(arch S) / static S: {_ratio(r['supernet_S_vs_static_S'])}")
    if "train_step_ms" in r:
        for k, v in r["train_step_ms"].items():
            if not isinstance(v, dict):
                text = f"{v:.3f}"
            else:
                text = _ratio(v) if "/" in k else _ms(v)
            print(f"  {k}: {text}")


if __name__ == "__main__":
    main()
