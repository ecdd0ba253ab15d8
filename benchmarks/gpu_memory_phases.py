"""Where a training step's peak GPU memory is: forward, backward or the update — vs the estimate.

    python benchmarks/gpu_memory_phases.py --cases 4:ckpt,1:nockpt --out mem_phases.json
    python benchmarks/gpu_memory_phases.py --config tiny-base --device cpu train.device=cpu  # code path

``gpu_check.py`` compares one number per case (``max_memory_allocated`` of a whole step) with
:func:`sned.train.memory.estimate`; this splits it. For each ``batch:ckpt|nockpt`` case a fresh
Trainer (fixed arch B, masked AdamW + EMA, as gpu_check) runs one warm step, then one measured
step in which the peak statistics are read and reset at three boundaries: the end of the
model's forward (a forward hook), the start of the optimizer step, the start of the EMA step.
So ``forward`` / ``backward`` / ``optimizer`` / ``ema`` peaks are each over their phase alone,
next to the estimate's parts. ``static_gib`` is what is allocated before the step (weights,
optimizer state, EMA). On CPU the peaks read 0 (torch keeps no CPU peak statistics): ``--device
cpu`` only checks that the code runs.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
from pathlib import Path

import torch

GIB = 2 ** 30


def _trainer(config: str, out: Path, batch: int, ckpt: bool, overrides: list[str]):
    from sned.train.config import load_run_config
    from sned.train.trainer import Trainer

    over = ["train.fixed_arch=B", "train.warmup_steps=0", "data.num_videos=16",
            f"train.batch_size={batch}", f"train.gradient_checkpointing={str(ckpt).lower()}"]
    return Trainer(load_run_config(config, over + overrides), out, progress=False)


def measure_case(config: str, batch: int, ckpt: bool, overrides: list[str]) -> dict:
    from sned.data.transforms import collate
    from sned.train.memory import estimate

    cuda = torch.cuda.is_available() and "train.device=cpu" not in overrides

    def peak() -> int:
        return torch.cuda.max_memory_allocated() if cuda else 0

    def reset() -> None:
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    with tempfile.TemporaryDirectory() as tmp:
        tr = _trainer(config, Path(tmp) / "run", batch, ckpt, overrides)
        top = max(tr.run.model.resolutions)
        while tr.sampler(tr.step)[0][0].resolution != top:
            tr.step += 1
        ds = tr.task.dataset()
        data = collate([ds[i % len(ds)] for i in range(batch)])
        tr.encode(data["caption"])
        tr.train_step(data)  # optimizer state exists from here on
        tr.optimizer.zero_grad(set_to_none=True)
        phases: dict[str, int] = {}

        def boundary(name):
            if cuda:
                torch.cuda.synchronize()
            phases[name] = peak()
            reset()

        hook = tr.model.register_forward_hook(lambda m, a, o: boundary("forward"))
        opt_step, ema_step = tr.optimizer.step, tr.ema.step

        def wrapped_opt(*a, **k):
            boundary("backward")
            return opt_step(*a, **k)

        def wrapped_ema(*a, **k):
            boundary("optimizer")
            return ema_step(*a, **k)

        tr.optimizer.step, tr.ema.step = wrapped_opt, wrapped_ema
        static = torch.cuda.memory_allocated() if cuda else 0
        reset()
        tr.train_step(data)
        boundary("ema")
        hook.remove()
        est = estimate(tr.run, batch=batch, resolution=top, checkpointing=ckpt,
                       device="cuda" if cuda else "cpu")
        row = {"batch": batch, "checkpointing": ckpt, "static_gib": static / GIB,
               **{f"{k}_peak_gib": v / GIB for k, v in phases.items()},
               "step_peak_gib": max(phases.values()) / GIB, "estimate_gib": est.total / GIB,
               "estimate": est.to_dict()}
        tr.optimizer.step, tr.ema.step = opt_step, ema_step
        del tr, opt_step, ema_step, wrapped_opt, wrapped_ema
    gc.collect()  # the trainer's cycles (optimizer ↔ scheduler) hold its GPU memory until then
    if cuda:
        torch.cuda.empty_cache()
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="pixel-base")
    ap.add_argument("--cases", default="4:ckpt,1:nockpt,8:ckpt",
                    help="comma-separated batch:ckpt|nockpt")
    ap.add_argument("--out", help="write the rows as JSON here")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    args, overrides = ap.parse_known_args()
    if args.device == "cpu":
        overrides = [*overrides, "train.device=cpu"]
    elif not torch.cuda.is_available():
        print("gpu_memory_phases: no CUDA GPU here (--device cpu runs the code path)",
              file=sys.stderr)
        return 2
    rows = []
    for case in args.cases.split(","):
        n, mode = case.split(":")
        rows.append(measure_case(args.config, int(n), mode == "ckpt", overrides))
        r = rows[-1]
        print(f"batch {r['batch']} ckpt {r['checkpointing']}: static {r['static_gib']:.2f}, "
              + ", ".join(f"{k} {r[f'{k}_peak_gib']:.2f}" for k in
                          ("forward", "backward", "optimizer", "ema"))
              + f" GiB; estimate total {r['estimate_gib']:.2f} (activations "
              f"{r['estimate']['activations_gib']:.2f}, workspace "
              f"{r['estimate']['workspace_gib']:.2f})", flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
