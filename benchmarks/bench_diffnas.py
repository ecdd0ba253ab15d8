"""DiffNAS judged against its teacher (issue 27): images and a latent teacher, 3 seeds.

Per case (``--cases``: ``image``, ``latent``, ``video``):

1. The teacher: one fixed architecture (``train.fixed_arch=B`` — no slimmable supernet, so no
   narrower width starts pre-trained) trained until its loss plateaus (cosine lr to its floor,
   EMA), then extracted (``sned extract`` records its recipe). ``plateau`` checks that the
   mean training loss of the last fifth is within 1 % of the fourth fifth's.
   ``image``: tiny-image at 16 px; ``latent``: a tiny-ae, then tiny-latent over it (the UNet is
   searched, scored in latent space); ``video``: tiny-base at 16 px (FVD where frames allow).
2. Per seed, ``sned diffnas`` with the teacher's retrain recipe (as many samples as the teacher
   saw, its lr schedule and EMA — the defaults) and ``--compare`` (the teacher's arch retrained
   and the uniform shrink nearest above the subnet's MACs) for the seeds in
   ``--reference-seeds``.
3. The verdict (:func:`sned.diffnas.verdict.verdict`): per seed g = L_subnet / L_teacher − 1
   on the one shared scoring set (its timesteps and noise do not depend on the seed: counted
   once), the seed-level t interval and the sample-paired interval; "shown" / "refuted" /
   "unresolved" at ≤ 70 % MACs (latent ≤ 50 %) and +1 %.

The full run (≈ 1.5 h on 2 cores, see docs/diffnas.md for the measured step costs):

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_diffnas.py --out /tmp/bench-diffnas \\
        --json docs/results/diffnas-teacher.json

(``OMP_NUM_THREADS=1`` on a shared machine: with 2 threads under load a 16 px step took
8–32 s instead of 0.7 s.)

``--smoke`` shrinks everything to a seconds-scale check of the machinery (numbers meaningless).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

CASES = {
    "image": {"config": "tiny-image", "overrides": ["model.resolutions=[16]",
                                                    "model.pooled_text=false"],
              "data": {}, "goal_macs": 0.7},
    "latent": {"config": "tiny-latent", "overrides": ["model.resolutions=[4]"],
               "data": {}, "goal_macs": 0.5},
    "video": {"config": "tiny-base", "overrides": ["model.resolutions=[16]"], "data": {},
              "goal_macs": 0.7},
}
SMOKE_MODEL = ["model.model_channels=16", "model.time_embed_dim=32"]


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] \
        if path.is_file() else []


def plateau(losses: list[float]) -> dict:
    """Mean loss per fifth of the curve; ``flat``: the last fifth within 1 % of the fourth."""
    fifths = [float(np.mean(c)) for c in np.array_split(np.asarray(losses), 5) if len(c)]
    rel = fifths[-1] / fifths[-2] - 1 if len(fifths) == 5 else float("nan")
    return {"fifths": fifths, "last_vs_fourth": rel, "flat": bool(abs(rel) <= 0.01)}


def train_fixed(out: Path, config: str, overrides: list[str]) -> list[float]:
    """Train a run in ``out`` (a finished one is kept); its loss curve."""
    from sned.train.config import load_run_config
    from sned.train.trainer import Trainer

    from sned.store.checkpoint import newest_complete, read_state

    last = newest_complete(out / "checkpoints")
    run = load_run_config(config, overrides)
    if last is None or read_state(last).get("step", 0) < run.train.steps:
        Trainer(run, out, resume=last is not None, progress=False).fit()  # a killed one resumes
    return [r["loss"] for r in _rows(out / "metrics.jsonl")]


def make_teacher(case: str, root: Path, a) -> dict:
    """Train and extract the case's teacher into ``root / 'teacher'``; its record."""
    from sned.pipelines.export import export_subnet
    from sned.pipelines.loading import load_denoiser

    spec = CASES[case]
    t0 = time.monotonic()
    info = {}
    extra = SMOKE_MODEL if a.smoke else []
    train = [f"train.steps={a.teacher_steps}", f"train.batch_size={a.teacher_batch}",
             f"train.lr={a.teacher_lr}", "train.lr_schedule=cosine", "train.fixed_arch=B",
             "train.warmup_steps=0", f"train.ema_decay={a.teacher_ema}", "train.weight_decay=0",
             f"data.num_videos={a.images}",
             f"train.checkpoint_every={max(1, a.teacher_steps // 5)}",
             "train.keep_last=1", "train.log_every=10", "train.device=cpu"]
    overrides = spec["overrides"] + extra + train
    if case == "latent":
        ae = ["train.batch_size=4", "train.ema_decay=0", "train.lr=1e-3",
              "train.lr_warmup_steps=0", f"data.num_videos={a.images}", "model.resolutions=[16]",
              "model.frames=4", f"train.steps={a.ae_steps}",
              f"train.checkpoint_every={a.ae_steps}", "train.keep_last=1", "train.device=cpu"]
        ae_losses = train_fixed(root / "ae-run", "tiny-ae", ae)
        info["autoencoder"] = {"config": "tiny-ae", "overrides": ae,
                               "plateau": plateau(ae_losses)}
        overrides.append(f"autoencoder={root / 'ae-run'}")
    losses = train_fixed(root / "teacher-run", spec["config"], overrides)
    if not (root / "teacher").exists():
        export_subnet(load_denoiser(root / "teacher-run", preset="B"), root / "teacher")
    info.update(config=spec["config"], overrides=overrides, steps=a.teacher_steps,
                batch=a.teacher_batch, plateau=plateau(losses),
                minutes=(time.monotonic() - t0) / 60)
    return info


