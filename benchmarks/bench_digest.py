"""What a weight-file digest costs next to writing the file (issue 28): pixel-base-sized tensors.

Builds the first ``--gib`` GiB of pixel-base's supernet tensors (fp32, the real shapes, in
state-dict order), serialises them as safetensors bytes (what a checkpoint writes) and times, on
the same bytes, in one run: the safetensors write to disk (+ fsync), sha256, blake2b, crc32, the
chunked sha256 of :func:`sned.store.files.digest_bytes` on 1, 2, 4 … threads, the load-time
:func:`~sned.store.files.file_digest` (read back from the page cache + hash) and the load-time
non-finite check. Prints GB/s and each one's time as a ratio of the write.
Run: ``python benchmarks/bench_digest.py --gib 1``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
import zlib

import torch
from safetensors.torch import save

from sned.config import load_config
from sned.models.unet import VideoUNet
from sned.store.files import all_finite, digest_bytes, file_digest


def pixel_base_tensors(gib: float) -> dict[str, torch.Tensor]:
    """Random fp32 tensors with pixel-base's state-dict shapes, up to ``gib`` GiB."""
    with torch.device("meta"):
        model = VideoUNet(load_config("pixel-base"))
    out, total, g = {}, 0, torch.Generator().manual_seed(0)
    for name, t in model.state_dict().items():
        if total + t.numel() * 4 > gib * 2 ** 30:
            continue
        out[name] = torch.randn(t.shape, generator=g)
        total += t.numel() * 4
    return out


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    tensors = pixel_base_tensors(args.gib)
    data = save(tensors, metadata={"format": "pt"})
    gb = len(data) / 1e9
    print(f"{len(tensors)} pixel-base tensors, {gb:.2f} GB; {os.cpu_count()} cores")

    def write():
        with tempfile.NamedTemporaryFile(dir=".", delete=True) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def isfinite_all():
        return all(bool(torch.isfinite(t).all()) for t in tensors.values())

    def finite():
        return all(all_finite(t) for t in tensors.values())

    rows = {"write + fsync": best(write, args.repeat),
            "sha256 (one stream)": best(lambda: hashlib.sha256(data).hexdigest(), args.repeat),
            "blake2b (one stream)": best(lambda: hashlib.blake2b(data).hexdigest(), args.repeat),
            "crc32": best(lambda: zlib.crc32(data), args.repeat)}
    threads = 1
    while threads <= (os.cpu_count() or 1):
        rows[f"sned digest, {threads} thread(s)"] = best(
            lambda: digest_bytes(data, threads=threads), args.repeat)
        threads *= 2
    with tempfile.NamedTemporaryFile(dir=".", delete=True) as f:
        f.write(data)
        f.flush()
        rows["sned file_digest (load)"] = best(lambda: file_digest(f.name), args.repeat)
    rows["isfinite(t).all()"] = best(isfinite_all, args.repeat)
    rows["sned all_finite (load)"] = best(finite, args.repeat)
    base = rows["write + fsync"]
    for name, s in rows.items():
        print(f"{name:28s} {s:7.3f} s  {gb / s:6.2f} GB/s  {s / base:5.2f}x the write")


if __name__ == "__main__":
    main()
