"""How many study training steps per second a machine gives, 1 run alone vs K runs side by side.

    python benchmarks/bench_study_throughput.py --device cpu --jobs 1,2 --steps 20
    python benchmarks/bench_study_throughput.py --device cuda --jobs 1,4,8 --steps 60 \
        data.num_workers=0     # key=value: run-config overrides of every job

Each job is one process training the study's default ``supernet`` run (``sned study``'s run
config: tiny-base, 4 frames, the plan's batch per resolution, ``--resolutions``) with one CPU
thread, in a temporary folder; it times ``--steps`` steps after ``--warm`` untimed ones. Printed
per K: the median ms per step of one process and the aggregate steps/s of all K — the number
that sizes a study (`steps × runs / aggregate` seconds of training). Measured side by side in
one run, so the ratios hold on a noisy machine.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _worker(device: str, resolutions: tuple[int, ...], method: str, steps: int, warm: int,
            overrides: list[str], start, queue) -> None:
    import torch

    torch.set_num_threads(1)
    from sned.app.study import StudyPlan, plan_runs, run_config
    from sned.train.trainer import Trainer

    plan = StudyPlan(steps=steps + warm)
    spec = next(s for s in plan_runs(plan, resolutions) if s.name == method)
    run = run_config(plan, spec, 0, resolutions, device, extra=overrides)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(run, Path(tmp) / "run", progress=False)
        trainer.fit(steps=warm)
        start.wait()  # every job of this K starts timing together
        t0 = time.perf_counter()
        trainer.fit(steps=warm + steps)
        if device == "cuda":
            torch.cuda.synchronize()
        queue.put((time.perf_counter() - t0) / steps)


def measure(jobs: int, args) -> dict:
    ctx = mp.get_context("spawn")
    start, queue = ctx.Barrier(jobs), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(args.device, args.resolutions, args.method,
                                               args.steps, args.warm, args.overrides,
                                               start, queue))
             for _ in range(jobs)]
    for p in procs:
        p.start()
    per_step = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    return {"jobs": jobs, "ms_per_step": 1000 * statistics.median(per_step),
            "aggregate_steps_per_s": sum(1 / s for s in per_step)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--jobs", default="1,2", help="comma-separated K values")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per job")
    ap.add_argument("--warm", type=int, default=3, help="untimed steps first")
    ap.add_argument("--resolutions", default="16", help="e.g. 16 or 16,32")
    ap.add_argument("--method", default="supernet", help="a run name of the study plan, e.g. "
                                                         "supernet or standalone-B")
    ap.add_argument("--out", help="write the rows as JSON here")
    args, args.overrides = ap.parse_known_args()  # key=value run-config overrides
    args.resolutions = tuple(int(r) for r in args.resolutions.split(","))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    rows = []
    for k in (int(j) for j in args.jobs.split(",")):
        rows.append(measure(k, args))
        r = rows[-1]
        print(f"jobs {k}: {r['ms_per_step']:.1f} ms/step per job, "
              f"{r['aggregate_steps_per_s']:.2f} steps/s together "
              f"({r['aggregate_steps_per_s'] / (1000 / rows[0]['ms_per_step']):.2f}× one job)",
              flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"device": args.device, "method": args.method,
                                              "resolutions": list(args.resolutions),
                                              "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
