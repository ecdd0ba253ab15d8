"""Image-to-video transfer vs from scratch at the same total steps (issue 21).

Per seed: ``scratch`` trains tiny-base for ``--steps`` steps; ``transfer`` trains tiny-image
(the image counterpart, one-frame clips of the same videos) for ``--image-steps`` steps and
then tiny-base from it (``train.init_from``) for the rest, so image + video steps = scratch
steps. Everything else is the study's (:class:`sned.app.study.StudyPlan` recipe, data and
evaluation): EMA weights, the held-out validation-loss proxy per preset and resolution every
``--eval-every`` steps (``--val-videos`` clips), and at the end the study's evaluator (its val
loss and caption accuracy of sampled videos at the lowest resolution).

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_transfer.py --out /tmp/bt \\
        --json docs/results/transfer.json

The summary per preset and resolution: final val loss of both (mean, 95 % t-interval over
seeds, paired difference), the video steps the transfer run needed to reach scratch's final
val loss (first evaluation at or below it), caption accuracy, and the goal verdict: reach
scratch's final val loss in <= 50 % of the video steps at every preset, and end better.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

PRESETS = ("S", "M", "L", "B")


def overrides(plan, device: str, steps: int, seed: int, frames: int | None = None) -> list[str]:
    from sned.app.study_plan import base_overrides

    ov = base_overrides(plan, (16, 32), device) + [
        f"train.seed={seed}", f"train.steps={steps}",
        f"train.warmup_steps={int(steps * plan.warmup_fraction)}"]
    return ov + ([f"model.frames={frames}"] if frames else [])


class Curve:
    """Val-loss proxies (fixed held-out clips, noise, timesteps) per resolution; evaluates the
    EMA weights of a run's latest checkpoint at every preset."""

    def __init__(self, plan, n_videos: int) -> None:
        from sned.text import TextEncoder

        self.plan, self.n, self.proxies = plan, n_videos, {}
        self.text = TextEncoder(max_length=16)

    def __call__(self, folder: Path) -> dict:
        from sned.pipelines.loading import load_denoiser
        from sned.search.proxy import synthetic_proxy

        den = load_denoiser(folder, ema=True)
        out = {}
        for res in den.config.resolutions:
            if res not in self.proxies:
                self.proxies[res] = synthetic_proxy(den.model, den.diffusion, res,
                                                    n_videos=self.n, frames=self.plan.frames,
                                                    text_encoder=self.text)
            proxy = self.proxies[res]
            proxy.model = den.model
            out[str(res)] = {p: proxy(den.space.preset(p, res)) for p in PRESETS}
        return out


def train_curve(run, folder: Path, every: int, curve: Curve, offset: int = 0,
                at_zero: bool = True) -> list[dict]:
    """Train ``run`` in chunks of ``every`` steps; evaluate after each chunk (and at step 0
    unless ``at_zero`` is False)."""
    from sned.train.trainer import Trainer

    shutil.rmtree(folder, ignore_errors=True)
    tr = Trainer(run, folder, progress=False)
    tr.save()
    rows, macs, t0 = [], 0, time.perf_counter()
    while True:
        if tr.step or at_zero:
            rows.append({"video_steps": tr.step, "total_steps": offset + tr.step,
                         "train_macs": macs, "val_loss": curve(folder)})
        if tr.step >= run.train.steps:
            break
        tr.fit(steps=min(run.train.steps, tr.step + every))
        lines = (folder / "metrics.jsonl").read_text().splitlines()
        macs = sum(json.loads(r)["train_macs"] for r in lines if r.strip())
    print(f"  {folder.name}: {tr.step} steps in {time.perf_counter() - t0:.0f} s", flush=True)
    return rows


def first_reach(rows: list[dict], res: str, preset: str, goal: float) -> int | None:
    for r in rows:
        if r["val_loss"][res][preset] <= goal:
            return r["video_steps"]
    return None


def summarise(seeds: list[dict], steps: int) -> dict:
    from sned.app.study_report import t_interval

    def stat(v):
        return {"mean": float(np.mean(v)), "ci95": t_interval(v), "values": v}

    out, goal_ok = {}, True
    for res in seeds[0]["scratch"][-1]["val_loss"]:
        for p in PRESETS:
            sc = [s["scratch"][-1]["val_loss"][res][p] for s in seeds]
            tf = [s["transfer"][-1]["val_loss"][res][p] for s in seeds]
            reach = [first_reach(s["transfer"], res, p, s["scratch"][-1]["val_loss"][res][p])
                     for s in seeds]
            within = all(r is not None and r <= 0.5 * steps for r in reach)
            better = float(np.mean(np.subtract(tf, sc))) < 0
            goal_ok &= within and better
            out[f"{p}@{res}"] = {"scratch": stat(sc), "transfer": stat(tf),
                                 "difference": stat(list(np.subtract(tf, sc))),
                                 "video_steps_to_reach_scratch_final": reach,
                                 "reached_within_50pct": within, "ends_better": better}
    for key in ("scratch", "transfer"):
        acc = [[r["caption_accuracy"] for r in s[f"{key}_final"] if "caption_accuracy" in r]
               for s in seeds]
        out[f"caption_accuracy_{key}"] = stat([float(np.mean(a)) for a in acc])
    out["goal_met"] = goal_ok
    return out