def run_seed(case: str, root: Path, seed: int, a) -> tuple[Path, dict]:
    """One ``sned diffnas`` seed; its folder and minutes per stage (of this call)."""
    from sned.diffnas import Options, run_diffnas

    stamps, t0 = {}, time.monotonic()

    def log(msg: str) -> None:
        print(f"[{case} seed {seed}] {msg}", flush=True)
        if msg.startswith("diffnas: stage ") and msg.endswith(" done"):
            stamps[msg.split()[2]] = time.monotonic()

    compare = "auto" if seed in a.reference_seeds else ""
    opts = Options(supernet_steps=a.supernet_steps, retrain_steps=a.retrain_steps,
                   budget=a.budget, batch_size=a.batch_size, search_clips=a.search_clips,
                   pairs_per_clip=a.pairs_per_clip, score_heldout=a.score_clips,
                   lr=a.lr, seed=seed, device="cpu", data={"num_videos": a.images},
                   fvd_videos=a.fvd_videos if case == "video" else 0, i3d=a.i3d,
                   draws=a.draws, margin=a.margin, compare=compare,
                   goal_macs=CASES[case]["goal_macs"], agreement_samples=a.agreement_samples,
                   agreement_steps=a.agreement_steps)
    out = run_diffnas(root / "teacher", root / f"seed{seed}", opts, log=log)
    minutes, last = {}, t0
    for stage, t in stamps.items():
        minutes[stage], last = (t - last) / 60, t
    return out, minutes


def _curve(rows: list[dict], keys: tuple[str, ...], points: int = 40) -> dict:
    idx = np.unique(np.linspace(0, len(rows) - 1, min(points, len(rows))).astype(int))
    return {"step": [rows[i]["step"] for i in idx],
            **{k: [rows[i].get(k) for i in idx] for k in keys}}


def seed_record(folder: Path, minutes: dict) -> dict:
    """Per seed: the references' costs and losses, the arch per block, updates, curves."""
    search = json.loads((folder / "search.json").read_text())
    scores = json.loads((folder / "scores.json").read_text())["models"]
    refs = {"diffnas": scores["diffnas"], "teacher": scores["teacher"]}
    if "teacher-arch" in scores:
        refs["teacher_arch_retrained"] = scores["teacher-arch"]
    for label in scores:
        if label.startswith("uniform-r"):
            refs["uniform"] = {**scores[label], "ratio": float(label[len("uniform-r"):])}
            refs["diffnas_at_uniform_macs"] = scores["diffnas-r" + label[len("uniform-r"):]]
    keep = ("macs_frac", "params_frac", "val_loss", "macs", "params", "agreement", "ratio")
    return {
        "references": {k: {f: v[f] for f in keep if f in v} for k, v in refs.items()},
        "blocks": [{"name": b["name"], "chosen_arch": b["candidates"][b["chosen"]]["arch"],
                    "chosen_macs_vs_teacher_shaped": b["candidates"][b["chosen"]]["macs"]
                    / max(b["candidates"][b["teacher"]]["macs"], 1),
                    "updates": [c["updates"] for c in b["candidates"]]}
                   for b in search["blocks"]],
        "subnet_arch": search["subnet"]["arch"], "retrain": search["retrain"],
        "search_pairs": search["heldout"]["search_pairs"],
        "retrain_curve": _curve(_rows(folder / "retrain" / "metrics.jsonl"),
                                ("beta", "loss", "distill_loss", "diffusion_loss", "lr")),
        "supernet_curve": _curve(_rows(folder / "work" / "supernet" / "metrics.jsonl"),
                                 ("loss",)),
        "minutes": minutes,
        "_per_sample": {k: v["per_sample"] for k, v in refs.items()},
    }


