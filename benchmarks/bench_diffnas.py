"""DiffNAS on a redundant image teacher: the capped comparison over seeds.

1. The teacher: ``tiny-image`` at 16 px trained as one fixed arch (``train.fixed_arch=B``, the
   full width — no slimmable supernet, so no narrower width starts pre-trained) on a small
   synthetic set (``--images``) until its training loss plateaus (``--teacher-steps``), then
   extracted (raw weights).
2. Per seed, ``sned diffnas`` (students from scratch, fixed pools trained and scored) with the
   capped comparison at the MACs of the uniform width shrink at r = 0.75 and r = 0.5: the
   DiffNAS subnet capped there vs that uniform shrink vs the teacher's architecture retrained,
   all from the same student with the same steps and loss, scored on a final held-out set
   disjoint from the search's.
3. Across seeds: per cap, the mean of the per-seed differences (DiffNAS − uniform, DiffNAS −
   teacher arch) with a t 95 % interval over seeds (training noise included), and the pooled
   paired interval over every seed's held-out samples; the goal check
   (≤ 70 % MACs, within 1 % of the teacher arch, CI of DiffNAS − uniform below zero).

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_diffnas.py --out /tmp/bench-diffnas \\
        --json docs/results/diffnas-capped.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
       9: 2.262}
"""Two-sided 95 % Student-t quantiles by degrees of freedom."""


def train_teacher(out: Path, steps: int, images: int, batch: int, lr: float) -> dict:
    """Train the fixed-arch teacher run in ``out`` (resumes a finished one); its loss curve."""
    from sned.train.config import load_run_config
    from sned.train.trainer import Trainer

    # model.pooled_text=false: the teacher the published numbers (docs/results.md, issue 19)
    # were measured with — tiny-image before it became tiny-base's exact counterpart (issue 21)
    overrides = ["model.resolutions=[16]", "model.pooled_text=false", "train.fixed_arch=B",
                 f"train.steps={steps}",
                 f"train.batch_size={batch}", f"train.lr={lr}", "train.warmup_steps=0",
                 "train.ema_decay=0", "train.weight_decay=0", f"data.num_videos={images}",
                 f"train.checkpoint_every={steps}", "train.keep_last=1", "train.log_every=10",
                 "train.device=cpu"]
    done = (out / "checkpoints" / "latest").exists()
    if not done:
        Trainer(load_run_config("tiny-image", overrides), out, progress=False).fit()
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows]
    tenth = max(1, len(losses) // 5)
    return {"config": "tiny-image", "overrides": overrides, "steps": steps,
            "train_seconds": float(sum(r.get("seconds", 0.0) for r in rows)),
            "loss_first_fifth": float(np.mean(losses[:tenth])),
            "loss_second_last_fifth": float(np.mean(losses[-2 * tenth:-tenth])),
            "loss_last_fifth": float(np.mean(losses[-tenth:]))}


def t_interval(xs: list[float]) -> dict:
    x = np.asarray(xs, dtype=np.float64)
    m = float(x.mean())
    if len(x) < 2:
        return {"mean": m, "lo": float("nan"), "hi": float("nan"), "n": len(x)}
    h = T95.get(len(x) - 1, 1.96) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return {"mean": m, "lo": m - h, "hi": m + h, "n": len(x)}


def aggregate(runs: dict[int, Path], ratios: list[float]) -> dict:
    """Per cap: per-seed rows and the across-seed / pooled intervals (see the module doc)."""
    from sned.diffnas.report import paired_ci

    out = {}
    for r in ratios:
        key = f"{r:g}"
        per_seed, du, dt, rel, pooled_u, pooled_t = [], [], [], [], ([], []), ([], [])
        for seed, folder in runs.items():
            sc = json.loads((folder / "scores.json").read_text())
            rows = {name: sc[label] for name, label in (
                ("diffnas", f"diffnas-r{key}"), ("uniform", f"uniform-r{key}"),
                ("teacher_arch", "teacher-arch"))}
            per_seed.append({"seed": seed, **{n: {k: x[k] for k in ("macs_frac", "params_frac",
                                                                  "val_loss", "macs", "params")}
                                             for n, x in rows.items()}})
            d, u, t = (np.asarray(rows[n]["per_sample"]) for n in ("diffnas", "uniform",
                                                                    "teacher_arch"))
            du.append(float((d - u).mean()))
            dt.append(float((d - t).mean()))
            rel.append(rows["diffnas"]["val_loss"] / rows["teacher_arch"]["val_loss"] - 1)
            pooled_u[0].extend(d), pooled_u[1].extend(u)
            pooled_t[0].extend(d), pooled_t[1].extend(t)
        ci_u, ci_t = t_interval(du), t_interval(dt)
        mean_macs = float(np.mean([s["diffnas"]["macs_frac"] for s in per_seed]))
        out[key] = {
            "per_seed": per_seed,
            "diffnas_minus_uniform_over_seeds": ci_u,
            "diffnas_minus_teacher_arch_over_seeds": ci_t,
            "diffnas_minus_uniform_pooled_samples": paired_ci(*pooled_u),
            "diffnas_minus_teacher_arch_pooled_samples": paired_ci(*pooled_t),
            "diffnas_vs_teacher_arch_rel": t_interval(rel),
            "goal": {"macs_frac_le_0.70": mean_macs <= 0.70,
                     "within_1pct_of_teacher_arch": float(np.mean(rel)) <= 0.01,
                     "ci_vs_uniform_below_zero": bool(ci_u["hi"] < 0)},
        }
        out[key]["goal"]["met"] = all(out[key]["goal"].values())
        # the stricter reading: the across-seed interval of the relative gap is below +1 %
        out[key]["goal"]["within_1pct_resolved"] = bool(
            out[key]["diffnas_vs_teacher_arch_rel"]["hi"] <= 0.01)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="bench-diffnas")
    p.add_argument("--teacher-steps", type=int, default=500)
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--teacher-lr", type=float, default=1e-3)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--supernet-steps", type=int, default=400)
    p.add_argument("--retrain-steps", type=int, default=200)
    p.add_argument("--budget", type=int, default=32)
    p.add_argument("--draws", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--heldout", type=int, default=64)
    p.add_argument("--score-heldout", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--margin", type=float, default=0.0)
    p.add_argument("--compare", default="0.75,0.5")
    p.add_argument("--json", default=None, help="write the raw results here")
    args = p.parse_args()

    from sned.diffnas import Options, run_diffnas
    from sned.pipelines.export import export_subnet
    from sned.pipelines.loading import load_denoiser

    out = Path(args.out)
    t0 = time.monotonic()
    teacher_info = train_teacher(out / "teacher-run", args.teacher_steps, args.images, 8,
                                 args.teacher_lr)
    teacher = out / "teacher"
    if not teacher.exists():
        export_subnet(load_denoiser(out / "teacher-run", preset="B", ema=False), teacher)
    t1 = time.monotonic()
    data = {"num_videos": args.images}
    runs, seconds = {}, {}
    for seed in (int(s) for s in args.seeds.split(",")):
        ts = time.monotonic()
        opts = Options(supernet_steps=args.supernet_steps, retrain_steps=args.retrain_steps,
                       budget=args.budget, batch_size=args.batch_size, heldout=args.heldout,
                       score_heldout=args.score_heldout, lr=args.lr, seed=seed, device="cpu",
                       data=data, fvd_videos=0, draws=args.draws, margin=args.margin,
                       compare=args.compare)
        runs[seed] = run_diffnas(teacher, out / f"seed{seed}", opts, log=print)
        seconds[seed] = time.monotonic() - ts
        print((runs[seed] / "report.md").read_text())
    ratios = [float(r) for r in args.compare.split(",")]
    seconds_key = "seconds" if t1 - t0 > 5 else "seconds_of_this_resumed_call"
    result = {"benchmark": "bench_diffnas", "settings": vars(args),
              "teacher": teacher_info, "threads": torch.get_num_threads(),
              seconds_key: {"teacher": t1 - t0, **{f"seed{s}": v for s, v in seconds.items()}},
              "search": {f"seed{s}": _search_summary(f) for s, f in runs.items()},
              "caps": aggregate(runs, ratios)}
    text = json.dumps(result, indent=1) + "\n"
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text)
    for key, cap in result["caps"].items():
        print(f"cap r={key}: DiffNAS − uniform {cap['diffnas_minus_uniform_over_seeds']}, "
              f"DiffNAS − teacher arch {cap['diffnas_minus_teacher_arch_over_seeds']}, "
              f"goal {cap['goal']}")
    print(f"teacher {t1 - t0:.0f} s; seeds {seconds} ({torch.get_num_threads()} threads)")


def _search_summary(folder: Path) -> dict:
    doc = json.loads((folder / "search.json").read_text())
    return {"student_init": doc["student_init"], "updates": doc["updates"],
            "subnet_macs_frac": doc["subnet"]["macs"] / doc["teacher"]["macs"],
            "cut_blocks": sum(b["chosen"] != b["teacher"] for b in doc["blocks"]),
            "blocks": len(doc["blocks"]),
            "capped": [{"ratio": c["ratio"], "macs_frac": c["subnet"]["macs"]
                        / doc["teacher"]["macs"], "chosen": c["chosen"]}
                       for c in doc["capped"]]}


if __name__ == "__main__":
    main()
