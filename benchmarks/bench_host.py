"""Host-side work per training step as a share of step time: the old step vs today's, side by
side in one run (issue 20, "a GPU that never waits").

Host-side work = time the training loop spends on anything but the model's forward/backward
and the optimizer: waiting for the next batch (``data``), embedding captions (``text``), and
writing the log (``log``). Measured with timers around the trainer's own functions over
``--steps`` steps after ``--warmup``, alternating the two modes ``--repeats`` times (best
repeat kept). The one-off work of a fit (building the loader, embedding the caption set) is
reported apart (``setup_s``).

The "old" mode re-creates the step before issue 20 in this process: every uncached caption
runs alone through the text encoder (one forward per caption), nothing is precomputed, and
each step's row is written (and read from the device) as the step ends. Data loading is the
same in both modes on the CPU (``data.num_workers=auto`` means none on a CPU run).

``syncs_per_step`` counts device→host reads (``Tensor.item / tolist / __bool__ / __float__``)
by the training loop (``sned/train/{trainer,tasks,metrics_log,parallel}.py``) in the new mode;
on a CPU they cost nothing, on a GPU each one stalls the queue.

    python benchmarks/bench_host.py --config tiny-base --steps 20
    python benchmarks/bench_host.py --config tiny-base data.max_objects=3   # many captions
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections import defaultdict

import torch

from sned.text import TextEncoder
from sned.train import trainer as trainer_mod
from sned.train.config import load_run_config
from sned.train.metrics_log import MetricsLog
from sned.train.trainer import Trainer

# reads of device tensors by the training loop (the optimizer's step counts and the synthetic
# renderer read CPU tensors, which stay on the CPU on a GPU run too)
LOOP_FILES = re.compile(r"sned/train/(trainer|tasks|metrics_log|parallel)\.py$")


class Timers:
    def __init__(self) -> None:
        self.t: dict[str, float] = defaultdict(float)
        self.on = False

    def wrap(self, key: str, fn):
        def timed(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                if self.on:
                    self.t[key] += time.perf_counter() - t0
        return timed


def _old_run(self, captions, batch_size=64):
    """The encoder before issue 20: one forward per caption."""
    out = []
    with torch.no_grad():
        for c in captions:
            tok = self.tokenize([c])
            out.append(self.model(input_ids=tok["input_ids"].to(self.device),
                                  attention_mask=tok["attention_mask"].to(self.device)
                                  ).last_hidden_state.float()[0].cpu())
    return out


def _old_add(self, row):
    """The log before issue 20: each row read from the device and written as the step ends."""
    self.pending.append(row)
    self.flush()


def run(config: str, old: bool, steps: int, warmup: int, extra: list[str]) -> dict:
    over = ["train.warmup_steps=0", "train.checkpoint_every=100000", "train.ema_decay=0.999",
            *extra]
    timers = Timers()
    patches = [(TextEncoder, "_run", _old_run), (MetricsLog, "add", _old_add)] if old else []
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    for obj, name, fn in patches:
        setattr(obj, name, fn)
    real_loader = trainer_mod.make_loader

    def timed_loader(*a, **kw):
        loader = real_loader(*a, **kw)

        class Timed:
            def __iter__(self_inner):
                it = iter(loader)
                while True:
                    t0 = time.perf_counter()
                    try:
                        batch = next(it)
                    except StopIteration:
                        return
                    if timers.on:
                        timers.t["data"] += time.perf_counter() - t0
                    yield batch
        return Timed()

    trainer_mod.make_loader = timed_loader
    syncs = {"n": 0}
    counted = ("item", "tolist", "__bool__", "__float__")
    reals = {k: getattr(torch.Tensor, k) for k in counted}

    def counter(k):
        def f(self, *a):
            caller = sys._getframe(1).f_code.co_filename
            if timers.on and LOOP_FILES.search(caller):
                syncs["n"] += 1
            return reals[k](self, *a)
        return f
    try:
        with tempfile.TemporaryDirectory() as out:
            trainer = Trainer(load_run_config(config, over), out, progress=False)
            if old:
                trainer._precompute_captions = lambda dataset: None
            trainer.encode = timers.wrap("text", trainer.encode)
            trainer._log = timers.wrap("log", trainer._log)
            trainer._precompute_captions = timers.wrap("setup", trainer._precompute_captions)
            timers.on = True
            trainer.fit(warmup)
            setup = timers.t.pop("setup", 0.0)
            timers.t.clear()
            if not old:
                for k in counted:
                    setattr(torch.Tensor, k, counter(k))
            t0 = time.perf_counter()
            trainer.fit(warmup + steps)
            total = time.perf_counter() - t0 - timers.t.pop("setup", 0.0)  # steps only
            timers.on = False
            for k in counted:
                setattr(torch.Tensor, k, reals[k])
    finally:
        trainer_mod.make_loader = real_loader
        for obj, name, fn in saved:
            setattr(obj, name, fn)
        for k in counted:
            setattr(torch.Tensor, k, reals[k])
    t = {k: timers.t.get(k, 0.0) for k in ("data", "text", "log")}
    host = sum(t.values())
    return {"mode": "old" if old else "new", "step_ms": 1e3 * total / steps,
            "host_share": host / total, **{f"{k}_share": v / total for k, v in t.items()},
            "setup_s": setup, "syncs_per_step": None if old else syncs["n"] / steps}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="tiny-base")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    results = {"old": [], "new": []}
    for _ in range(args.repeats):
        for old in (True, False):
            r = run(args.config, old, args.steps, args.warmup, args.overrides)
            results[r["mode"]].append(r)
    summary = {k: min(rs, key=lambda r: r["step_ms"]) for k, rs in results.items()}
    summary["setting"] = {"config": args.config, "steps": args.steps, "warmup": args.warmup,
                          "overrides": args.overrides, "threads": torch.get_num_threads(),
                          "torch": torch.__version__}
    if args.json:
        print(json.dumps(summary, indent=1))
        return
    print(f"{args.config} {' '.join(args.overrides)}: {args.steps} steps after {args.warmup} "
          f"(best of {args.repeats}), {torch.get_num_threads()} thread(s)")
    for k in ("old", "new"):
        r = summary[k]
        print(f"  {k}: step {r['step_ms']:.0f} ms, host {r['host_share']:.1%} (data "
              f"{r['data_share']:.1%}, text {r['text_share']:.1%}, log {r['log_share']:.1%}), "
              f"setup {r['setup_s']:.2f} s, syncs/step {r['syncs_per_step']}")


if __name__ == "__main__":
    main()
