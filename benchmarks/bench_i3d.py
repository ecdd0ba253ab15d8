"""I3D feature-extraction throughput (videos/s) for FVD, with RANDOM weights.

Input: uint8 videos (N, 16, 64, 64, 3); the extractor resizes every frame to 224×224 (the cost
is that of I3D at 16×224×224 whatever the input size). Rows: CPU fp32, and when CUDA is
available, CUDA fp32 and CUDA bf16 autocast. Random weights cost the same as real ones.

    python benchmarks/bench_i3d.py --n 8                 # CPU (+ CUDA rows if available)
    python benchmarks/bench_i3d.py --device cuda --n 256 --batch 32
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

from sned.metrics.i3d import load_i3d


def bench(device: str, dtype: str, n: int, batch: int, frames: int, size: int,
          warmup: int = 1) -> dict:
    """Time ``n`` videos in batches of ``batch`` after ``warmup`` batches; returns a row."""
    det = load_i3d(random_init=True, device=device)
    g = torch.Generator().manual_seed(0)
    videos = torch.randint(0, 256, (n, frames, size, size, 3), generator=g, dtype=torch.uint8)

    def ctx():
        if dtype == "bf16":
            return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def sync():
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()

    with torch.inference_mode(), ctx():
        for _ in range(warmup):
            det(videos[:batch].to(device))
        sync()
        t0 = time.perf_counter()
        for i in range(0, n, batch):
            feats = det(videos[i:i + batch].to(device))
        sync()
        dt = time.perf_counter() - t0
    assert torch.isfinite(feats).all()
    return {"device": device, "dtype": dtype, "n": n, "batch": batch, "seconds": dt,
            "videos_per_s": n / dt}


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None,
                    help="cpu or cuda (default: cpu, plus cuda when available)")
    ap.add_argument("--n", type=int, default=16, help="videos timed per row")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=64, help="input H = W (resized to 224)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device is None:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        devices = [args.device]
    configs = [(d, dt) for d in devices for dt in (("fp32", "bf16") if d.startswith("cuda")
                                                   else ("fp32",))]
    print(f"I3D (random weights) on uint8 videos ({args.frames}, {args.size}, {args.size}, 3) "
          f"→ resized to 224²; torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else
             ", no CUDA"))
    rows = []
    print(f"{'device':<8}{'dtype':<16}{'n':>5}{'batch':>7}{'seconds':>10}{'videos/s':>11}")
    for device, dtype in configs:
        r = bench(device, dtype, args.n, args.batch, args.frames, args.size)
        rows.append(r)
        label = "bf16 autocast" if dtype == "bf16" else dtype
        print(f"{device:<8}{label:<16}{r['n']:>5}{r['batch']:>7}{r['seconds']:>10.2f}"
              f"{r['videos_per_s']:>11.2f}")
    return rows


if __name__ == "__main__":
    main()
