"""One-shot GPU check, v2: run it first on any GPU lent to the project (≤ 8 min on one H100).

    python benchmarks/gpu_check.py --out docs/results/gpu_check.json --md docs/results/gpu_check.md
    python benchmarks/gpu_check.py --smoke --out /tmp/gpu_check.json   # the same code on CPU

Parts (a)–(d) re-measure the baseline on the card; (g)–(j) (``benchmarks/gpu_check_v2.py``)
say where a step's time goes: a kernel-category profile, training variants side by side with
peak memory, sampling variants, and the tiny-base step old vs new. The JSON is rewritten after
every part, so a run cut short keeps what it measured.

(a) **attention kernels**: a forward + backward of the supernet (bf16 autocast) with SDPA
    restricted to flash / memory-efficient / cuDNN kernels — a math fallback raises, and fails
    the check; then with flash alone (reported: masked cross-attention is expected to need the
    memory-efficient kernel).
(b) **peak memory vs the estimate**: ``torch.cuda.max_memory_allocated`` of real Trainer steps
    (pixel-base, preset B via ``train.fixed_arch=B``, masked AdamW + EMA: batch 1 without
    checkpointing, batch 4 and 8 with) against :func:`sned.train.memory.estimate` (CPU:
    :func:`~sned.train.memory.measure_step_peak`'s profiler peak).
(c) **step time and MFU** of pixel-base at 16×64×64 bf16 (batch 4 with checkpointing, batch 1
    without): model FLOPs = 6 × forward MACs (the cost model) × clips, recomputation not
    counted; captions are encoded before timing (host-side text encoding is not the GPU's).
(d) **DDP**: ``torchrun --nproc_per_node 2`` on ONE GPU (gloo, both ranks on cuda:0 — NCCL
    refuses two ranks on one device): tiny-base, sandwich, ``grad_accum=2``, checkpointing;
    the ranks' weights must be bitwise equal afterwards.
(e) **sampling**: bf16 DDIM latency of extracted S vs B (pixel-base, CFG, 16×64×64) and the
    ratio (goal ≥ 2.0×), for autocast casting the weights every step (the old path), weights
    cast once (the default) and compiled with CUDA graphs (part (i) of gpu_check_v2).
(f) writes the JSON (``--out``) and a markdown section (``--md``, also printed) for
    ``docs/benchmarks.md``.

``--smoke`` runs every part on the CPU with tiny-base and small sizes (``tests/test_gpu_check.py``
runs it in the default test suite), so the script is known to work the day a GPU is lent.
Exit status 1 when a check fails (kernels, DDP weights, memory estimate off by > 15 %).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_check_v2 as v2  # noqa: E402

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}
"""Dense bf16 tensor-core peaks (TFLOP/s) by GPU name fragment, for MFU."""

FULL = {"config": "pixel-base", "memory_cases": [(1, False), (4, True), (8, True)],
        "mfu_cases": [(4, True), (1, False)], "mfu_steps": 4, "frames": None, "device": "cuda",
        "ddp_config": "tiny-base", "ddp_steps": 4, "ddp_extra": [], "sample_steps": 20,
        "sample_repeats": 2, "variant_batch": 4, "variant_big_batch": 8, "variant_steps": 3,
        "tiny_steps": 12}
SMOKE = {"config": "tiny-base", "memory_cases": [(1, False), (2, True)],
         "mfu_cases": [(2, True)], "mfu_steps": 1, "frames": 4, "device": "cpu",
         "ddp_config": "tiny-base", "ddp_steps": 1, "ddp_extra": ["train.sandwich_k=0"],
         "sample_steps": 2, "sample_repeats": 1, "variant_batch": 1, "variant_big_batch": 2,
         "variant_steps": 1, "tiny_steps": 2}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _trainer(plan: dict, out: Path, overrides: list[str]):
    from sned.train.config import load_run_config
    from sned.train.trainer import Trainer

    over = ["train.fixed_arch=B", "train.warmup_steps=0", "data.num_videos=32",
            f"train.device={plan['device']}", "train.batch_size=1"] + overrides
    if plan["frames"]:
        over.append(f"model.frames={plan['frames']}")
    return Trainer(load_run_config(plan["config"], over), out, progress=False)


def _batch(trainer, n: int) -> dict:
    from sned.data.transforms import collate

    ds = trainer.task.dataset()
    batch = collate([ds[i % len(ds)] for i in range(n)])
    trainer.encode(batch["caption"])  # cached: host-side text encoding is not timed
    return batch


def _set_case(trainer, batch: int, ckpt):
    """Point an existing Trainer at another micro-batch size and checkpointing plan, at a
    step that draws the config's largest resolution (what the estimate is for). ``ckpt``:
    False, True (every level, each the way that needs least memory: ``sned memory
    --checkpointing on``) or a :class:`~sned.train.memory.CheckpointPlan`. Returns the plan."""
    from sned.train.memory import (CheckpointPlan, device_memory, estimate, levels,
                                   plan_checkpointing)

    top = max(trainer.run.model.resolutions)
    while trainer.sampler(trainer.step)[0][0].resolution != top:
        trainer.step += 1
    trainer.cfg = dataclasses.replace(trainer.cfg, batch_size=batch,
                                      gradient_checkpointing=bool(ckpt))
    trainer.run = dataclasses.replace(trainer.run, train=trainer.cfg)
    plan = ckpt if isinstance(ckpt, CheckpointPlan) else CheckpointPlan()
    if ckpt is True:
        plan, _ = plan_checkpointing(
            True, lambda c: estimate(trainer.run, batch=batch, resolution=top, checkpointing=c,
                                     device=trainer.device.type),
            levels(trainer.run.model), device_memory(trainer.device))
    plan.apply(trainer.model, trainer.run.model)
    return plan


# --------------------------------------------------------------------------------- (a)
def check_attention(trainer) -> dict:
    """Forward + backward with SDPA restricted to fused kernels (no math fallback)."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.overrides import TorchFunctionMode

    calls = {"masked": 0, "unmasked": 0}

    class Count(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is F.scaled_dot_product_attention:
                masked = kwargs.get("attn_mask") is not None or (len(args) > 3 and
                                                                  args[3] is not None)
                calls["masked" if masked else "unmasked"] += 1
            return func(*args, **kwargs)

    batch = _batch(trainer, 1)
    _set_case(trainer, 1, False)  # no recomputation: every call is a forward call

    def step(backends):
        with sdpa_kernel(backends):
            trainer.train_step(batch)
        _sync(trainer.device)

    fused = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
             SDPBackend.CUDNN_ATTENTION]
    result = {}
    try:
        with Count():
            step(fused)
        result["fused_only"] = "ok"
    except RuntimeError as e:
        result["fused_only"] = f"failed: {str(e).splitlines()[0][:300]}"
    try:
        step([SDPBackend.FLASH_ATTENTION])
        result["flash_only"] = "ok"
    except RuntimeError as e:
        result["flash_only"] = f"failed: {str(e).splitlines()[0][:300]}"
    result["sdpa_calls_per_step"] = calls
    result["pass"] = result["fused_only"] == "ok" and sum(calls.values()) > 0
    return result


