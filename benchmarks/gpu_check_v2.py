"""The parts ``benchmarks/gpu_check.py`` v2 adds (issue 25): why a step costs what it costs.

(g) **profile** of one training step by kernel category — conv (incl. layout transposes),
    matmul, attention, norm/elementwise/cast, optimizer (optimizer + EMA) — with the GPU-busy
    fraction, kernel launches and host syncs (CPU: aten leaf ops, same categories).
(h) **training variants** side by side on one trainer, each with step time, peak memory and
    the planner's estimate: fused vs legacy optimizer, EMA by lerp vs diffusers' two-pass, the
    planner's checkpointing (auto) vs ``on`` (least memory) vs every level by block / layer,
    full / selective, batch 8 (planner), cudnn.benchmark off vs on.
(i) **sampling variants** of extracted S and B: autocast casting fp32 weights every step (the
    old path), weights cast once (the default now), compiled (``mode="reduce-overhead"``:
    CUDA graphs; skipped with ``--smoke``).
(j) **tiny-base study step**, legacy vs fused (``benchmarks/bench_step_ops.py``'s trainers on
    this device).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

CATEGORIES = ("conv", "matmul", "attention", "norm_elementwise_cast", "optimizer", "other")
_RULES = (  # (category, name fragments), first match wins; names lower-cased
    ("attention", ("flash", "fmha", "attention", "mem_eff", "sdpa", "softmax")),
    ("conv", ("conv", "cudnn", "implicit", "winograd", "dgrad", "wgrad", "nchw", "nhwc",
              "fprop", "im2col", "col2im")),
    ("matmul", ("gemm", "cutlass", "xmma", "cublas", "matmul", "aten::mm", "addmm", "bmm",
                "aten::linear", "sm80_", "sm90_")),
    ("norm_elementwise_cast", ("norm", "elementwise", "vectorized", "reduce", "copy", "cast",
                               "aten::add", "aten::mul", "aten::gelu", "aten::silu", "aten::to",
                               "aten::cat", "aten::sum", "aten::mean", "aten::sub", "aten::div",
                               "unrolled", "fill", "aten::where", "aten::exp")),
)
SYNC_NAMES = ("cudaDeviceSynchronize", "cudaStreamSynchronize", "cudaEventSynchronize",
              "aten::_local_scalar_dense")


def categorize(name: str) -> str:
    low = name.lower()
    for cat, frags in _RULES:
        if any(f in low for f in frags):
            return cat
    return "other"


def _labelled(fn, label: str):
    def wrapped(*a, **k):
        with torch.profiler.record_function(label):
            return fn(*a, **k)
    return wrapped


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------------- (g)
def profile_step(trainer, batch: dict) -> dict:
    """One ``train_step`` under the profiler: time by category, busy fraction, launches."""
    from torch.profiler import ProfilerActivity, profile

    device = trainer.device
    cuda = device.type == "cuda"
    opt_step, ema = trainer.optimizer.step, trainer.ema
    trainer.optimizer.step = _labelled(opt_step, "phase::update")
    ema_step = None if ema is None else ema.step
    if ema is not None:
        ema.step = _labelled(ema_step, "phase::update")
    trainer.train_step(batch)  # warm
    _sync(device)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    try:
        with profile(activities=acts) as prof:
            t0 = time.perf_counter()
            trainer.train_step(batch)
            _sync(device)
            wall = time.perf_counter() - t0
    finally:
        trainer.optimizer.step = opt_step
        if ema is not None:
            ema.step = ema_step
    us = {c: 0.0 for c in CATEGORIES}
    launches = syncs = 0
    for e in prof.events():
        if e.name in SYNC_NAMES:
            syncs += 1
        in_update, node, top = False, e, e.name
        while node is not None:
            in_update |= node.name == "phase::update"
            top = node.name if node.name.startswith("aten::") else top
            node = node.cpu_parent
        if cuda:
            for k in e.kernels:
                launches += 1
                us["optimizer" if in_update else categorize(k.name)] += k.duration
        elif e.name.startswith("aten::"):  # CPU: self time, by the op the model called
            launches += not any(c.name.startswith("aten::") for c in e.cpu_children)
            us["optimizer" if in_update else categorize(top)] += e.self_cpu_time_total
    busy = sum(us.values()) / 1e6
    return {"wall_s": wall, "busy_fraction": busy / wall if wall else None,
            "ms_by_category": {c: round(v / 1e3, 3) for c, v in us.items()},
            "launches": launches, "host_syncs": syncs, "kernels": cuda}


# --------------------------------------------------------------------------------- (h)
def _time_steps(trainer, batch: dict, steps: int) -> dict:
    device = trainer.device
    trainer.train_step(batch)  # warm: state, masks, cudnn plans
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        trainer.train_step(batch)
        _sync(device)
        times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda"
            else None)
    return {"step_s": statistics.median(times), "peak_gib": peak}


def training_variants(trainer, make_batch, set_case, plan: dict) -> list[dict]:
    """Each variant changes one thing on the same trainer (same arch: ``fixed_arch=B``)."""
    from diffusers.training_utils import EMAModel

    from sned.train.ema import LerpEMA
    from sned.train.memory import (CheckpointPlan, device_memory, estimate, levels,
                                   plan_checkpointing)

    n, steps = plan["variant_batch"], plan["variant_steps"]
    res = max(trainer.run.model.resolutions)
    memory = device_memory(trainer.device)
    cfg = trainer.run.model

    def planned(batch_size, setting="auto"):
        chosen, _ = plan_checkpointing(
            setting, lambda c: estimate(trainer.run, batch=batch_size, resolution=res,
                                        checkpointing=c, device=trainer.device.type),
            levels(cfg), memory)
        return chosen

    rows = []

    def run(name, batch_size, ckpt, impl="fused", ema="lerp", cudnn=True):
        set_case(trainer, batch_size, ckpt)  # applies the CheckpointPlan
        trainer.optimizer.impl = "slices" if impl == "legacy" else "fused"
        if trainer.ema is not None:
            trainer.ema.__class__ = LerpEMA if ema == "lerp" else EMAModel
        saved = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = cudnn
        try:
            r = _time_steps(trainer, make_batch(trainer, batch_size), steps)
        except torch.OutOfMemoryError as e:
            r = {"step_s": None, "peak_gib": None, "error": f"OOM: {str(e)[:200]}"}
        finally:
            torch.backends.cudnn.benchmark = saved
            if trainer.device.type == "cuda":
                torch.cuda.empty_cache()
        est = estimate(trainer.run, batch=batch_size, resolution=res, checkpointing=ckpt,
                       device=trainer.device.type)
        rows.append({"variant": name, "batch": batch_size, **ckpt.describe(cfg),
                     "estimate_gib": est.total / 2 ** 30,
                     "recompute_fraction": est.to_dict()["recompute_fraction"], **r})

    chosen = planned(n)
    run("fused update, lerp EMA, planner (auto)", n, chosen)
    run("legacy update (slices, full counts)", n, chosen, impl="legacy")
    run("diffusers EMA (two passes)", n, chosen, ema="diffusers")
    run("checkpointing on: least memory", n, planned(n, True))
    for unit in ("block", "layer"):  # every level one way (the CPU's bench_checkpointing.py)
        for policy in ("full", "selective"):
            run(f"every level: {unit}/{policy}", n,
                CheckpointPlan.uniform(cfg, True, unit, policy))
    run("cudnn.benchmark off", n, chosen, cudnn=False)
    big = plan["variant_big_batch"]
    run(f"batch {big}, planner (auto)", big, planned(big))
    trainer.optimizer.impl = "fused"
    return rows


# --------------------------------------------------------------------------------- (i)
def sampling_variants(plan: dict, device: torch.device, smoke: bool) -> dict:
    import sned
    import sned.pipelines.sampling as sampling
    from sned.pipelines import compile_model, sample

    torch.manual_seed(0)
    frames = plan["frames"]
    supernet = sned.build_supernet(plan["config"], [f"frames={frames}"] if frames else None)
    space = sned.search_space(supernet.config)
    cfg = supernet.config
    text = torch.randn(1, cfg.text_len, cfg.text_dim)
    real_cast = sampling.matmul_weights_in

    def per_step_cast(model, dtype, keep=False):
        return real_cast(model, None)

    out: dict = {"steps": plan["sample_steps"], "cfg": 5.0}
    for p in ("B", "S"):
        model = sned.extract(supernet, space.preset(p)).to(device)
        variants = [("autocast_every_step", per_step_cast, False),
                    ("weights_cast_once", real_cast, False)]
        if not smoke:
            variants.append(("compiled_reduce_overhead", real_cast, True))
        for name, cast, compiled in variants:
            if compiled:
                model = compile_model(model)  # what --compile does: "auto" = CUDA graphs
            sampling.matmul_weights_in = cast
            try:
                def go():
                    sample(model, text, steps=plan["sample_steps"], guidance_scale=5.0,
                           seed=0, progress=False, dtype="auto")
                go()  # warm-up (compiles)
                times = []
                for _ in range(plan["sample_repeats"]):
                    _sync(device)
                    t0 = time.perf_counter()
                    go()
                    _sync(device)
                    times.append(time.perf_counter() - t0)
                out[f"{p}_{name}_s"] = statistics.median(times)
            except Exception as e:  # noqa: BLE001 - a variant that fails is reported
                out[f"{p}_{name}_s"] = None
                out[f"{p}_{name}_error"] = f"{type(e).__name__}: {e}"[:300]
            finally:
                sampling.matmul_weights_in = real_cast
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    for name in ("autocast_every_step", "weights_cast_once", "compiled_reduce_overhead"):
        b, s = out.get(f"B_{name}_s"), out.get(f"S_{name}_s")
        if b and s:
            out[f"speedup_{name}"] = b / s
    return out


# --------------------------------------------------------------------------------- (j)
def tiny_step(device: torch.device, steps: int) -> dict:
    """The tiny-base study step on this device, legacy vs fused (same seed and archs)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_step_ops

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for impl in ("legacy", "fused"):
            t = bench_step_ops.make_trainer(impl, Path(tmp) / impl, 4,
                                            [f"train.device={device.type}"])
            t.fit(4)
            _sync(device)
            t0 = time.perf_counter()
            t.fit(4 + steps)
            _sync(device)
            out[f"{impl}_ms"] = (time.perf_counter() - t0) * 1e3 / steps
            del t
    out["speedup"] = out["legacy_ms"] / out["fused_ms"]
    out["steps"] = steps
    return out
