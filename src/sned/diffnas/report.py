"""``OUT/report.md`` and ``OUT/scores.json``: the DiffNAS subnet judged against its teacher.

Every model is scored on one shared held-out set with the same timesteps and noise (the
validation-loss proxy, :mod:`sned.search.proxy`); costs come from :mod:`sned.cost`. The primary
reference is the teacher itself: the gap ``g = L_subnet / L_teacher − 1`` with its
sample-paired interval and the verdict of :mod:`sned.diffnas.verdict` (one seed: "unresolved"
unless refuted — the benchmark adds seeds). With ``--compare`` the teacher's architecture and
the uniform width shrink, retrained the same way, are scored too. Every model also gets its
agreement with the teacher's deterministic DDIM samples (:mod:`sned.diffnas.agreement`). Video
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
from .agreement import agreement, generate
from .verdict import ratio_gap, verdict

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
            f"dimensions FVD is strongly biased upwards: compare the models with each "
            f"other at this n only, never with published numbers.")
    return scores, note


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, dict):
        return f"{v['mean']:.4g} ± {v['std']:.2g}"
    return f"{v:.4g}"


def paired_ci(a, b, pairs_per_clip: int = 1) -> dict:
    """Mean of ``a − b`` over paired samples with its 95 % normal interval (1.96 SE); with
    ``pairs_per_clip`` = k (the samples are k repeats of the same clips) the per-clip means are
    the independent units."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    m = float(d.mean())
    if pairs_per_clip > 1 and len(d) % pairs_per_clip == 0:
        d = d.reshape(pairs_per_clip, -1).mean(0)
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
    return {"mean": m, "lo": m - 1.96 * se, "hi": m + 1.96 * se, "n": int(len(d))}


def model_folder(out: Path, folder: Path) -> Path:
    """``folder``, or the folder its ``same-as.json`` names (relative to the run ``out``; the
    pipeline writes it for an arch it had retrained under another name)."""
    same = folder / "same-as.json"
    return out / json.loads(same.read_text())["folder"] if same.is_file() else folder


def _score(run, proxy, folder: Path, model=None) -> tuple[dict, object]:
    """Cost and final-held-out val loss (mean and per sample) of one model folder, scored by
    the one shared ``proxy`` (same clips, timesteps and noise for every model); the model."""
    if model is None:
        folder = model_folder(run.out, folder)
        model = load_pretrained(folder, run.opts.device)
    cost = model_cost(model.config, model.arch or run.arch)
    proxy.model = model
    per = proxy.per_sample(None)
    return {"folder": str(folder), "params": cost.params, "macs": cost.macs,
            "params_frac": cost.params / run.teacher_cost.params,
            "macs_frac": cost.macs / run.teacher_cost.macs,
            "val_loss": float(per.double().mean()), "per_sample": per.tolist()}, model


def _fvd(run, labels: dict[str, Path]) -> tuple[dict | None, str]:
    if run.codec is not None:
        frames = run.codec.pixel_frames(run.cfg.frames)
        return None, (f"FVD/KVD: not computed — the latent teacher's clips are {frames} frames "
                      f"and this I3D path generates {DEFAULT_MIN_FRAMES} (its minimum), which "
                      f"the autoencoder's temporal factor {run.codec.config.temporal_factor} "
                      f"does not divide" if frames >= DEFAULT_MIN_FRAMES else
                      f"FVD/KVD: not computed — the latent teacher's clips are {frames} "
                      f"frames, fewer than the I3D's minimum of {DEFAULT_MIN_FRAMES}.")
    unique = {}  # an arch retrained once (same-as.json) is generated once
    for label, folder in labels.items():
        unique.setdefault(Path(folder).resolve(), label)
    rows, note = fvd_kvd_rows({label: folder for folder, label in unique.items()},
                              run.cfg.frames, run.opts.fvd_videos, run.opts.i3d, run.data,
                              run.opts.device, run.out / "cache")
    if rows is None:
        return rows, note
    return {label: rows[unique[Path(folder).resolve()]] for label, folder in labels.items()}, note