# --------------------------------------------------------------------------------- (b)
def check_memory(trainer, plan: dict) -> list[dict]:
    from sned.train.memory import GIB, estimate, measure_step_peak

    rows = []
    for n, ckpt in plan["memory_cases"]:
        ckpt_plan = _set_case(trainer, n, ckpt)
        batch = _batch(trainer, n)
        trainer.train_step(batch)  # optimizer state exists from here on
        measured = measure_step_peak(trainer, batch)
        est = estimate(trainer.run, batch=n, resolution=max(trainer.run.model.resolutions),
                       checkpointing=ckpt_plan, device=trainer.device.type)
        rows.append({"batch": n, "checkpointing": ckpt, "measured_gib": measured / GIB,
                     "estimate_gib": est.total / GIB, "ratio": est.total / measured,
                     "estimate": est.to_dict(), "pass": abs(est.total / measured - 1) <= 0.15})
        if trainer.device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


# --------------------------------------------------------------------------------- (c)
def check_mfu(trainer, plan: dict, peak_tflops: float | None) -> list[dict]:
    from sned.cost import model_cost

    rows = []
    for n, ckpt in plan["mfu_cases"]:
        _set_case(trainer, n, ckpt)  # every timed step re-runs this step: same arch and size
        arch = trainer.sampler(trainer.step)[0][0]
        batch = _batch(trainer, n)
        trainer.train_step(batch)
        _sync(trainer.device)
        times = []
        for _ in range(plan["mfu_steps"]):
            t0 = time.perf_counter()
            trainer.train_step(batch)
            _sync(trainer.device)
            times.append(time.perf_counter() - t0)
        sec = statistics.median(times)
        macs = model_cost(trainer.run.model, arch, arch.resolution,
                          trainer.run.model.frames).macs
        flops = 6 * macs * n
        rows.append({"batch": n, "checkpointing": ckpt, "step_s": sec,
                     "model_tflop_per_step": flops / 1e12,
                     "mfu": None if not peak_tflops else flops / sec / (peak_tflops * 1e12)})
    return rows


