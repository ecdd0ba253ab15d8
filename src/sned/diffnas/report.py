"""``OUT/report.md``: teacher vs DiffNAS subnet vs uniform width shrink at the same MACs.

Every model is scored on the same held-out set with the same timesteps and noise (the
validation-loss proxy, :mod:`sned.search.proxy`); costs come from :mod:`sned.cost`. Video
teachers also get FVD/KVD (:func:`fvd_kvd_rows`): each model generates ``fvd_videos`` clips of
9 frames (I3D's minimum) through :func:`sned.evaluation.evaluate_preset`, prompted with the
held-out real clips' captions and compared with those clips by the Kinetics-400 I3D
(:func:`sned.metrics.i3d.load_detector`). Without I3D weights the report says so and the run
goes on; for image teachers (1 frame) FVD does not apply.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from ..app.evaluation import EvalSettings, evaluate_preset
from ..cost import model_cost
from ..data.heldout import describe_source
from ..extract import load_pretrained
from ..metrics.fvd import DEFAULT_MIN_FRAMES
from ..metrics.i3d import I3DWeightsMissing, load_detector
from ..pipelines.loading import load_denoiser

FVD_STEPS = 20
"""DDIM steps of the clips FVD/KVD score (guidance :data:`FVD_GUIDANCE`)."""
FVD_GUIDANCE = 3.0


def fvd_kvd_rows(folders: dict[str, Path], frames: int, n: int, i3d: str | None, data,
                 device: str, cache: Path) -> tuple[dict[str, dict] | None, str]:
    """FVD/KVD of each model folder (``{label: folder}``) against ``n`` held-out real clips of
    ``data``: ``({label: {"fvd", "kvd"}}, note)``, or ``(None, why not)`` when it does not
    apply (``frames`` = 1, ``n`` = 0) or no I3D weights are found. ``i3d``: None = the
    Kinetics-400 weights (:func:`~sned.metrics.i3d.load_i3d`), ``"random"``, or a path."""
    if frames == 1:
        return None, "FVD/KVD: not applicable — the teacher is an image model (1 frame)."
    if n == 0:
        return None, "FVD/KVD: not computed (--fvd-videos 0)."
    try:
        detector = load_detector(i3d, device=device)
    except I3DWeightsMissing as e:
        return None, f"FVD/KVD: not computed — {e}"
    settings = EvalSettings(metrics=("fvd", "kvd"), n_videos=n, frames=DEFAULT_MIN_FRAMES,
                            steps=FVD_STEPS, guidance=FVD_GUIDANCE, batch=min(n, 8),
                            progress=False, detector=detector, cache=cache, data=data)
    scores = {}
    for label, folder in folders.items():
        with warnings.catch_warnings():  # N < 400 feature dims: said in the note
            warnings.filterwarnings("ignore", message=".*rank-deficient")
            (row,) = evaluate_preset(label, load_denoiser(folder, device=device), [], settings)
        scores[label] = {"fvd": row["fvd"], "kvd": row["kvd"]}

    source = describe_source(settings.real_data["fvd"][0])
    random = " RANDOM-weight detector: relative comparisons only;" if getattr(
        detector, "random_features", False) else ""
    note = (f"FVD/KVD: {detector.name} (sha256 {(detector.sha256 or '—')[:16]});"
            f"{random} n = {n} generated clips per model ({DEFAULT_MIN_FRAMES} frames, the "
            f"I3D minimum; the teacher was trained on {frames}; {FVD_STEPS} DDIM steps, "
            f"guidance {FVD_GUIDANCE}, prompted with the real clips' captions) against the "
            f"same n held-out real clips: {source}. With n far below the 400 feature "
            f"dimensions FVD is strongly biased upwards: compare the three models with each "
            f"other at this n only, never with published numbers.")
    return scores, note


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, dict):
        return f"{v['mean']:.4g} ± {v['std']:.2g}"
    return f"{v:.4g}"


def paired_ci(a, b) -> dict:
    """Mean of ``a − b`` over paired samples with its 95 % normal interval (1.96 SE)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
    m = float(d.mean())
    return {"mean": m, "lo": m - 1.96 * se, "hi": m + 1.96 * se, "n": int(len(d))}


def model_folder(out: Path, folder: Path) -> Path:
    """``folder``, or the folder its ``same-as.json`` names (relative to the run ``out``; the
    pipeline writes it for an arch it had retrained under another name)."""
    same = folder / "same-as.json"
    return out / json.loads(same.read_text())["folder"] if same.is_file() else folder


def _score(run, folder: Path | None, model=None) -> dict:
    """Cost and final-held-out val loss (mean and per sample) of one model folder."""
    if model is None:
        folder = model_folder(run.out, folder)
        model = load_pretrained(folder, run.opts.device)
    cost = model_cost(model.config, model.arch or run.arch)
    per = run._proxy(model, final=True).per_sample(None)
    return {"folder": str(folder), "params": cost.params, "macs": cost.macs,
            "params_frac": cost.params / run.teacher_cost.params,
            "macs_frac": cost.macs / run.teacher_cost.macs,
            "val_loss": float(per.double().mean()), "per_sample": per.tolist()}


