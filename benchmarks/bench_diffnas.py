"""DiffNAS on a briefly trained tiny-base teacher: MACs cut and val loss vs the uniform shrink.

Trains tiny-base with the quickstart recipe for ``--train-seconds`` (CPU is fine), extracts its
preset B as the teacher (raw weights), runs ``sned diffnas`` and prints the report table.

    PYTHONPATH=src python benchmarks/bench_diffnas.py --out /tmp/bench-diffnas
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="bench-diffnas")
    p.add_argument("--train-seconds", type=float, default=240)
    p.add_argument("--supernet-steps", type=int, default=60)
    p.add_argument("--retrain-steps", type=int, default=60)
    p.add_argument("--budget", type=int, default=16)
    p.add_argument("--heldout", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--teacher-prob", type=float, default=1.0,
                   help="supernet: probability of also training the teacher-shaped candidate")
    p.add_argument("--max-macs", type=float, default=None)
    p.add_argument("--fvd-videos", type=int, default=16)
    p.add_argument("--name", default="diffnas", help="DiffNAS output folder under --out")
    args = p.parse_args()

    from sned.diffnas import Options, run_diffnas
    from sned.extract import export_subnet
    from sned.pipelines.loading import load_denoiser
    from sned.app.quickstart import QUICK_BASE, train_supernet

    out = Path(args.out)
    dev = torch.device(args.device)
    t0 = time.monotonic()
    run_dir = out / "teacher-run"
    if not (run_dir / "checkpoints" / "latest").exists():
        train_supernet("base", "tiny-base", QUICK_BASE, run_dir,
                       args.train_seconds, dev)
    teacher = out / "teacher"
    if not teacher.exists():
        export_subnet(load_denoiser(run_dir, preset="B", ema=False, device=dev), teacher)
    t1 = time.monotonic()
    dn = out / args.name
    run_diffnas(teacher, dn,
                Options(supernet_steps=args.supernet_steps, retrain_steps=args.retrain_steps,
                        budget=args.budget, heldout=args.heldout, device=args.device,
                        teacher_prob=args.teacher_prob, fvd_videos=args.fvd_videos,
                        max_macs=None if args.max_macs is None else int(args.max_macs)))
    t2 = time.monotonic()
    print((dn / "report.md").read_text())
    print(f"teacher training {t1 - t0:.0f} s, diffnas {t2 - t1:.0f} s on {dev} "
          f"({torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
