"""Step time and peak memory of one fixed arch under each way of gradient checkpointing.

    python benchmarks/bench_checkpointing.py                        # tiny-base, one CPU thread
    python benchmarks/bench_checkpointing.py --json docs/results/checkpointing_cpu.json
    python benchmarks/bench_checkpointing.py --config pixel-base --frames 16 --batch 4 \
        --modes block/full,layer/full,on,layer/selective train.device=cuda   # an 80 GB GPU

One Trainer (``train.fixed_arch``, default B, at the config's largest resolution; the same
batch every step), re-planned between rounds (:meth:`sned.train.memory.CheckpointPlan.apply`):
no checkpointing, every level by whole blocks or by layers, recomputing everything (``full``)
or keeping conv/matmul/attention outputs (``selective``), and the planner's ``--checkpointing
on`` plan (each level the way that needs least memory). The modes alternate in rounds of
``--block`` steps after a warm-up, so load drifts hit them alike. Printed per mode, side by side:
the median step time and its ratio to no checkpointing, the measured peak (CPU: the
allocator's, via the profiler; CUDA: ``max_memory_allocated``), the planner's estimate of it,
and the planner's recompute fractions (roofline; MACs alone). A mode that runs out of GPU
memory is reported as such; ratios are to the first mode listed that ran.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

MODES = ("off", "block/full", "layer/full", "block/selective", "layer/selective", "on")


def _plans(trainer, batch: int, resolution: int) -> dict:
    from sned.train.memory import (CheckpointPlan, device_memory, estimate, levels,
                                   plan_checkpointing)

    cfg = trainer.run.model
    plans = {"off": CheckpointPlan()}
    for mode in MODES[1:-1]:
        unit, policy = mode.split("/")
        plans[mode] = CheckpointPlan.uniform(cfg, True, unit, policy)
    plans["on"], _ = plan_checkpointing(
        True, lambda c: estimate(trainer.run, batch=batch, resolution=resolution,
                                 checkpointing=c, device=trainer.device.type),
        levels(cfg), device_memory(trainer.device))
    return plans


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="tiny-base")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--arch", default="B", help="train.fixed_arch (a preset)")
    ap.add_argument("--rounds", type=int, default=4, help="alternating rounds per mode")
    ap.add_argument("--block", type=int, default=2, help="timed steps per mode per round")
    ap.add_argument("--warm", type=int, default=1, help="untimed steps per mode first")
    ap.add_argument("--modes", default=",".join(MODES),
                    help=f"comma-separated, of {', '.join(MODES)}")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    ap.add_argument("overrides", nargs="*", help="run-config key=value overrides")
    args = ap.parse_args(argv)
    modes = args.modes.split(",")
    if not modes or not set(modes) <= set(MODES):
        ap.error(f"--modes {args.modes}: use some of {', '.join(MODES)}")
    torch.set_num_threads(args.threads)

    from sned.data.transforms import collate
    from sned.train.config import load_run_config
    from sned.train.memory import GIB, estimate, measure_step_peak
    from sned.train.trainer import Trainer

    over = [f"train.batch_size={args.batch}", f"model.frames={args.frames}",
            f"train.fixed_arch={args.arch}", "train.gradient_checkpointing=false",
            "train.ema_decay=0.99", f"data.num_videos={2 * args.batch}", "train.log_every=1000",
            *args.overrides]
    run = load_run_config(args.config, over)
    top = max(run.model.resolutions)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(run, Path(tmp) / "run", progress=False)
        trainer.save = lambda: None
        while trainer.sampler(trainer.step)[0][0].resolution != top:
            trainer.step += 1
        step0 = trainer.step
        ds = trainer.task.dataset()
        batch = collate([ds[i] for i in range(args.batch)])
        trainer.encode(batch["caption"])  # host-side text encoding: not timed
        plans = _plans(trainer, args.batch, top)

        def steps(mode: str, k: int) -> list[float]:
            plans[mode].apply(trainer.model, run.model)
            out = []
            for _ in range(k):
                trainer.step = step0  # the same arch and resolution every step
                _sync(trainer.device)
                t0 = time.perf_counter()
                trainer.train_step(batch)
                _sync(trainer.device)
                out.append(time.perf_counter() - t0)
            return out

        times: dict[str, list[float]] = {m: [] for m in modes}
        oom: set[str] = set()

        def timed(m: str, k: int) -> None:
            if m in oom:
                return
            try:
                times[m] += steps(m, k)
            except torch.OutOfMemoryError:
                oom.add(m)
                trainer.optimizer.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()

        for m in modes:
            timed(m, args.warm)
            times[m] = []
        for _ in range(args.rounds):
            for m in modes:
                timed(m, args.block)
        rows = []
        for m in modes:
            plans[m].apply(trainer.model, run.model)
            trainer.step = step0
            peak = None if m in oom else measure_step_peak(trainer, batch)
            est = estimate(run, batch=args.batch, resolution=top, checkpointing=plans[m],
                           device=trainer.device.type).to_dict()
            rows.append({"mode": m, "checkpoint_unit": est["checkpoint_unit"],
                         "checkpoint_policy": est["checkpoint_policy"],
                         "step_ms": 1e3 * statistics.median(times[m]) if times[m] else None,
                         "step_ms_all": [round(1e3 * t, 2) for t in times[m]],
                         "peak_gib": None if peak is None else peak / GIB,
                         "estimate_gib": est["total_gib"],
                         "activations_gib": est["activations_gib"],
                         "recompute_fraction": est["recompute_fraction"],
                         "recompute_macs_fraction": est["recompute_macs_fraction"]})
    base = next((r["step_ms"] for r in rows if r["step_ms"]), None)
    print(f"{args.config} fixed_arch={args.arch} batch {args.batch} × {args.frames} frames × "
          f"{top}² on {trainer.device} ({args.threads} thread(s)); median of "
          f"{args.rounds * args.block} steps per mode\n")
    print(f"| mode | unit | policy | step ms | × {rows[0]['mode']} | peak MiB | estimate MiB | "
          "recompute (roofline / MACs) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["step_ms"] is None:
            print(f"| {r['mode']} | {r['checkpoint_unit']} | {r['checkpoint_policy']} | OOM | "
                  f"| | {r['estimate_gib'] * 1024:.1f} | |")
            continue
        r["ratio"] = r["step_ms"] / base
        print(f"| {r['mode']} | {r['checkpoint_unit']} | {r['checkpoint_policy']} | "
              f"{r['step_ms']:.1f} | {r['ratio']:.2f} | {r['peak_gib'] * 1024:.1f} | "
              f"{r['estimate_gib'] * 1024:.1f} | {r['recompute_fraction']:.2f} / "
              f"{r['recompute_macs_fraction']:.2f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "config": args.config, "arch": args.arch, "batch": args.batch,
            "frames": args.frames, "resolution": top, "device": str(trainer.device),
            "threads": args.threads, "rounds": args.rounds, "block": args.block,
            "overrides": args.overrides, "torch": torch.__version__, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