def write_report(run, search: dict) -> Path:
    """Score the models on the one shared scoring set, write ``run.out / 'scores.json'`` and
    ``run.out / 'report.md'``; returns the report's path."""
    o = run.opts
    proxy = run._proxy(run.teacher, final=True)
    scores, models = {}, {}
    scores["teacher"], models["teacher"] = _score(run, proxy, run.teacher_dir, run.teacher)
    scores["diffnas"], models["diffnas"] = _score(run, proxy, run.out / "model")
    for label, _ in run.comparison(search):
        scores[label], models[label] = _score(run, proxy, run.out / "compare" / label)
    proxy.model = run.teacher
    ppc = o.pairs_per_clip
    for label, row in scores.items():
        if label != "teacher":
            row["gap_vs_teacher"] = ratio_gap(row["per_sample"], scores["teacher"]["per_sample"],
                                              ppc)
    agree, agree_note = _agreement(run, proxy, models)
    for label, a in agree.items():
        scores[label]["agreement"] = a
    d = scores["diffnas"]
    result = {"verdict": verdict([d["val_loss"] / scores["teacher"]["val_loss"] - 1],
                                 d["gap_vs_teacher"], [d["macs_frac"]], run.goal_macs,
                                 o.tolerance),
              "scoring_set": {**(proxy.source or {}), "clips": o.score_heldout,
                              "pairs_per_clip": ppc, "pairs": o.score_heldout * ppc},
              "retrain": search.get("retrain"), "models": scores}
    fvd, fvd_note = _fvd(run, {label: (run.teacher_dir if label == "teacher" else
                                       model_folder(run.out, Path(scores[label]["folder"])))
                               for label in scores})
    lines = _header(run, search) + _table(scores, fvd) + ["", _verdict_line(result["verdict"]),
                                                          "", agree_note, "", fvd_note, ""]
    lines += _references(search, scores, ppc)
    lines += _blocks(search)
    _write(run.out / "scores.json", json.dumps(result, indent=1) + "\n")
    path = run.out / "report.md"
    _write(path, "\n".join(lines) + "\n")
    return path


def _agreement(run, proxy, models: dict) -> tuple[dict, str]:
    """Per model: PSNR / SSIM of its deterministic DDIM samples against the teacher's from the
    same noise and the first scoring clips' prompts (pixel space; latent models decoded)."""
    o = run.opts
    n = min(o.agreement_samples, o.score_heldout)
    if n == 0:
        return {}, "Agreement with the teacher's samples: not computed (--agreement-samples 0)."
    emb, mask = proxy.emb[:n], proxy.mask[:n]
    videos = {label: generate(m, run.diffusion, emb, mask, o.agreement_steps, 1000, run.codec)
              for label, m in models.items()}
    out = {label: agreement(v, videos["teacher"]) for label, v in videos.items()
           if label != "teacher"}
    space = "decoded by the teacher's autoencoder, " if run.codec is not None else ""
    note = (f"Agreement with the teacher's samples (columns PSNR / SSIM): {n} deterministic "
            f"DDIM samples per model ({o.agreement_steps} steps, η = 0, no guidance), each from "
            f"the same initial noise and prompt as the teacher's, {space}compared with the "
            f"teacher's in pixel space. This measures how closely a model reproduces the "
            f"teacher's outputs; it is not FID/KID (Inception weights are not available "
            f"offline) and says nothing about diversity or fidelity to the data on its own.")
    return out, note


