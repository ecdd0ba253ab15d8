"""What one tiny-base study step does, by phase, old vs new side by side (issue 25).

    python benchmarks/bench_step_ops.py                       # census + timing, one thread
    python benchmarks/bench_step_ops.py --timed 24 --json docs/results/step_ops.json

Two parts, each on the study's ``supernet`` run config (``sned study``'s defaults: tiny-base,
4 frames, 16 px, batch 4, the cycle sampler past its warm-up so every step of a cycle —
largest, random, smallest, random — is seen), one CPU thread:

1. **Census** of one sampler cycle (4 steps) under ``torch.profiler``, per phase —
   ``forward`` (everything the task does outside autograd's backward: noise, forward, loss),
   ``teacher`` (in-place distillation's forward without gradient), ``backward``,
   ``optimizer`` (its ``prepare`` included), ``ema`` and ``other`` (clipping, the finite
   check, the lr schedule) — for ``train.update_impl=legacy`` (the previous slice-based masked AdamW and
   diffusers' two-pass EMA), ``fused`` (this version) and plain ``torch.optim.AdamW
   (foreach=True)`` with the same EMA (``train.exact_freeze=false``; the goal's yardstick).
   Counted per step: ``ops`` = aten calls dispatched from Python/the engine (top-level aten
   events: what a GPU launch count follows), ``leaf_ops`` = aten events without aten children
   (≈ kernels), and ``ms`` = host time of the phase's top-level events (profiled: inflated).
2. **Step time**: legacy and fused trainers with the same seed (same archs, batches, noise)
   alternate blocks of steps after a warm-up; printed: median ms per step of each, the ratio,
   and the largest difference of the losses and the final weights (same results to 1e-6).
3. ``--baseline-src OTHER/src``: the same study step timed in separate processes, this tree vs
   another checkout (e.g. the commit before issue 25), alternating ``--rounds`` times — the
   whole step's old vs new (attention caches, device RNG and tracker included, which part 2
   shares between its two sides) — with the losses and final weights compared.

    python benchmarks/bench_step_ops.py --skip-census --skip-timing --baseline-src /work/main/src
    # the checkout before issue 25 ran issue 18's recipe; overrides give this tree the same:
    python benchmarks/bench_step_ops.py --skip-census --skip-timing --baseline-src OLD/src
        train.draw=uniform train.inplace_distill=false
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
PHASES = ("forward", "teacher", "backward", "optimizer", "ema", "other")


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
    if hasattr(trainer.optimizer, "prepare"):  # the update's lists, built before the read
        trainer.optimizer.prepare = _labelled(trainer.optimizer.prepare, "phase::optimizer")
    if trainer.ema is not None:
        trainer.ema.step = _labelled(trainer.ema.step, "phase::ema")
    trainer.task.backward = _labelled(trainer.task.backward, "phase::task")
    if hasattr(trainer.task, "_teacher_prediction"):  # distillation's forward without grad
        trainer.task._teacher_prediction = _labelled(trainer.task._teacher_prediction,
                                                     "phase::teacher")
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
            elif (node.name in ("phase::optimizer", "phase::ema", "phase::teacher")
                  and phase == "other"):
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


def worker(steps: int, warm: int, weights: Path, extra: list[str]) -> None:
    """One process: the study step on this tree (whatever ``sned`` imports), printed as JSON;
    ``extra``: run-config overrides (e.g. the recipe an older checkout ran)."""
    from safetensors.torch import save_file

    from sned.app.study import StudyPlan, plan_runs, run_config
    from sned.train.trainer import Trainer

    torch.set_num_threads(1)
    plan = StudyPlan(steps=1000)
    spec = next(s for s in plan_runs(plan, (16,)) if s.name == "supernet")
    run = run_config(plan, spec, 0, (16,), "cpu", extra=["train.warmup_steps=4",
                                                          "train.log_every=1000", *extra])
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(run, Path(tmp) / "run", progress=False)
        trainer.save = lambda: None
        losses: list[float] = []
        _record_losses(trainer, losses)
        trainer.fit(warm)
        t0, c0 = time.perf_counter(), time.process_time()
        trainer.fit(warm + steps)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        save_file({n: p.detach().contiguous() for n, p in trainer.model.named_parameters()},
                  str(weights))
    print(json.dumps({"ms": wall * 1e3 / steps, "cpu_ms": cpu * 1e3 / steps,
                      "losses": losses}))


def baseline(src: Path, rounds: int, steps: int, warm: int, extra: list[str]) -> dict:
    """This tree vs ``src`` in alternating processes (same seed, same study step); ``extra``
    overrides go to THIS tree's runs only (to run the recipe the older checkout ran)."""
    import os
    import subprocess

    from safetensors.torch import load_file

    here = Path(__file__).resolve().parents[1] / "src"
    runs: dict[str, list[dict]] = {"baseline": [], "this": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for name, path in (("baseline", src), ("this", here)):
                w = Path(tmp) / f"{name}-{r}.safetensors"
                env = {**os.environ, "PYTHONPATH": str(path), "OMP_NUM_THREADS": "1"}
                out = subprocess.run([sys.executable, __file__, "--worker", str(w),
                                      "--timed", str(steps), "--warm", str(warm),
                                      *(extra if name == "this" else [])],
                                     capture_output=True, text=True, env=env, check=True)
                runs[name].append({**json.loads(out.stdout.strip().splitlines()[-1]),
                                   "weights": w})
        a, b = (load_file(str(runs[k][-1]["weights"])) for k in ("baseline", "this"))
        weight_diff = max(float((a[n] - b[n]).abs().max()) for n in a)
    med = {k: statistics.median(x["ms"] for x in v) for k, v in runs.items()}
    cpu = {k: statistics.median(x["cpu_ms"] for x in v) for k, v in runs.items()}
    loss_diff = max(abs(x - y) for x, y in zip(runs["baseline"][-1]["losses"],
                                                 runs["this"][-1]["losses"]))
    return {"baseline_src": str(src), "rounds": rounds, "steps": steps, "this_overrides": extra,
            "ms_per_step": med, "speedup": round(med["baseline"] / med["this"], 3),
            "cpu_ms_per_step": cpu, "cpu_speedup": round(cpu["baseline"] / cpu["this"], 3),
            "per_round": {k: [(round(x["ms"], 1), round(x["cpu_ms"], 1)) for x in v]
                          for k, v in runs.items()},  # (wall, CPU) ms per step
            "max_loss_diff": loss_diff, "max_weight_diff": weight_diff}


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
    ap.add_argument("--skip-census", action="store_true")
    ap.add_argument("--baseline-src", type=Path, help="another checkout's src/ to time against")
    ap.add_argument("--rounds", type=int, default=3, help="alternating processes per side")
    ap.add_argument("--impls", default=",".join(IMPLS),
                    help=f"census of these (comma-separated; of {', '.join(IMPLS)})")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("overrides", nargs="*", help="run-config key=value overrides")
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.timed, args.warm, args.worker, args.overrides)
        return 0
    torch.set_num_threads(args.threads)
    warm_cycle = 4  # the sampler's warm-up is over after one cycle: random archs included
    result = {"census": {}, "threads": args.threads, "overrides": args.overrides}
    if args.baseline_src:
        result["baseline"] = b = baseline(args.baseline_src, args.rounds, args.timed, args.warm,
                                          args.overrides)
        print(f"study step vs {b['baseline_src']} (separate processes, {b['rounds']} rounds): "
              f"{b['ms_per_step']['baseline']:.1f} -> {b['ms_per_step']['this']:.1f} ms "
              f"({b['speedup']:.2f}x; CPU time {b['cpu_speedup']:.2f}x); max |loss diff| "
              f"{b['max_loss_diff']:.2e}, max |weight diff| {b['max_weight_diff']:.2e}")
    if args.skip_census:
        return _finish(args, result)
    impls = [k for k in args.impls.split(",") if k]
    if not impls or any(k not in IMPLS for k in impls):
        ap.error(f"--impls {args.impls!r}: choose from {', '.join(IMPLS)}")
    with tempfile.TemporaryDirectory() as tmp:
        for impl in impls:
            t = make_trainer(impl, Path(tmp) / impl, warm_cycle, args.overrides)
            t.fit(args.warm)
            result["census"][impl] = census(t)
    print(f"{'phase':10s}" + "".join(f"{k:>30s}" for k in impls))
    print(f"{'':10s}" + "".join(f"{'ops  leaf_ops  host ms':>30s}" for _ in impls))
    for p in PHASES:
        cells = [result["census"][k][p] for k in impls]
        print(f"{p:10s}" + "".join(f"{c['ops']:>12.0f}{c['leaf_ops']:>10.0f}{c['ms']:>8.1f}"
                                   for c in cells))
    upd = {k: sum(result["census"][k][p]["ops"] for p in ("optimizer", "ema")) for k in impls}
    print(f"optimizer + EMA ops per step: " + ", ".join(f"{k} {v:.0f}" for k, v in upd.items()))
    if "fused" in upd and "plain-adamw" in upd:
        print(f"fused / plain AdamW = {upd['fused'] / upd['plain-adamw']:.2f}")
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
    return _finish(args, result)


def _finish(args, result: dict) -> int:
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
