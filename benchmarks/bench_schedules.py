"""Sampling schedules against single presets and the T-Stitch rule, at caps on sampling MACs.

On a trained base supernet, for every cap (default 40 / 60 / 80 % of B's sampling MACs: the
trajectory at the sampler's step count, :func:`sned.schedule.trajectory_macs`) three ways to
spend it are compared side by side:

* **single** — the best single preset at that cost: among S/M/L/B and the fraction presets
  0.3, 0.4, …, 1.0 that fit under the cap, the lowest trajectory proxy on the *search* pairs;
* **searched** — :func:`sned.search.schedules.search_schedule` with K segments (one search,
  its per-segment fronts merged under each cap), chosen on the same search pairs;
* **tstitch** — T-Stitch's rule: S over the first (noisiest) steps, B after, with as many S
  steps as the cap needs (infeasible when S alone costs more than the cap);

and B itself. Each is measured on a held-out set **disjoint** from the search pairs: the
trajectory proxy with a 95 % interval and the paired difference to B and to the single preset;
≥ 64 prompts (the held-out clips' captions) sampled from the same noise as B: PSNR against B's
video (per-prompt paired differences), caption accuracy with Wilson intervals, and the
measured sampling time. The storage of each searched schedule as a folder (union of its
subnets stored once, :mod:`sned.schedule.folder`) is measured against its subnets stored whole.

    python benchmarks/bench_schedules.py --run /tmp/sched-run --out docs/results/schedules.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sned.extract import extract, save_pretrained, weights_file
from sned.metrics.caption import caption_accuracy, wilson_interval
from sned.metrics.consistency import psnr
from sned.pipelines import sample
from sned.pipelines.loading import load_denoiser
from sned.schedule import Schedule, Segment, sampler_timesteps, trajectory_macs
from sned.schedule.folder import export_schedule
from sned.search.profile import mean_ci, plot_profile, timestep_profile
from sned.search.proxy import heldout_proxy
from sned.search.schedules import (TrajectoryObjective, arch_label, merge_fronts,
                                   search_schedule, step_cells)
from sned.text import TextEncoder
from sned.video_io import to_uint8


def say(msg: str) -> None:
    print(f"[bench_schedules {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def tstitch(space, small, big, ts, T, cap, frames):
    """S over the first m steps (the fewest that meet ``cap``), B after; None if infeasible."""
    for m in range(len(ts) + 1):
        if m == len(ts):
            sched = Schedule.single(small, T, "S")
        elif m == 0:
            sched = Schedule.single(big, T, "B")
        else:
            cells = step_cells(ts, T)
            edge = cells[m - 1][0]  # S runs at t >= edge (the first m steps)
            sched = Schedule((Segment(0, edge, big, "B"), Segment(edge, T, small, "S")), T,
                             space.config.name)
        if trajectory_macs(sched, space, ts, frames) <= cap:
            return sched, m
    return None, None


def best_single(space, objective, ts, T, cap, frames, res):
    """The lowest-proxy single preset under ``cap`` (presets S/M/L/B and fractions)."""
    names = ["S", "M", "L", "B"] + [f"{f:.2f}" for f in np.arange(0.3, 1.0001, 0.1)]
    best = None
    for name in names:
        arch = space.preset(name, res)
        sched = Schedule.single(arch, T, arch_label(space, arch))
        macs = trajectory_macs(sched, space, ts, frames)
        if macs > cap:
            continue
        value = objective.evaluate(sched)["mean"]
        if best is None or value < best[0]:
            best = (value, name, sched)
    return None if best is None else (best[1], best[2])


def sample_all(den, sched, emb, mask, args, seeds) -> tuple[torch.Tensor, float]:
    t0 = time.perf_counter()
    out = []
    for i in range(0, emb.shape[0], args.batch):
        out.append(sample(den.model, emb[i:i + args.batch], mask[i:i + args.batch],
                          diffusion=den.diffusion, schedule=sched, scheduler=args.scheduler,
                          steps=args.steps, guidance_scale=args.cfg, seed=seeds[i:i + args.batch],
                          frames=args.frames, progress=False))
    return torch.cat(out), time.perf_counter() - t0


def storage(den, sched) -> dict:
    """Bytes of the schedule folder's weights (union stored once) vs each subnet whole."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = export_schedule(den, sched, Path(tmp) / "sched")
        shared = weights_file(folder).stat().st_size
        whole = 0
        for i, arch in enumerate(sched.archs()):
            save_pretrained(extract(den.model, arch), Path(tmp) / f"w{i}")
            whole += weights_file(Path(tmp) / f"w{i}").stat().st_size
    return {"shared_bytes": shared, "whole_bytes": whole, "subnets": len(sched.archs())}


