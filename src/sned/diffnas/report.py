"""``OUT/report.md``: teacher vs DiffNAS subnet vs uniform width shrink at the same MACs.

Every model is scored on the same held-out set with the same timesteps and noise (the
validation-loss proxy, :mod:`sned.metrics.val_loss`); costs come from :mod:`sned.cost`. Video
teachers also get FVD/KVD (:func:`fvd_kvd_rows`): each model generates ``fvd_videos`` clips of
9 frames (I3D's minimum) through :func:`sned.evaluation.evaluate_preset`, prompted with the
held-out real clips' captions and compared with those clips by the Kinetics-400 I3D
(:func:`sned.metrics.i3d.load_detector`). Without I3D weights the report says so and the run
goes on; for image teachers (1 frame) FVD does not apply.
"""

from __future__ import annotations

import warnings
from pathlib import Path

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


def write_report(run, search: dict) -> Path:
    """Score the three models and write ``run.out / 'report.md'``; returns its path."""
    device = run.opts.device
    models = {"teacher": (run.teacher, str(run.teacher_dir)),
              "DiffNAS subnet": (load_pretrained(run.out / "model", device), "model/"),
              "uniform width shrink": (load_pretrained(run.out / "uniform", device),
                                       "uniform/")}
    fvd, fvd_note = fvd_kvd_rows({"teacher": run.teacher_dir, "DiffNAS subnet":
                                  run.out / "model", "uniform width shrink": run.out / "uniform"},
                                 run.cfg.frames, run.opts.fvd_videos, run.opts.i3d, run.data,
                                 device, run.out / "cache")
    rows = []
    for name, (model, folder) in models.items():
        cost = model_cost(model.config, model.arch or run.arch)
        loss = run._proxy(model)(None)
        rows.append((name, folder, cost.params, cost.macs, loss))
    t_params, t_macs = rows[0][2], rows[0][3]
    lines = ["# DiffNAS report", "",
             f"Teacher `{run.teacher_dir}` ({run.cfg.name}, {run.arch.resolution}px, "
             f"{run.cfg.frames} frames). Supernet steps {run.opts.supernet_steps}, retrain "
             f"steps {run.opts.retrain_steps} (both subnets, same data order, same dynamic "
             f"joint loss with a {run.opts.beta_schedule} β schedule), search budget "
             f"{run.opts.budget} per block"
             + (f", MACs cap {run.opts.max_macs:,}" if run.opts.max_macs else "") + ".", "",
             f"Val loss: mean diffusion loss on {run.opts.heldout} held-out clips at fixed "
             f"timesteps and noise (lower is better). The teacher is scored as given, not "
             f"retrained: when it was trained briefly, the subnets' extra steps alone can put "
             f"them below it, so compare the two subnets with each other.", "",
             "| model | folder | params | MACs / forward | params vs teacher | MACs vs teacher "
             "| val loss | FVD | KVD |", "|---|---|---|---|---|---|---|---|---|"]
    for name, folder, p, m, loss in rows:
        f = (fvd or {}).get(name, {})
        lines.append(f"| {name} | `{folder}` | {p:,} | {m:,} | {p / t_params:.1%} | "
                     f"{m / t_macs:.1%} | {loss:.5f} | {_fmt(f.get('fvd'))} | "
                     f"{_fmt(f.get('kvd'))} |")
    d, u = rows[1], rows[2]
    verdict = ("no worse than" if d[4] <= u[4] else "worse than")
    lines += ["", f"DiffNAS cuts {1 - d[3] / t_macs:.1%} of the teacher's MACs; its val loss is "
              f"{verdict} the uniform shrink's ({d[4]:.5f} vs {u[4]:.5f} at "
              f"{u[3] / t_macs:.1%} of the MACs).", "", fvd_note, "",
              "## Chosen per block", "", "| block | candidates | teacher-shaped loss | chosen "
              "loss | chosen MACs vs teacher-shaped |", "|---|---|---|---|---|"]
    for b in search["blocks"]:
        t, c = b["candidates"][b["teacher"]], b["candidates"][b["chosen"]]
        lines.append(f"| {b['name']} | {len(b['candidates'])} | {t['eval_loss']:.5f} | "
                     f"{c['eval_loss']:.5f} | {c['macs'] / max(t['macs'], 1):.1%} |")
    path = run.out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
