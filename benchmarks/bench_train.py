"""Training throughput of the real trainer: steps/s, samples/s and (on GPU) MFU.

Runs ``Trainer.fit`` for a few steps on synthetic data after a warm-up, for each of: exact
freezing (masked AdamW) and plain AdamW, alternating, so the optimizer's cost is measured side by
side. MFU = model FLOPs of the sampled archs (3 × forward MACs × 2, from the cost model) ÷ time ÷
peak.

Checkpoint writes are not timed (nor written at all): ``fit`` saves at its last step, which for
pixel-base is a 26 GB write (and two kept need ≈ 52 GB of disk), so the benchmark's trainers
save nothing — the timed region is the training steps and their data loading only.

    python benchmarks/bench_train.py --config tiny-base --steps 10
    python benchmarks/bench_train.py --config pixel-base --steps 20 --batch 4 --peak-tflops 989
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from sned.train.config import load_run_config
from sned.train.trainer import Trainer


def run(config: str, exact: bool, steps: int, warmup: int, batch: int, frames: int | None,
        extra: list[str]) -> dict:
    over = [f"train.batch_size={batch}", f"train.exact_freeze={str(exact).lower()}",
            "train.warmup_steps=0", "train.checkpoint_every=100000", "data.num_videos=256",
            "train.ema_decay=0.999"] + ([f"model.frames={frames}"] if frames else []) + extra
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(load_run_config(config, over), out, progress=False)
        skipped: list[int] = []  # steps fit would have saved at: nothing written or timed
        trainer.save = lambda: skipped.append(trainer.step)
        trainer.fit(warmup)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        trainer.fit(warmup + steps)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        hist = trainer.history[warmup:]
        frames_ = trainer.run.model.frames
        macs = sum(trainer.space.cost(archs[0], frames=frames_).macs * trainer.cfg.batch_for(res)
                   for _, res, archs in hist)
        samples = sum(trainer.cfg.batch_for(res) for _, res, _ in hist)
        peak_mem = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    return {"exact_freeze": exact, "steps_per_s": steps / seconds,
            "samples_per_s": samples / seconds, "train_flops": 6 * macs, "seconds": seconds,
            "peak_mem_gib": peak_mem, "saves_skipped": len(skipped)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="tiny-base")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--frames", type=int)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--peak-tflops", type=float, default=989.0,
                    help="dense bf16 peak for MFU (H100 SXM: 989)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    results = {True: [], False: []}
    for _ in range(args.repeats):
        for exact in (True, False):
            results[exact].append(run(args.config, exact, args.steps, args.warmup, args.batch,
                                      args.frames, args.overrides))
    summary = {}
    for exact, rs in results.items():
        best = max(rs, key=lambda r: r["steps_per_s"])
        if torch.cuda.is_available():
            best["mfu"] = best["train_flops"] / best["seconds"] / (args.peak_tflops * 1e12)
        summary["masked_adamw" if exact else "plain_adamw"] = best
    m, p = summary["masked_adamw"], summary["plain_adamw"]
    summary["masked_step_time_overhead"] = p["steps_per_s"] / m["steps_per_s"] - 1
    summary["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else \
        f"cpu ({torch.get_num_threads()} threads)"
    if args.json:
        print(json.dumps(summary, indent=1))
        return
    print(f"{args.config} on {summary['device']}, batch {args.batch}, {args.steps} steps "
          f"(best of {args.repeats})")
    for k in ("masked_adamw", "plain_adamw"):
        r = summary[k]
        extra = f"  MFU {r['mfu']:.1%}" if "mfu" in r else ""
        mem = f"  peak {r['peak_mem_gib']:.1f} GiB" if r["peak_mem_gib"] else ""
        print(f"  {k:<13} {r['steps_per_s']:.2f} steps/s  {r['samples_per_s']:.1f} samples/s"
              f"{extra}{mem}")
    print(f"  exact-freeze step-time overhead: {summary['masked_step_time_overhead']:+.1%}")


if __name__ == "__main__":
    main()