def write_report(run, search: dict) -> Path:
    """Score the models, write ``run.out / 'scores.json'`` and ``run.out / 'report.md'``;
    returns the report's path."""
    device = run.opts.device
    scores = {"teacher": _score(run, run.teacher_dir, run.teacher),
              "DiffNAS subnet": _score(run, run.out / "model"),
              "uniform width shrink": _score(run, run.out / "uniform")}
    for label, _ in run.comparison(search):
        scores[label] = _score(run, run.out / "compare" / label)
    fvd, fvd_note = fvd_kvd_rows({"teacher": run.teacher_dir, "DiffNAS subnet":
                                  run.out / "model", "uniform width shrink": run.out / "uniform"},
                                 run.cfg.frames, run.opts.fvd_videos, run.opts.i3d, run.data,
                                 device, run.out / "cache")
    o = run.opts
    lines = ["# DiffNAS report", "",
             f"Teacher `{run.teacher_dir}` ({run.cfg.name}, {run.arch.resolution}px, "
             f"{run.cfg.frames} frames). Students from {o.student_init} "
             f"(`--student-init`); supernet steps {o.supernet_steps} with {o.draws} pool "
             f"draws per block and step (every scored candidate got "
             f"{search['updates']['min']}–{search['updates']['max']} updates), per-block "
             f"grad clip {o.grad_clip}, lr {o.lr:g}; retrain steps {o.retrain_steps} (every "
             f"retrained model: extracted from the same student, same data order, same dynamic "
             f"joint loss with a {o.beta_schedule} β schedule); search pools of ≤ {o.budget} "
             f"candidates per block, choice margin {o.margin:g} paired SE"
             + (f", MACs cap {o.max_macs:,}" if o.max_macs else "") + ".", "",
             f"Val loss: mean diffusion loss on {o.score_heldout} held-out clips at fixed "
             f"timesteps and noise (lower is better), disjoint from the {o.heldout} clips the "
             f"search scored on. The teacher is scored as given, not retrained: when it was "
             f"trained briefly, the subnets' extra steps alone can put them below it, so "
             f"compare retrained models with each other (the capped comparison below).", "",
             "| model | folder | params | MACs / forward | params vs teacher | MACs vs teacher "
             "| val loss | FVD | KVD |", "|---|---|---|---|---|---|---|---|---|"]
    for name in ("teacher", "DiffNAS subnet", "uniform width shrink"):
        r, f = scores[name], (fvd or {}).get(name, {})
        lines.append(f"| {name} | `{r['folder']}` | {r['params']:,} | {r['macs']:,} | "
                     f"{r['params_frac']:.1%} | {r['macs_frac']:.1%} | {r['val_loss']:.5f} | "
                     f"{_fmt(f.get('fvd'))} | {_fmt(f.get('kvd'))} |")
    d, u = scores["DiffNAS subnet"], scores["uniform width shrink"]
    verdict = ("no worse than" if d["val_loss"] <= u["val_loss"] else "worse than")
    lines += ["", f"DiffNAS cuts {1 - d['macs_frac']:.1%} of the teacher's MACs; its val loss "
              f"is {verdict} the uniform shrink's ({d['val_loss']:.5f} vs {u['val_loss']:.5f} "
              f"at {u['macs_frac']:.1%} of the MACs).", "", fvd_note, ""]
    lines += _capped_section(run, search, scores)
    lines += ["## Chosen per block", "", "| block | candidates | updates (min) | teacher-shaped "
              "loss | chosen loss | chosen MACs vs teacher-shaped |", "|---|---|---|---|---|---|"]
    for b in search["blocks"]:
        t, c = b["candidates"][b["teacher"]], b["candidates"][b["chosen"]]
        ups = min(x.get("updates", 0) for x in b["candidates"])
        lines.append(f"| {b['name']} | {len(b['candidates'])} | {ups} | {t['eval_loss']:.5f} | "
                     f"{c['eval_loss']:.5f} | {c['macs'] / max(t['macs'], 1):.1%} |")
    _write(run.out / "scores.json", json.dumps(scores, indent=1) + "\n")
    path = run.out / "report.md"
    _write(path, "\n".join(lines) + "\n")
    return path


def _capped_section(run, search: dict, scores: dict) -> list[str]:
    """The capped comparison: per cap, DiffNAS vs the uniform shrink vs the teacher's
    architecture retrained, with paired 95 % intervals over the final held-out samples."""
    if not search.get("capped"):
        return []
    ta = scores["teacher-arch"]
    lines = ["## Capped comparison", "",
             "At the MACs of the uniform width shrink at ratio r: the DiffNAS subnet capped "
             "there, that uniform shrink, and the teacher's architecture retrained — all three "
             "extracted from the same trained student and retrained with the same steps, data "
             "order and loss. Intervals: paired 95 % (1.96 SE) over the "
             f"{len(ta['per_sample'])} final held-out samples of this one "
             "seed; they do not include training noise (seeds: benchmarks/bench_diffnas.py).", "",
             "| cap | model | MACs vs teacher | params vs teacher | val loss |",
             "|---|---|---|---|---|"]
    for c in search["capped"]:
        r = f"{c['ratio']:g}"
        for label in (f"diffnas-r{r}", f"uniform-r{r}", "teacher-arch"):
            x = scores[label]
            lines.append(f"| r = {r} | {label} | {x['macs_frac']:.1%} | {x['params_frac']:.1%} "
                         f"| {x['val_loss']:.5f} |")
    lines += ["", "| cap | DiffNAS − uniform (95 % CI) | DiffNAS − teacher arch (95 % CI) | "
              "DiffNAS vs teacher arch |", "|---|---|---|---|"]
    for c in search["capped"]:
        r = f"{c['ratio']:g}"
        dn = scores[f"diffnas-r{r}"]
        du = paired_ci(dn["per_sample"], scores[f"uniform-r{r}"]["per_sample"])
        dt = paired_ci(dn["per_sample"], ta["per_sample"])
        lines.append(f"| r = {r} | {_ci(du)} | {_ci(dt)} | "
                     f"{dn['val_loss'] / ta['val_loss'] - 1:+.2%} |")
    return lines + [""]


def _ci(c: dict) -> str:
    return f"{c['mean']:+.5f} [{c['lo']:+.5f}, {c['hi']:+.5f}]"


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
