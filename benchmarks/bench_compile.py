"""Compiled vs eager serving of extracted subnets (``sned.pipelines.compile_model``).

For each preset: the extracted model eager and a second copy compiled with ``torch.compile``
(static shapes), timed side by side after warm-up (the compile happens in the warm-up and is
reported separately), alternating every repeat. Prints the denoiser-forward and whole-sampling
medians and the eager/compiled ratios (> 1 = compiled is faster), plus the largest difference
between the two outputs.

    python benchmarks/bench_compile.py --config tiny-base --presets S,B --frames 4 --batch 2
    python benchmarks/bench_compile.py --config pixel-base --device cuda --presets S,B
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import sned
from sned.pipelines import compile_model, sample


def _timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) * 1e3


def bench(args) -> dict:
    device = torch.device(args.device)
    torch.manual_seed(0)
    supernet = sned.build_supernet(args.config, [f"frames={args.frames}"] if args.frames
                                   else None)
    space = sned.search_space(supernet.config)
    out = {"config": args.config, "device": str(device), "threads": torch.get_num_threads(),
           "batch": args.batch, "steps": args.steps, "presets": {}}
    for p in args.presets.split(","):
        arch = space.preset(p)
        eager = sned.extract(supernet, arch).to(device)
        comp = compile_model(sned.extract(supernet, arch).to(device))
        kw = sned.example_inputs(eager, batch=args.batch)
        text, mask = kw["encoder_hidden_states"], kw["encoder_attention_mask"]

        def fwd(m):
            with torch.no_grad():
                return m(**kw)

        def smp(m):
            return sample(m, text, mask, steps=args.steps, guidance_scale=3.0, seed=0,
                          progress=False, dtype=args.precision)

        t0 = time.perf_counter()
        diff = (fwd(comp) - fwd(eager)).abs().max().item()  # compiles the forward
        smp(comp)  # and the sampling shape (CFG doubles the batch)
        compile_s = time.perf_counter() - t0
        sdiff = (smp(comp) - smp(eager)).abs().max().item()
        for m in (eager, comp):
            for _ in range(args.warmup):
                fwd(m)
        times = {"eager_fwd": [], "compiled_fwd": [], "eager_sample": [], "compiled_sample": []}
        for i in range(args.repeats):
            pair = [("eager", eager), ("compiled", comp)]
            for name, m in (pair if i % 2 == 0 else pair[::-1]):
                times[f"{name}_fwd"].append(_timed(lambda: fwd(m), device))
                times[f"{name}_sample"].append(_timed(lambda: smp(m), device))
        med = {k: statistics.median(v) for k, v in times.items()}
        out["presets"][p] = {
            "params": space.cost(arch).params, "compile_s": compile_s,
            "max_abs_diff_forward": diff, "max_abs_diff_sample": sdiff,
            "fwd_ms": {"eager": med["eager_fwd"], "compiled": med["compiled_fwd"]},
            "sample_ms": {"eager": med["eager_sample"], "compiled": med["compiled_sample"]},
            "speedup_fwd": med["eager_fwd"] / med["compiled_fwd"],
            "speedup_sample": med["eager_sample"] / med["compiled_sample"],
            "speedup_fwd_per_round": [e / c for e, c in zip(times["eager_fwd"],
                                                            times["compiled_fwd"])]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="tiny-base")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--presets", default="S,B")
    ap.add_argument("--frames", type=int)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=10, help="DDIM steps of the sampling timing")
    ap.add_argument("--precision", default="auto", help="auto (bf16 on CUDA), bf16 or fp32")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    r = bench(args)
    if args.json:
        print(json.dumps(r, indent=1))
        return
    print(f"{r['config']} on {r['device']} ({r['threads']} threads), batch {r['batch']}, "
          f"{r['steps']} sampling steps; eager / compiled (> 1: compiled faster)")
    print(f"{'preset':<7}{'compile s':>10}{'fwd eager':>11}{'fwd comp':>10}{'ratio':>7}"
          f"{'sample eager':>14}{'sample comp':>13}{'ratio':>7}{'max|diff|':>11}")
    for p, v in r["presets"].items():
        print(f"{p:<7}{v['compile_s']:>10.1f}{v['fwd_ms']['eager']:>9.1f}ms"
              f"{v['fwd_ms']['compiled']:>8.1f}ms{v['speedup_fwd']:>7.2f}"
              f"{v['sample_ms']['eager']:>12.1f}ms{v['sample_ms']['compiled']:>11.1f}ms"
              f"{v['speedup_sample']:>7.2f}{v['max_abs_diff_sample']:>11.1e}")


if __name__ == "__main__":
    main()
