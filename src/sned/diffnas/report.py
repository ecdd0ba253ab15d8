"""``OUT/report.md``: teacher vs DiffNAS subnet vs uniform width shrink at the same MACs.

Every model is scored on the same held-out set with the same timesteps and noise (the
validation-loss proxy, :mod:`sned.metrics.val_loss`); costs come from :mod:`sned.cost`.
FVD/KVD need real Kinetics I3D weights (:func:`sned.metrics.load_i3d`): without them the
report says so instead of printing numbers from a random detector.
"""

from __future__ import annotations

from pathlib import Path

from ..cost import model_cost
from ..extract import load_pretrained
from ..metrics.i3d import I3DWeightsMissing, load_i3d


def _fvd_note(frames: int) -> str:
    try:
        load_i3d()
    except I3DWeightsMissing:
        return ("FVD/KVD: not computed — no real Kinetics-400 I3D weights are available "
                "(`sned.metrics.load_i3d` found none); random-detector numbers are not "
                "reported.")
    except Exception as e:  # a broken weights file: say so, do not guess
        return f"FVD/KVD: not computed — loading the I3D weights failed: {e}"
    if frames < 9:
        return (f"FVD/KVD: not computed — clips of {frames} frames are too short for a "
                f"meaningful I3D feature (use a teacher with >= 9 frames, then `sned evaluate` "
                f"on the model folders).")
    return ("FVD/KVD: real I3D weights are available; run `sned evaluate` on `model/`, "
            "`uniform/` and the teacher folder at equal N (not run here: it needs hundreds of "
            "sampled clips).")


def write_report(run, search: dict) -> Path:
    """Score the three models and write ``run.out / 'report.md'``; returns its path."""
    device = run.opts.device
    models = {"teacher": (run.teacher, str(run.teacher_dir)),
              "DiffNAS subnet": (load_pretrained(run.out / "model", device), "model/"),
              "uniform width shrink": (load_pretrained(run.out / "uniform", device),
                                       "uniform/")}
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
             "| val loss |", "|---|---|---|---|---|---|---|"]
    for name, folder, p, m, loss in rows:
        lines.append(f"| {name} | `{folder}` | {p:,} | {m:,} | {p / t_params:.1%} | "
                     f"{m / t_macs:.1%} | {loss:.5f} |")
    d, u = rows[1], rows[2]
    verdict = ("no worse than" if d[4] <= u[4] else "worse than")
    lines += ["", f"DiffNAS cuts {1 - d[3] / t_macs:.1%} of the teacher's MACs; its val loss is "
              f"{verdict} the uniform shrink's ({d[4]:.5f} vs {u[4]:.5f} at "
              f"{u[3] / t_macs:.1%} of the MACs).", "", _fvd_note(run.cfg.frames), "",
              "## Chosen per block", "", "| block | candidates | teacher-shaped loss | chosen "
              "loss | chosen MACs vs teacher-shaped |", "|---|---|---|---|---|"]
    for b in search["blocks"]:
        t, c = b["candidates"][b["teacher"]], b["candidates"][b["chosen"]]
        lines.append(f"| {b['name']} | {len(b['candidates'])} | {t['eval_loss']:.5f} | "
                     f"{c['eval_loss']:.5f} | {c['macs'] / max(t['macs'], 1):.1%} |")
    path = run.out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