# --------------------------------------------------------------------------------- (d)
def ddp_worker(out: str, steps: int, config: str, extra: list[str]) -> None:
    """One torchrun rank: gloo (works for CPU and CUDA tensors; both ranks share cuda:0)."""
    import torch.distributed as dist

    from sned.train.config import load_run_config
    from sned.train.trainer import Trainer

    dist.init_process_group("gloo")
    os.environ["LOCAL_RANK"] = "0"  # one GPU for both ranks
    over = ["train.sampler=sandwich", "train.grad_accum=2", "train.gradient_checkpointing=true",
            "train.batch_size=2", "train.warmup_steps=2", "train.warmup_stages=2",
            "data.num_videos=16", "model.frames=2", "train.checkpoint_every=1000"] + extra
    trainer = Trainer(load_run_config(config, over), Path(out) / "run", progress=False)
    trainer.fit(steps)
    digest = hashlib.sha256()
    for name, p in sorted(trainer.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(p.detach().float().cpu().numpy().tobytes())
    hashes = [None] * dist.get_world_size()
    dist.all_gather_object(hashes, digest.hexdigest())
    if dist.get_rank() == 0:
        (Path(out) / "ddp.json").write_text(json.dumps({
            "hashes": hashes, "steps": trainer.step,
            "checkpointing": trainer.model.gradient_checkpointing,
            "device": str(trainer.device)}))
    trainer.close()  # DDP before the group: see Trainer.close (a teardown deadlock otherwise)
    dist.destroy_process_group()


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every process below it (found through /proc's parent links: the
    ranks run in sessions of their own, so killing torchrun's group would miss them)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    todo, tree = [pid], []
    while todo:
        tree.append(todo.pop())
        todo += children.get(tree[-1], [])
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def check_ddp(plan: dict, timeout: float, overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as out:
        # --standalone: torchrun's rendezvous on a free local port (no clash with another
        # run on this machine)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", __file__, "--ddp-worker", out,
               "--ddp-steps", str(plan["ddp_steps"]), "--ddp-config", plan["ddp_config"],
               f"train.device={plan['device']}", *plan["ddp_extra"], *overrides]
        t0 = time.perf_counter()
        # output to files, not pipes: a rank that outlives torchrun must not keep a pipe open
        # (reading it would then never end)
        with open(Path(out) / "torchrun.log", "w+") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True,
                                    start_new_session=True)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_tree(proc.pid)  # torchrun starts each rank in a session of its own
                proc.wait()
                log.seek(0)
                return {"pass": False, "seconds": time.perf_counter() - t0,
                        "error": f"DDP check timed out after {timeout:g} s; torchrun and its "
                                 f"ranks were stopped. Its output:\n" + log.read()[-1500:]}
            log.seek(0)
            output = log.read()
        seconds = time.perf_counter() - t0
        path = Path(out) / "ddp.json"
        if proc.returncode or not path.is_file():
            return {"pass": False, "seconds": seconds, "error": output[-1500:]}
        r = json.loads(path.read_text())
    r["seconds"] = seconds
    r["identical_weights"] = len(set(r["hashes"])) == 1
    r["pass"] = r["identical_weights"] and r["checkpointing"] and r["steps"] == plan["ddp_steps"]
    return r


# --------------------------------------------------------------------------------- (e)
def check_sampling(plan: dict, device: torch.device, smoke: bool) -> dict:
    """S vs B, per sampling variant (:func:`gpu_check_v2.sampling_variants`); ``S_s``,
    ``B_s`` and the speed-up are the default path's (weights cast once)."""
    r = v2.sampling_variants(plan, device, smoke)
    from sned.device import sampling_autocast

    r.update(precision=sampling_autocast("auto", device) or "fp32",
             S_s=r["S_weights_cast_once_s"], B_s=r["B_weights_cast_once_s"],
             speedup_B_over_S=r["B_weights_cast_once_s"] / r["S_weights_cast_once_s"],
             goal=2.0)
    return r


# --------------------------------------------------------------------------------- (f)
def _error(part) -> str | None:
    return part.get("error") if isinstance(part, dict) else None


def markdown(r: dict) -> str:
    """The ``docs/benchmarks.md`` section; a part that raised shows its error instead."""
    lines = [f"## GPU check ({r['device_name']}, {r['date']}, `benchmarks/gpu_check.py"
             f"{' --smoke' if r['smoke'] else ''}`)", "",
             f"torch {r['torch']}; config {r['config']}; total {r['seconds']:.0f} s "
             f"(per part: {r['part_seconds']}).", ""]
    a = r["attention"]
    if _error(a) and "fused_only" not in a:
        lines.append(f"- (a) attention: **error** {_error(a)}")
    else:
        lines.append(f"- (a) attention, fused kernels only: **{a['fused_only']}**; flash only: "
                     f"{a['flash_only']}; SDPA calls per step {a['sdpa_calls_per_step']}.")
    if _error(r["memory"]):
        lines.append(f"- (b) peak memory: **error** {_error(r['memory'])}")
    else:
        lines += ["- (b) peak memory of training steps vs `sned memory` (fixed_arch=B):", "",
                  "| batch | checkpointing | measured GiB | estimate GiB | estimate / measured |",
                  "|---|---|---|---|---|"]
        for m in r["memory"]:
            lines.append(f"| {m['batch']} | {m['checkpointing']} | {m['measured_gib']:.2f} | "
                         f"{m['estimate_gib']:.2f} | {m['ratio']:.3f} |")
        lines.append("")
    if _error(r["mfu"]):
        lines.append(f"- (c) step time and MFU: **error** {_error(r['mfu'])}")
    else:
        lines += ["- (c) training step time and MFU (6 × forward MACs per clip, no recompute):",
                  "", "| batch | checkpointing | step s | model TFLOP/step | MFU |",
                  "|---|---|---|---|---|"]
        for m in r["mfu"]:
            mfu = "n/a" if m["mfu"] is None else f"{m['mfu']:.1%}"
            lines.append(f"| {m['batch']} | {m['checkpointing']} | {m['step_s']:.3f} | "
                         f"{m['model_tflop_per_step']:.3g} | {mfu} |")
        lines.append("")
    d, s = r["ddp"], r["sampling"]
    if "identical_weights" in d:
        lines.append(f"- (d) 2-rank DDP on one device (tiny-base, sandwich, grad_accum=2, "
                     f"checkpointing): identical weights **{d['identical_weights']}** "
                     f"({d['seconds']:.0f} s).")
    else:
        lines.append(f"- (d) 2-rank DDP: **failed** {(_error(d) or d.get('error', ''))[-400:]}")
    if _error(s):
        lines.append(f"- (e) sampling: **error** {_error(s)}")
    else:
        lines.append(f"- (e) sampling ({s['precision']}, {s['steps']} DDIM steps, CFG): S "
                     f"{s['S_s']:.3f} s, B {s['B_s']:.3f} s, speed-up "
                     f"**{s['speedup_B_over_S']:.2f}×** (goal ≥ {s['goal']}×); B/S by "
                     "variant: " + ", ".join(f"{k[8:]} {v:.2f}×" for k, v in s.items()
                                              if k.startswith("speedup_") and k != 
                                              "speedup_B_over_S") + ".")
    lines += _markdown_v2(r)
    lines.append(f"- checks passed: **{r['pass']}**.")
    return "\n".join(lines) + "\n"


def _profile(trainer, plan: dict) -> dict:
    """(g) at the variants' batch with every block checkpointed (fixed_arch=B)."""
    n = plan["variant_batch"]
    _set_case(trainer, n, True)
    return {"batch": n, "checkpointing": True, **v2.profile_step(trainer, _batch(trainer, n))}


def _markdown_v2(r: dict) -> list[str]:
    lines = []
    g = r.get("profile", {})
    if "ms_by_category" in g:
        busy = "n/a" if g["busy_fraction"] is None else f"{g['busy_fraction']:.0%}"
        lines.append(f"- (g) one step ({'kernels' if g['kernels'] else 'CPU leaf ops'}): "
                     f"{g['wall_s']:.3f} s, busy {busy}, {g['launches']} launches, "
                     f"{g['host_syncs']} host syncs; ms by category {g['ms_by_category']}.")
    else:
        lines.append(f"- (g) profile: **error** {_error(g)}")
    h = r.get("variants")
    if isinstance(h, list):
        lines += ["- (h) training variants (same arch, same trainer):", "",
                  "| variant | batch | checkpointing (unit, policy) | recompute | step s | "
                  "peak GiB | estimate GiB |", "|---|---|---|---|---|---|---|"]
        for v in h:
            step = "OOM" if v["step_s"] is None else f"{v['step_s']:.3f}"
            peak = "n/a" if v["peak_gib"] is None else f"{v['peak_gib']:.1f}"
            how = (f"{v['checkpointing']} ({v.get('checkpoint_unit')}, "
                   f"{v.get('checkpoint_policy')})")
            lines.append(f"| {v['variant']} | {v['batch']} | {how} | "
                         f"{v.get('recompute_fraction')} | {step} | {peak} | "
                         f"{v.get('estimate_gib', 0):.1f} |")
        lines.append("")
    else:
        lines.append(f"- (h) variants: **error** {_error(h or {})}")
    j = r.get("tiny", {})
    if "speedup" in j:
        lines.append(f"- (j) tiny-base study step: legacy {j['legacy_ms']:.1f} ms, fused "
                     f"{j['fused_ms']:.1f} ms ({j['speedup']:.2f}×).")
    else:
        lines.append(f"- (j) tiny-base step: **error** {_error(j)}")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="the same code on CPU, tiny sizes")
    ap.add_argument("--out", default="docs/results/gpu_check.json")
    ap.add_argument("--md", help="also write the markdown section here")
    ap.add_argument("--peak-tflops", type=float, help="bf16 peak for MFU (default: by GPU name)")
    ap.add_argument("--ddp-timeout", type=float, default=300)
    ap.add_argument("--ddp-worker", help=argparse.SUPPRESS)
    ap.add_argument("--ddp-steps", type=int, default=4, help=argparse.SUPPRESS)
    ap.add_argument("--ddp-config", default="tiny-base", help=argparse.SUPPRESS)
    args, extra = ap.parse_known_args()
    if args.ddp_worker:
        ddp_worker(args.ddp_worker, args.ddp_steps, args.ddp_config, extra)
        return 0
    plan = SMOKE if args.smoke else FULL
    if plan["device"] == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU here; use --smoke for the CPU run", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    device = torch.device(plan["device"])
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    report = {"smoke": args.smoke, "config": plan["config"], "device_name": name,
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
              "peak_tflops": peak}
    part_s = report["part_seconds"] = {}

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def timed(name, fn):
        """Run one part; a part that raises is recorded (``error``) and the next one runs.
        The JSON is rewritten after every part, so a run cut short keeps what it measured."""
        t = time.perf_counter()
        try:
            report[name] = fn()
        except Exception as err:  # noqa: BLE001 - one broken part must not hide the others
            report[name] = {"pass": False, "error": f"{type(err).__name__}: {err}"[:1500],
                            "traceback": traceback.format_exc()[-3000:]}
            print(f"gpu_check: part {name} failed:\n{report[name]['traceback']}",
                  file=sys.stderr)
        part_s[name] = round(time.perf_counter() - t, 1)
        print(f"gpu_check: {name} done in {part_s[name]} s", file=sys.stderr, flush=True)
        out.write_text(json.dumps(report, indent=1))

    with tempfile.TemporaryDirectory() as tmp:
        trainer = _trainer(plan, Path(tmp) / "run", extra)
        part_s["setup"] = round(time.perf_counter() - t0, 1)
        timed("attention", lambda: check_attention(trainer))
        timed("memory", lambda: check_memory(trainer, plan))
        timed("mfu", lambda: check_mfu(trainer, plan, peak if device.type == "cuda" else None))
        timed("profile", lambda: _profile(trainer, plan))
        timed("variants", lambda: v2.training_variants(trainer, _batch, _set_case, plan))
        del trainer
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    timed("ddp", lambda: check_ddp(plan, args.ddp_timeout, extra))
    timed("sampling", lambda: check_sampling(plan, device, args.smoke))
    timed("tiny", lambda: v2.tiny_step(device, plan["tiny_steps"]))
    report["seconds"] = time.perf_counter() - t0
    report["pass"] = bool(report["attention"]["pass"] and report["ddp"]["pass"]
                          and isinstance(report["memory"], list)
                          and all(m["pass"] for m in report["memory"]))
    out.write_text(json.dumps(report, indent=1))
    md = markdown(report)
    if args.md:
        Path(args.md).write_text(md)
    print(md)
    return 0 if report["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