def markdown(result: dict) -> str:
    """The summary as a markdown table (mean ± 95 % t-interval over seeds)."""
    def pm(st, fmt="{:.4f}"):
        ci = st["ci95"]
        return fmt.format(st["mean"]) + ("" if ci is None else " ± " + fmt.replace("+", "")
                                          .format(ci))

    s, n = result["summary"], result["setting"]["scratch_steps"]
    head = ("| preset @ px | scratch final | transfer final | transfer − scratch | video steps "
            "to reach scratch's final (per seed) |")
    lines = [head, "|---|---|---|---|---|"]
    for key, row in s.items():
        if "@" not in key:
            continue
        reach = ", ".join("—" if r is None else str(r)
                          for r in row["video_steps_to_reach_scratch_final"])
        lines.append(f"| {key} | {pm(row['scratch'])} | {pm(row['transfer'])} | "
                     f"{pm(row['difference'], '{:+.4f}')} | {reach} (of {n}) |")
    lines.append("")
    lines.append(f"Caption accuracy (all attributes, mean over presets): scratch "
                 f"{pm(s['caption_accuracy_scratch'], '{:.3f}')}, transfer "
                 f"{pm(s['caption_accuracy_transfer'], '{:.3f}')}. Goal met: {s['goal_met']}.")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="bench-transfer")
    p.add_argument("--steps", type=int, default=160, help="scratch steps = image + video steps")
    p.add_argument("--image-steps", type=int, default=80)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--seed-start", type=int, default=0, help="first seed (split seeds over runs)")
    p.add_argument("--merge", nargs="+", help="only merge the seeds of these results JSONs "
                                              "(same setting) into --json")
    p.add_argument("--eval-every", type=int, default=20, help="transfer run's evaluations")
    p.add_argument("--scratch-eval-every", type=int, default=40)
    p.add_argument("--val-videos", type=int, default=32)
    p.add_argument("--caption-prompts", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--report", help="only print the markdown table of a results JSON")
    args = p.parse_args()
    if args.report:
        print(markdown(json.loads(Path(args.report).read_text())))
        return
    if args.merge:
        parts = [json.loads(Path(f).read_text()) for f in args.merge]
        def same(st):  # the seed count of a part does not change its seeds' numbers
            return {**st, "plan": {**st["plan"], "seeds": None}}

        if any(same(p_["setting"]) != same(parts[0]["setting"]) for p_ in parts):
            raise SystemExit("bench_transfer --merge: the results have different settings")
        seeds = sorted((s_ for p_ in parts for s_ in p_["seeds"]), key=lambda s_: s_["seed"])
        result = {**parts[0], "wall_seconds": sum(p_["wall_seconds"] for p_ in parts),
                  "summary": summarise(seeds, parts[0]["setting"]["scratch_steps"]),
                  "seeds": seeds, "merged_from": args.merge}
        Path(args.json).write_text(json.dumps(result, indent=1))
        print(markdown(result))
        return

    from sned.app.study import Evaluator
    from sned.app.study_plan import StudyPlan
    from sned.train.config import load_run_config

    plan = StudyPlan(steps=args.steps, seeds=args.seeds, val_videos=args.val_videos,
                     caption_prompts=args.caption_prompts)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    curve, evaluate = Curve(plan, args.val_videos), Evaluator(plan, 16, out, args.device)
    video_steps = args.steps - args.image_steps
    t_start, seeds = time.perf_counter(), []
    for seed in range(args.seed_start, args.seed_start + args.seeds):
        print(f"seed {seed}", flush=True)
        rec = {"seed": seed}
        scratch = load_run_config("tiny-base", overrides(plan, args.device, args.steps, seed))
        rec["scratch"] = train_curve(scratch, out / f"scratch-{seed}", args.scratch_eval_every,
                                     curve, at_zero=False)
        rec["scratch_final"] = evaluate(out / f"scratch-{seed}", PRESETS)
        image = load_run_config("tiny-image", overrides(plan, args.device, args.image_steps,
                                                        seed, frames=1))
        rec["image"] = train_curve(image, out / f"image-{seed}", args.image_steps, curve,
                                   at_zero=False)
        video = load_run_config("tiny-base", overrides(plan, args.device, video_steps, seed) + [
            f"train.init_from={out / f'image-{seed}'}"])
        rec["transfer"] = train_curve(video, out / f"transfer-{seed}", args.eval_every, curve,
                                      offset=args.image_steps)
        rec["image_macs"] = rec["image"][-1]["train_macs"]
        rec["transfer_final"] = evaluate(out / f"transfer-{seed}", PRESETS)
        seeds.append(rec)
        result = {"setting": {"config": "tiny-base", "image_config": "tiny-image",
                              "scratch_steps": args.steps, "image_steps": args.image_steps,
                              "video_steps": video_steps, "eval_every": args.eval_every,
                              "scratch_eval_every": args.scratch_eval_every,
                              "val_videos": args.val_videos, "plan": plan.to_dict(),
                              "threads": torch.get_num_threads(), "device": args.device},
                  "wall_seconds": time.perf_counter() - t_start,
                  "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  "summary": summarise(seeds, args.steps), "seeds": seeds}
        text = json.dumps(result, indent=1)  # after every seed: a partial result survives
        (out / "transfer.json").write_text(text)
        if args.json:
            Path(args.json).write_text(text)
    print(markdown(result))
    print(f"wall {result['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