def verdict(ci, better_if_negative=True) -> str:
    lo, hi = ci
    if hi < 0:
        return "better" if better_if_negative else "worse"
    if lo > 0:
        return "worse" if better_if_negative else "better"
    return "not resolved"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", default="/tmp/sched-run")
    p.add_argument("--out", default="docs/results/schedules.json")
    p.add_argument("--caps", default="0.4,0.5,0.6,0.8")
    p.add_argument("--segments", type=int, default=5)
    p.add_argument("--scheduler", default="dpm")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--cfg", type=float, default=5.0)
    p.add_argument("--frames", type=int, default=None)
    p.add_argument("--search-clips", type=int, default=32)
    p.add_argument("--eval-clips", type=int, default=64, help="also the number of prompts")
    p.add_argument("--pairs-per-clip", type=int, default=6)
    p.add_argument("--budget", type=int, default=6, help="archs per segment and level")
    p.add_argument("--levels", type=int, default=3)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    torch.manual_seed(0)
    den = load_denoiser(args.run)
    space, cfg = den.space, den.config
    res = cfg.resolutions[0]
    args.frames = args.frames or cfg.frames
    T = den.diffusion.num_train_timesteps
    ts = sampler_timesteps(den.diffusion, args.scheduler, args.steps)
    big = space.largest_under_cap(res)
    small = space.preset("S", res)
    b_sched = Schedule.single(big, T, "B")
    b_macs = trajectory_macs(b_sched, space, ts, args.frames)
    low = space.smallest(res, space.min_ratio, space.min_keep)
    smallest = trajectory_macs(Schedule.single(low, T), space, ts, args.frames) / b_macs
    enc = TextEncoder(max_length=cfg.text_len)
    search_obj = TrajectoryObjective(heldout_proxy(
        den.model, den.diffusion, res, args.search_clips, args.frames, text_encoder=enc,
        pairs_per_clip=args.pairs_per_clip, seed=args.seed), ts)
    eval_proxy = heldout_proxy(den.model, den.diffusion, res, args.eval_clips, args.frames,
                               text_encoder=enc, pairs_per_clip=args.pairs_per_clip,
                               skip=args.search_clips, seed=args.seed + 1)
    eval_obj = TrajectoryObjective(eval_proxy, ts)
    say(f"B trajectory {b_macs:,} MACs; searching {args.segments} segments")
    t0 = time.perf_counter()
    found = search_schedule(space, search_obj, args.segments, None, resolution=res,
                            frames=args.frames, budget=args.budget, levels=args.levels,
                            seed=args.seed)
    search_s = time.perf_counter() - t0
    say(f"search: {found['evaluated']} (segment, arch) scored in {search_s:.0f} s")

    # prompts: the captions of the evaluation clips; the same noise for every method
    from sned.data.config import DataConfig
    from sned.data.heldout import held_out_set
    prompts = list(held_out_set(DataConfig(), args.search_clips + args.eval_clips, args.frames,
                                res).captions())[args.search_clips:]
    emb, mask = enc.encode(prompts)
    seeds = [args.seed + i for i in range(len(prompts))]
    ref, ref_s = sample_all(den, b_sched, emb, mask, args, seeds)
    ref_u8 = to_uint8(ref)

    def measure(name, sched, extra=None) -> dict:
        row = {"method": name, "schedule": sched.label,
               "macs": trajectory_macs(sched, space, ts, args.frames)}
        row["fraction_of_B"] = row["macs"] / b_macs
        row["proxy"] = eval_obj.evaluate(sched)
        row["proxy_vs_B"] = eval_obj.evaluate(sched, b_sched)
        row["search_proxy"] = search_obj.evaluate(sched)["mean"]
        if sched == b_sched:
            video, secs = ref, ref_s
        else:
            video, secs = sample_all(den, sched, emb, mask, args, seeds)
        u8 = to_uint8(video)
        db = psnr(torch.from_numpy(u8).float() / 255, torch.from_numpy(ref_u8).float() / 255)
        row["psnr_vs_B"] = mean_ci(db) if sched != b_sched else None
        row["_psnr"] = db
        acc = caption_accuracy(u8, prompts)
        n = int(acc["n"])
        row["caption"] = {k: {"value": acc[k], "ci95": list(wilson_interval(round(acc[k] * n),
                                                                            n))}
                          for k in ("color", "shape", "direction", "all_correct")}
        row["caption_n"] = n
        row["sample_s"] = secs
        row["sample_s_ratio_to_B"] = secs / ref_s
        row.update(extra or {})
        say(f"{name}: {row['fraction_of_B']:.0%} of B, proxy {row['proxy']['mean']:.4f}, "
            f"{secs:.1f} s")
        return row

    profile = timestep_profile(eval_proxy, {p: space.preset(p, res) for p in "SMLB"}, buckets=5)
    plot_profile(Path(args.out).with_name(Path(args.out).stem + "_profile.png"), profile)
    say("per-timestep profile done")
    b_row = measure("B", b_sched)
    caps = []
    for c in [float(x) for x in args.caps.split(",")]:
        cap = c * b_macs
        entry = {"cap": c, "cap_macs": cap, "rows": []}
        single = best_single(space, search_obj, ts, T, cap, args.frames, res)
        front = merge_fronts(found["segment_fronts"], cap)
        searched = None
        if front:
            best = min(front, key=lambda q: q.objective)
            searched = best.schedule(space, ts, found["segments"], T)
        ts_sched, m = tstitch(space, small, big, ts, T, cap, args.frames)
        rows = {}
        if single is not None:
            rows["single"] = measure("single", single[1], {"preset": single[0]})
        if searched is not None:
            rows["searched"] = measure("searched", searched,
                                       {"storage": storage(den, searched),
                                        "schedule_json": searched.to_dict()})
        if ts_sched is not None:
            rows["tstitch"] = measure("tstitch", ts_sched, {"small_steps": m})
        else:
            entry["tstitch_infeasible"] = (f"S alone costs "
                                           f"{trajectory_macs(Schedule.single(small, T), space, ts, args.frames) / b_macs:.0%} of B")
        if "single" in rows:
            ref_single = single[1]
            for name, row in rows.items():
                if name != "single":
                    row["proxy_vs_single"] = eval_obj.evaluate(
                        searched if name == "searched" else ts_sched, ref_single)
                    row["psnr_vs_single"] = mean_ci(row["_psnr"] - rows["single"]["_psnr"])
        entry["rows"] = list(rows.values())
        caps.append(entry)

    def clean(row):
        return {k: v for k, v in row.items() if not k.startswith("_")}

    goal = []
    for entry in caps:
        rows = {r["method"]: r for r in entry["rows"]}
        s = rows.get("searched")
        if s is None:
            goal.append({"cap": entry["cap"], "verdict": f"infeasible: the smallest subnet inside "
                         f"the run's floors costs {smallest:.1%} of B's sampling MACs"})
            continue
        g = {"cap": entry["cap"]}
        if "proxy_vs_single" in s:
            g["proxy_vs_single"] = verdict(s["proxy_vs_single"]["ci95"])
            g["psnr_vs_single"] = verdict(s["psnr_vs_single"]["ci95"], better_if_negative=False)
        b_ci = b_row["proxy"]["ci95"]
        g["proxy_inside_B_interval"] = b_ci[0] <= s["proxy"]["mean"] <= b_ci[1]
        g["proxy_vs_B"] = verdict(s["proxy_vs_B"]["ci95"])
        cap_b = b_row["caption"]["all_correct"]["ci95"]
        g["caption_all_inside_B_interval"] = cap_b[0] <= s["caption"]["all_correct"]["value"] <= cap_b[1]
        cap_c = b_row["caption"]["color"]["ci95"]
        g["caption_color_inside_B_interval"] = cap_c[0] <= s["caption"]["color"]["value"] <= cap_c[1]
        goal.append(g)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    doc = {"command": "python benchmarks/bench_schedules.py " + " ".join(argv or sys.argv[1:]),
           "commit": commit, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} torch thread(s); "
                      f"2-core machine shared with other jobs (timings under load)",
           "run": str(args.run), "config": cfg.name, "resolution": res, "frames": args.frames,
           "scheduler": args.scheduler, "steps": args.steps, "timesteps": ts, "cfg": args.cfg,
           "segments": args.segments, "segment_steps": [[ts[r[0]], ts[r[-1]]]
                                                          for r in found["segments"]],
           "search": {"evaluated": found["evaluated"], "seconds": search_s,
                      "budget_per_level": args.budget, "levels": args.levels,
                      "pairs": int(search_obj.proxy.t.numel()),
                      "val_data": search_obj.proxy.source},
           "eval_pairs": int(eval_proxy.t.numel()), "eval_data": eval_proxy.source,
           "prompts": len(prompts), "B_macs": b_macs, "smallest_fraction_of_B": smallest, "B": clean(b_row),
           "caps": [{**{k: v for k, v in e.items() if k != "rows"},
                     "rows": [clean(r) for r in e["rows"]]} for e in caps],
           "profile": profile, "goal": goal, "wall_s": time.perf_counter() - t_start}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1, default=float) + "\n")
    say(f"wrote {args.out} in {doc['wall_s']:.0f} s")
    for e in caps:
        for r in e["rows"]:
            pc = r.get("psnr_vs_B") or {}
            print(f"cap {e['cap']:.0%} {r['method']:8s} {r['schedule']:40s} "
                  f"{r['fraction_of_B']:.0%} proxy {r['proxy']['mean']:.4f} "
                  f"[{r['proxy']['ci95'][0]:.4f}-{r['proxy']['ci95'][1]:.4f}] "
                  f"PSNR {pc.get('mean', math.nan):.2f} "
                  f"colour {r['caption']['color']['value']:.2f} t {r['sample_s']:.1f}s")
    print(json.dumps(goal, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