def _header(run, search: dict) -> list[str]:
    o, r = run.opts, search.get("retrain") or run.recipe
    h = search["heldout"]
    seen = f"{r['teacher_samples']:,}" if r["teacher_samples"] else "an unrecorded number of"
    space = "latent space (the teacher's autoencoder encodes the clips)" if run.codec else \
        "pixel space"
    return ["# DiffNAS report", "",
            f"Teacher `{run.teacher_dir}` ({run.cfg.name}, {run.arch.resolution}px"
            f"{' latent' if run.codec else ''}, {run.cfg.frames} frames). Students from "
            f"{o.student_init}; supernet {o.supernet_steps} steps × batch {o.batch_size} with "
            f"{o.draws} pool draws per block and step (every scored candidate got "
            f"{search['updates']['min']}–{search['updates']['max']} updates), lr {o.lr:g}; "
            f"search on {h['search']} clips × {h['pairs_per_clip']} (t, noise) pairs, choice "
            f"margin {o.margin:g} paired SE"
            + (f", MACs cap {o.max_macs:,}" if o.max_macs else "") + ".", "",
            f"Retraining (every retrained model: extracted from the same student, same data "
            f"order, dynamic joint loss with a {o.beta_schedule} β schedule): {r['steps']} "
            f"steps × batch {r['batch_size']} = {r['samples']:,} samples (the teacher saw "
            f"{seen} samples), "
            f"lr {r['lr']:g} {r['lr_schedule']} (floor {r['lr_floor']:g}), EMA {r['ema_decay']}; "
            f"read from: {r['teacher_source']}; per field "
            f"{', '.join(f'{k} {v}' for k, v in r['from'].items())}.", "",
            f"Val loss: mean diffusion loss in {space} on {h['score']} held-out clips × "
            f"{h['pairs_per_clip']} fixed (t, noise) pairs, disjoint from the search's clips, "
            f"the same for every model (lower is better). Gap g = L_model / L_teacher − 1 with "
            f"its sample-paired 95 % interval (per-clip units).", "",
            "| model | params | MACs / forward | params vs teacher | MACs vs teacher "
            "| val loss | gap vs teacher (95 % CI) | PSNR | SSIM | FVD | KVD |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]


def _table(scores: dict, fvd: dict | None) -> list[str]:
    lines = []
    for name, r in scores.items():
        f, g, a = (fvd or {}).get(name, {}), r.get("gap_vs_teacher"), r.get("agreement", {})
        gap = "—" if g is None else f"{g['mean']:+.2%} [{g['ci95'][0]:+.2%}, {g['ci95'][1]:+.2%}]"
        lines.append(f"| {name} | {r['params']:,} | {r['macs']:,} | {r['params_frac']:.1%} | "
                     f"{r['macs_frac']:.1%} | {r['val_loss']:.5f} | {gap} | "
                     f"{_fmt(a.get('psnr'))} | {_fmt(a.get('ssim'))} | "
                     f"{_fmt(f.get('fvd'))} | {_fmt(f.get('kvd'))} |")
    return lines


def _verdict_line(v: dict) -> str:
    return (f"**Verdict: {v['status']}** — goal: ≤ {v['cap']:.0%} of the teacher's MACs "
            f"(this subnet: {v['max_macs_frac']:.1%}) with a val loss at most "
            f"{v['tolerance']:.0%} above the teacher's (upper bound). {v['reason']}."
            + (f" Seeds the seed-level interval would take: {v['seeds_needed']}."
               if v.get("seeds_needed") else ""))


def _references(search: dict, scores: dict, ppc: int) -> list[str]:
    """The references (``--compare``): per cap, DiffNAS vs the uniform shrink and vs the
    teacher's architecture retrained the same way, with paired 95 % intervals."""
    if not search.get("capped"):
        return ["References: not retrained (`--compare` is off; the teacher itself is the "
                "primary reference above).", ""]
    ta = scores["teacher-arch"]
    lines = ["## References", "",
             "The teacher itself (primary, above); its architecture retrained the same way "
             "(`teacher-arch`); per cap, the uniform width shrink at ratio r and the DiffNAS "
             "subnet capped at its MACs — all extracted from the same trained student and "
             "retrained with the same recipe. Intervals: paired 95 % over the "
             f"{len(ta['per_sample']) // ppc} scoring clips of this one seed (training noise "
             "is not in them; seeds: benchmarks/bench_diffnas.py).", "",
             "| cap | DiffNAS − uniform (95 % CI) | DiffNAS − teacher arch (95 % CI) | "
             "DiffNAS vs teacher arch |", "|---|---|---|---|"]
    for c in search["capped"]:
        r = f"{c['ratio']:g}"
        dn = scores[f"diffnas-r{r}"]
        du = paired_ci(dn["per_sample"], scores[f"uniform-r{r}"]["per_sample"], ppc)
        dt = paired_ci(dn["per_sample"], ta["per_sample"], ppc)
        lines.append(f"| r = {r} ({c['max_macs'] / search['teacher']['macs']:.1%} MACs) | "
                     f"{_ci(du)} | {_ci(dt)} | {dn['val_loss'] / ta['val_loss'] - 1:+.2%} |")
    return lines + [""]


def _blocks(search: dict) -> list[str]:
    lines = ["## Chosen per block", "", "| block | candidates | updates (min) | teacher-shaped "
             "loss | chosen loss | chosen MACs vs teacher-shaped |", "|---|---|---|---|---|---|"]
    for b in search["blocks"]:
        t, c = b["candidates"][b["teacher"]], b["candidates"][b["chosen"]]
        ups = min(x.get("updates", 0) for x in b["candidates"])
        lines.append(f"| {b['name']} | {len(b['candidates'])} | {ups} | {t['eval_loss']:.5f} | "
                     f"{c['eval_loss']:.5f} | {c['macs'] / max(t['macs'], 1):.1%} |")
    return lines


def _ci(c: dict) -> str:
    return f"{c['mean']:+.5f} [{c['lo']:+.5f}, {c['hi']:+.5f}]"


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