def aggregate(seeds: dict[int, dict], goal_macs: float, tol: float, ppc: int) -> dict:
    """The verdict across seeds and the secondary intervals (vs the retrained references)."""
    from sned.diffnas.verdict import ratio_gap, t_interval, verdict

    rows = list(seeds.values())
    teacher = np.asarray(rows[0]["_per_sample"]["teacher"])
    gaps = [r["references"]["diffnas"]["val_loss"] / r["references"]["teacher"]["val_loss"] - 1
            for r in rows]
    mean_subnet = np.mean([r["_per_sample"]["diffnas"] for r in rows], axis=0)
    out = {"verdict": verdict(gaps, ratio_gap(mean_subnet, teacher, ppc),
                              [r["references"]["diffnas"]["macs_frac"] for r in rows],
                              goal_macs, tol)}
    for ref, ours in (("teacher_arch_retrained", "diffnas"),
                      ("uniform", "diffnas_at_uniform_macs")):
        diffs = [float(np.mean(np.asarray(r["_per_sample"][ours])
                               - np.asarray(r["_per_sample"][ref])))
                 for r in rows if ref in r["_per_sample"]]
        if diffs:
            out[f"diffnas_minus_{ref}_over_seeds"] = t_interval(diffs)
    return out


def _finite(x):
    """NaN / inf (an interval of one seed) → None, so the file is strict JSON."""
    if isinstance(x, float) and not np.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="bench-diffnas")
    p.add_argument("--cases", default="image,latent")
    p.add_argument("--smoke", action="store_true",
                   help="seconds-scale settings: checks the machinery, numbers meaningless")
    p.add_argument("--teacher-steps", type=int, default=1000)
    p.add_argument("--teacher-batch", type=int, default=8)
    p.add_argument("--teacher-lr", type=float, default=1e-3)
    p.add_argument("--teacher-ema", type=float, default=0.995)
    p.add_argument("--ae-steps", type=int, default=600)
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--reference-seeds", default="0",
                   help="seeds that also retrain the references (--compare); default seed 0 "
                        "only, to fit ≈ 1.5 h — the verdict against the teacher uses every seed")
    p.add_argument("--supernet-steps", type=int, default=150)
    p.add_argument("--retrain-steps", type=int, default=None,
                   help="default: the teacher's samples (sned diffnas's default)")
    p.add_argument("--budget", type=int, default=16)
    p.add_argument("--draws", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--search-clips", type=int, default=128)
    p.add_argument("--pairs-per-clip", type=int, default=4)
    p.add_argument("--score-clips", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--margin", type=float, default=0.0)
    p.add_argument("--tolerance", type=float, default=0.01)
    p.add_argument("--agreement-samples", type=int, default=8)
    p.add_argument("--agreement-steps", type=int, default=20)
    p.add_argument("--fvd-videos", type=int, default=16)
    p.add_argument("--i3d", default=None)
    p.add_argument("--json", default=None, help="write the raw results here")
    a = p.parse_args()
    if a.smoke:
        for k, v in dict(teacher_steps=6, teacher_batch=2, ae_steps=4, images=16,
                         supernet_steps=2, budget=3, batch_size=2, search_clips=2,
                         pairs_per_clip=2, score_clips=3, agreement_samples=2,
                         agreement_steps=2, fvd_videos=2, i3d="random").items():
            setattr(a, k, v)
    a.seeds = [int(s) for s in a.seeds.split(",")]
    a.reference_seeds = {int(s) for s in a.reference_seeds.split(",") if s.strip()}

    result = {"benchmark": "bench_diffnas", "issue": 27,
              "settings": {k: (sorted(v) if isinstance(v, set) else v)
                           for k, v in vars(a).items()},
              "threads": torch.get_num_threads(), "cases": {}}
    for case in a.cases.split(","):
        root = Path(a.out) / case
        teacher = make_teacher(case, root, a)
        seeds = {}
        for seed in a.seeds:
            folder, minutes = run_seed(case, root, seed, a)
            seeds[seed] = seed_record(folder, minutes)
        agg = aggregate(seeds, CASES[case]["goal_macs"], a.tolerance, a.pairs_per_clip)
        for r in seeds.values():
            r.pop("_per_sample")
        result["cases"][case] = {"teacher": teacher,
                                 "seeds": {f"seed{s}": r for s, r in seeds.items()}, **agg}
        v = agg["verdict"]
        print(f"{case}: verdict {v['status']} — {v['reason']}; gap {v['gap']['mean']:+.2%} "
              f"{[round(x, 4) for x in v['gap']['ci95']]}, paired {v['paired']['ci95']}, "
              f"max MACs {v['max_macs_frac']:.1%}", flush=True)
    text = json.dumps(_finite(result), indent=1, allow_nan=False) + "\n"
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(text)


if __name__ == "__main__":
    main()
