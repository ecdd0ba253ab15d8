"""What one tiny-base study step does, by phase, old vs new side by side (issue 25).

    python benchmarks/bench_step_ops.py                       # census + timing, one thread
    python benchmarks/bench_step_ops.py --timed 24 --json docs/results/step_ops.json

Two parts, each on the study's ``supernet`` run config (``sned study``'s defaults: tiny-base,
4 frames, 16 px, batch 4, the cycle sampler past its warm-up so every step of a cycle —
largest, random, smallest, random — is seen), one CPU thread:

1. **Census** of one sampler cycle (4 steps) under ``torch.profiler``, per phase —
   ``forward`` (everything the task does outside autograd's backward: noise, forward, loss),
   ``backward``, ``optimizer``, ``ema`` and ``other`` (clipping, the finite check, the lr
   schedule) — for ``train.update_impl=legacy`` (the previous slice-based masked AdamW and
   diffusers' two-pass EMA), ``fused`` (this version) and plain ``torch.optim.AdamW
   (foreach=True)`` with the same EMA (``train.exact_freeze=false``; the goal's yardstick).
   Counted per step: ``ops`` = aten calls dispatched from Python/the engine (top-level aten
   events: what a GPU launch count follows), ``leaf_ops`` = aten events without aten children
   (≈ kernels), and ``ms`` = host time of the phase's top-level events (profiled: inflated).
2. **Step time**: legacy and fused trainers with the same seed (same archs, batches, noise)
   alternate blocks of steps after a warm-up; printed: median ms per step of each, the ratio,
   and the largest difference of the losses and the final weights (same results to 1e-6).
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

IMPLS = {"legacy": ["train.update_impl=legacy"], "fused": [],
         "plain-adamw": ["train.exact_freeze=false"]}
PHASES = ("forward", "backward", "optimizer", "ema", "other")


def make_trainer(impl: str, out: Path, warm_cycle: int, extra: list[str]):
    from sned.app.study import StudyPlan, plan_runs, run_config
    from sned.train.trainer import Trainer

    plan = StudyPlan(steps=1000)
    spec = next(s for s in plan_runs(plan, (16,)) if s.name == "supernet")
    run = run_config(plan, spec, 0, (16,), "cpu", extra=IMPLS[impl] + [
        f"train.warmup_steps={warm_cycle}", "train.log_every=1000", *extra])
    trainer = Trainer(run, out, progress=False)
    trainer.save = lambda: None  # nothing written or timed
    if impl == "plain-adamw":  # the yardstick: torch's multi-tensor AdamW
        for g in trainer.optimizer.param_groups:
            g["foreach"] = True
    return trainer


def _labelled(fn, label: str):
    def wrapped(*a, **k):
        with torch.profiler.record_function(label):
            return fn(*a, **k)
    return wrapped


def census(trainer, steps: int = 4) -> dict:
    """Per-phase op counts and host ms per step over ``steps`` steps of ``trainer.fit``."""
    from torch.profiler import ProfilerActivity, profile

    trainer.optimizer.step = _labelled(trainer.optimizer.step, "phase::optimizer")
    if trainer.ema is not None:
        trainer.ema.step = _labelled(trainer.ema.step, "phase::ema")
    trainer.task.backward = _labelled(trainer.task.backward, "phase::task")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        trainer.fit(trainer.step + steps)
    out = {p: {"ops": 0, "leaf_ops": 0, "ms": 0.0} for p in PHASES}
    for e in prof.events():
        if not e.name.startswith("aten::"):
            continue
        phase, top, node = "other", True, e.cpu_parent
        while node is not None:
            if node.name.startswith("aten::"):
                top = False
            if node.name.startswith("autograd::engine::evaluate_function"):
                phase = "backward"
            elif node.name in ("phase::optimizer", "phase::ema") and phase == "other":
                phase = node.name.split("::")[1]
            elif node.name == "phase::task" and phase == "other":
                phase = "forward"
            node = node.cpu_parent
        row = out[phase]
        row["leaf_ops"] += not any(c.name.startswith("aten::") for c in e.cpu_children)
        if top:
            row["ops"] += 1
            row["ms"] += e.cpu_time_total / 1e3
    return {p: {"ops": round(v["ops"] / steps, 1), "leaf_ops": round(v["leaf_ops"] / steps, 1),
                "ms": round(v["ms"] / steps, 2)} for p, v in out.items()}


def timing(timed: int, warm: int, block: int, warm_cycle: int, extra: list[str]) -> dict:
    """Legacy vs fused, same seed, alternating blocks of ``block`` steps."""
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {k: make_trainer(k, Path(tmp) / k, warm_cycle, extra)
                    for k in ("legacy", "fused")}
        losses = {k: [] for k in trainers}
        for k, t in trainers.items():
            _record_losses(t, losses[k])
            t.fit(warm)
        per_step = {k: [] for k in trainers}
        cpu = {k: [] for k in trainers}  # process CPU time: less sensitive to other jobs
        while trainers["fused"].step < warm + timed:
            for k, t in trainers.items():
                t0, c0 = time.perf_counter(), time.process_time()
                t.fit(t.step + block)
                per_step[k].append((time.perf_counter() - t0) * 1e3 / block)
                cpu[k].append((time.process_time() - c0) * 1e3 / block)
        a, b = (dict(t.model.named_parameters()) for t in trainers.values())
        weight_diff = max(float((a[n] - b[n]).detach().abs().max()) for n in a)
        loss_diff = max(abs(x - y) for x, y in zip(*losses.values()))
        archs_same = ([h[2] for h in trainers["legacy"].history]
                      == [h[2] for h in trainers["fused"].history])
    med = {k: statistics.median(v) for k, v in per_step.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    return {"ms_per_step": {k: round(v, 2) for k, v in med.items()},
            "speedup": round(med["legacy"] / med["fused"], 3),
            "cpu_ms_per_step": {k: round(v, 2) for k, v in med_cpu.items()},
            "cpu_speedup": round(med_cpu["legacy"] / med_cpu["fused"], 3), "steps_timed": timed,
            "blocks": len(per_step["fused"]), "max_loss_diff": loss_diff,
            "max_weight_diff": weight_diff, "same_archs": archs_same}


def _record_losses(trainer, sink: list) -> None:
    step = trainer.train_step

    def recorded(batch):
        result = step(batch)
        sink.append(float(result.loss))  # after the step: not inside the timed update
        return result
    trainer.train_step = recorded


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timed", type=int, default=16, help="timed steps per implementation")
    ap.add_argument("--warm", type=int, default=8, help="untimed steps first")
    ap.add_argument("--block", type=int, default=4, help="steps per alternating block")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("overrides", nargs="*", help="run-config key=value overrides")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warm_cycle = 4  # the sampler's warm-up is over after one cycle: random archs included
    result = {"census": {}, "threads": args.threads, "overrides": args.overrides}
    with tempfile.TemporaryDirectory() as tmp:
        for impl in IMPLS:
            t = make_trainer(impl, Path(tmp) / impl, warm_cycle, args.overrides)
            t.fit(args.warm)
            result["census"][impl] = census(t)
    print(f"{'phase':10s}" + "".join(f"{k:>30s}" for k in IMPLS))
    print(f"{'':10s}" + "".join(f"{'ops  leaf_ops  host ms':>30s}" for _ in IMPLS))
    for p in PHASES:
        cells = [result["census"][k][p] for k in IMPLS]
        print(f"{p:10s}" + "".join(f"{c['ops']:>12.0f}{c['leaf_ops']:>10.0f}{c['ms']:>8.1f}"
                                   for c in cells))
    upd = {k: sum(result["census"][k][p]["ops"] for p in ("optimizer", "ema")) for k in IMPLS}
    print(f"optimizer + EMA ops per step: " + ", ".join(f"{k} {v:.0f}" for k, v in upd.items())
          + f"; fused / plain AdamW = {upd['fused'] / upd['plain-adamw']:.2f}")
    result["update_ops_ratio_fused_vs_plain"] = round(upd["fused"] / upd["plain-adamw"], 3)
    if not args.skip_timing:
        result["timing"] = timing(args.timed, args.warm, args.block, warm_cycle,
                                  args.overrides)
        tm = result["timing"]
        print(f"step time (1 thread): legacy {tm['ms_per_step']['legacy']:.1f} ms, fused "
              f"{tm['ms_per_step']['fused']:.1f} ms -> {tm['speedup']:.2f}x (process CPU time: "
              f"{tm['cpu_speedup']:.2f}x); max |loss diff| "
              f"{tm['max_loss_diff']:.2e}, max |weight diff| {tm['max_weight_diff']:.2e}, "
              f"same archs {tm['same_archs']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
