"""``sned study``: does one supernet replace training each preset alone? And the ablations.

Every method trains through the one :class:`~sned.train.trainer.Trainer` with run-config
overrides, on the same synthetic training set, and is evaluated the same way:

- ``supernet``: the recipe (issues 18 and 26) — zero-init residual outputs, the size-aware
  ``cycle`` sampler whose random draws are the served family (``train.draw=descent``),
  in-place distillation from the largest after the warm-up, per-element exact freezing, the
  plan's lr schedule, warm-up, super-position;
- ``standalone``: each preset's arch trained alone for the same steps (``train.fixed_arch``,
  same recipe), plus preset B trained for as many MACs as one ``supernet`` run;
- the recipe's ablations (issue 26): ``uniform-draws`` (the cycle's random draws per-layer
  uniform), ``no-distill``, ``previous-recipe`` (both: issue 18's default),
  ``parent-third`` / ``parent-two-thirds`` (``train.parent_fraction``: B alone for that share
  of the steps, then shrink), ``grown-from-B`` (``train.init_from`` the seed's standalone B
  run, then ``grow_fraction`` × steps of supernet training; B's compute is counted in its
  total);
- issue 18's ablations: ``supernet-uniform`` (the paper's per-layer uniform sampler),
  ``zero-init-off``, ``per-tensor-adam`` (one Adam step count per tensor), ``constant-lr``;
  and ``supernet-sandwich``, ``no-warmup``, ``plain-adamw``, ``per-resolution`` (one supernet
  per resolution, the steps split between them).

Horizons: every run trains ``steps`` (N); with ``plateau_seeds`` the supernet and the
standalone runs are trained again at 2N, each with its own full lr schedule — the plateau test
(final loss N → 2N) and the compute at which the supernet reaches each standalone loss
(interpolated in log-compute between its final losses at N and 2N) come from those.

Evaluation of each trained run (EMA weights), per preset and resolution: the validation-loss
proxy on ``val_videos × pairs_per_clip`` held-out (clip, timestep, noise) pairs per resolution —
the same pairs for every model, so gaps pair up by sample and by seed
(:func:`sned.metrics.val_loss.heldout_proxy`) — at ``curve_points`` points of training (the
learning curves), and at the end caption accuracy of sampled videos at the lowest resolution
(plus FVD/KVD with real I3D weights when clips have ≥ 9 frames). Compute is the total training
MACs the trainer records (``train_macs`` in ``metrics.jsonl``: 3 × forward MACs × clips, summed
over every arch a step ran — :func:`sned.cost.training_macs`).

Layout of ``--out DIR``: ``study.json`` (the plan), ``runs/<run>/seed<k>/`` (training run +
``eval.json``; ``runs/<run>/seed<k>-curve.json``: its learning curve), ``results.json``, ``results.md``, ``val_loss_vs_compute.png``.
A study interrupted part way resumes where it stopped when run again with the same settings.
What it trains (the plan, the methods, the runs of a seed and their order) is
:mod:`sned.app.study_plan`; running it in worker processes, :mod:`.study_jobs`; the report,
:mod:`.study_report` (and :mod:`.study_partial` for a study not finished yet).
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import torch

from ..config import ConfigError, load_config
from ..cost import training_macs
from ..space import SearchSpace
from ..store.files import STUDY, check_output, read_json, write_json
from ..train.arch_sampler import ArchSampler
from ..train.run_folder import RunFolder, RunFolderError
from ..train.trainer import Trainer
from .study_eval import Evaluator
from .study_jobs import cap_jobs, run_in_workers, study_lock, threads_per_job
from .study_partial import report_partial
from .study_plan import (RunSpec, StudyPlan, follower, grown_spec, plan_runs, plan_tasks,
                         run_config, tier)
from .study_report import aggregate, write_results

def _say(msg: str) -> None:
    print(f"[study] {msg}", flush=True)


# ----------------------------------------------------------------------------- planning
def matched_steps(run, target_macs: int) -> int:
    """Steps of the fixed-arch ``run`` whose training MACs first reach ``target_macs``: the
    arch sampler is a pure function of (seed, step), so the cost of every step is known before
    training (the same :func:`sned.cost.training_macs` the trainer records)."""
    space = SearchSpace.for_run(run.model, run.train)
    sampler = ArchSampler(space, run.train)
    spent, step = 0, 0
    while spent < target_macs:
        archs, _ = sampler(step)
        spent += training_macs(run.model, archs, run.train.batch_for(archs[0].resolution))
        step += 1
    return max(1, step)


# ----------------------------------------------------------------------------- training
def curve_steps(total: int, points: int) -> list[int]:
    """The steps a run is evaluated at along training: ``points`` evenly spaced, the last at
    ``total``."""
    return sorted({max(1, round(total * (k + 1) / points)) for k in range(points)})


def train(run, folder: Path, points: list[int] | None = None, on_point=None) -> dict:
    """Train (or finish training) one run; returns ``{"steps", "compute", "seconds"}`` from
    its ``metrics.jsonl``. With ``points``, training pauses at each of those steps (a
    checkpoint is saved there) and ``on_point(step, compute)`` evaluates it — the learning
    curve; points a resumed run has passed are not re-evaluated."""
    try:  # continue an interrupted run; else start afresh (clearing a run that never saved)
        RunFolder(folder).resume_checkpoint()
        resume = True
    except RunFolderError:
        resume = False
    trainer = Trainer(run, folder, resume=resume, overwrite=not resume, progress=False)
    t0 = time.perf_counter()
    for point in (points or [run.train.steps]):
        if point < trainer.step:
            continue
        trainer.fit(steps=point)
        if trainer.interrupted:
            raise KeyboardInterrupt
        if on_point is not None:
            on_point(point, _spent(folder)["compute"])
    return {**_spent(folder), "session_seconds": time.perf_counter() - t0}


def _spent(folder: Path) -> dict:
    rows = [json.loads(r) for r in (folder / "metrics.jsonl").read_text().splitlines()
            if r.strip()]
    return {"steps": len(rows), "compute": int(sum(r["train_macs"] for r in rows)),
            "seconds": float(sum(r.get("seconds", 0.0) for r in rows))}


# ----------------------------------------------------------------------------- the study
def run_study(out: str | Path, plan: StudyPlan = StudyPlan(), device: str = "auto",
              i3d: str | None = None, jobs: int = 1, partial: bool = False) -> Path:
    """Train and evaluate every run of ``plan``; write ``results.json`` / ``results.md``.
    ``jobs > 1`` trains that many runs at once in worker processes (:mod:`.study_jobs`); the
    results do not depend on it. ``partial``: train nothing, report the runs finished so far
    (:mod:`.study_partial`; the study may be running meanwhile).

    Returns the path of ``results.json``. Raises ConfigError (before any training) when the
    plan is invalid or ``out`` holds a study with other settings.
    """
    out = Path(out)
    cfg = load_config(plan.config, [f"frames={plan.frames}"])
    if cfg.kind != "base":
        raise ConfigError(f"study: config {cfg.name!r} is a {cfg.kind} model; the study "
                          f"trains text-to-video base configs")
    resolutions = tuple(cfg.resolutions if plan.resolutions is None else plan.resolutions)
    bad = [r for r in resolutions if r not in cfg.resolutions]
    if bad or not resolutions:
        raise ConfigError(f"study: resolutions {list(resolutions)} must be a non-empty subset "
                          f"of config {cfg.name!r} resolutions {list(cfg.resolutions)}")
    if jobs < 1:
        raise ConfigError(f"study: jobs must be >= 1 (got {jobs})")
    jobs = cap_jobs(jobs)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    _check_plan_file(out, plan, i3d)
    specs = plan_runs(plan, resolutions)
    for spec in specs:  # every run config is validated before any training
        run_config(plan, spec, 0, resolutions, device)
    if partial:
        info = _describe(Evaluator(plan, min(resolutions), out, device, i3d))
        return report_partial(out, plan, specs,
                              lambda records: study_meta(plan, device, 1, records, 0.0, info))
    with study_lock(out):  # one study (and its workers) at a time in ``out``
        return _run_all(out, plan, device, i3d, jobs, specs, resolutions)


def _run_all(out: Path, plan: StudyPlan, device: str, i3d, jobs: int, specs, resolutions):
    if not (out / "study.json").is_file():
        write_json(out / "study.json", plan.to_dict())
    t_start = time.perf_counter()
    tasks = plan_tasks(plan, specs)
    finished = _finished(out, plan, tasks)
    if finished is not None:
        _say(f"study: every run in {out} is done and {finished.name} is up to date; nothing "
             f"to do")
        return finished

    def follow_up(task, record: dict) -> list:
        """The matched-compute standalone run follows its seed's supernet run; grown-from-B
        follows its seed's standalone B run."""
        (_, seed, i), spec, _ = task
        name = follower(plan, spec.name, seed)
        if name is None:
            return []
        nxt = (_matched_spec(plan, record, seed, resolutions, device)
               if name == "standalone-B-matched" else
               grown_spec(plan, record, out.resolve() / "runs" / spec.name / f"seed{seed}"))
        return [((tier(plan, nxt, seed), seed, i + 0.5), nxt, seed)]

    make_evaluator = functools.partial(Evaluator, plan, min(resolutions), out, device, i3d)
    run_task = functools.partial(_train_and_evaluate, plan, resolutions, device, out)
    if jobs > 1:
        records, info = run_in_workers(jobs, tasks, follow_up, make_evaluator, run_task,
                                       _describe, lock_dir=out)
    else:
        evaluate = make_evaluator()
        records, queue = [], list(tasks)
        while queue:
            task = queue.pop(0)
            records.append(run_task(task[1], task[2], evaluate))
            queue = sorted(queue + follow_up(task, records[-1]), key=lambda t: t[0])
        info = _describe(evaluate)
    wall = time.perf_counter() - t_start
    main = [r for r in records if r.get("horizon", plan.steps) == plan.steps]
    meta = study_meta(plan, device, jobs, records, wall, info)
    return write_results(out, aggregate(main, plan), records, meta)


def study_meta(plan: StudyPlan, device: str, jobs: int, records: list[dict], wall: float,
               evaluate_info: tuple) -> dict:
    """``results.json``'s ``meta``."""
    fvd_note, caption_res, prompts = evaluate_info
    return {"plan": plan.to_dict(), "device": _device_name(device, jobs), "jobs": jobs,
            "horizons": plan.horizons, "seeds": seeds_run(records, plan.steps),
            "wall_seconds": wall, "fvd_note": fvd_note, "caption_resolution": caption_res,
            "caption_prompts": prompts, "eval_pairs": plan.eval_pairs,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def seeds_run(records: list[dict], steps: int) -> dict[str, dict[str, int]]:
    """``meta.seeds``: per method (``standalone-P`` per preset), the seeds trained at each
    horizon, ``{method: {"N": seeds, "2N": seeds}}``."""
    out: dict[str, dict[str, set]] = {}
    for r in records:
        if r["budget"] != "same-steps":
            continue
        name = r["run"].split("@")[0] if r["method"] == "standalone" else r["method"]
        h = "N" if r.get("horizon", steps) == steps else "2N"
        out.setdefault(name, {}).setdefault(h, set()).add(r["seed"])
    return {m: {h: len(s) for h, s in v.items()} for m, v in out.items()}


def _finished(out: Path, plan: StudyPlan, tasks) -> Path | None:
    """``results.json`` when it already holds every (run, seed) of ``tasks`` (and the
    matched-compute runs) exactly as their ``eval.json`` files do — a rerun has nothing to do;
    else None."""
    path = out / "results.json"
    if not path.is_file() or not (out / "results.md").is_file():
        return None
    runs = {(r.get("run"), r.get("seed")): r for r in read_json(path, "study results")["runs"]}
    wanted = {(spec.name, seed) for _, spec, seed in tasks}
    wanted |= {(follower(plan, name, seed), seed) for name, seed in wanted
               if follower(plan, name, seed)}
    for name, seed in wanted:
        done = out / "runs" / name / f"seed{seed}" / "eval.json"
        if (name, seed) not in runs or not done.is_file():
            return None
        record = {k: v for k, v in read_json(done, "run record").items() if k != "rows"}
        if record != runs[(name, seed)]:
            return None
    return path


def _describe(evaluate: Evaluator) -> tuple[str | None, int, int]:
    return evaluate.fvd_note, evaluate.caption_resolution, len(evaluate.prompts)


def _matched_spec(plan: StudyPlan, uniform: dict, seed: int, resolutions, device) -> RunSpec:
    spec = RunSpec("standalone", "standalone-B-matched", ["train.fixed_arch=B"], 1, ("B",),
                   budget="matched-compute", horizon=plan.steps)
    spec.steps = matched_steps(run_config(plan, spec, seed, resolutions, device),
                               uniform["compute"])
    return spec


def _train_and_evaluate(plan, resolutions, device, out: Path, spec: RunSpec, seed: int,
                        evaluate: Evaluator) -> dict:
    """Train (or resume) one (run, seed) into ``out/runs/<run>/seed<k>`` and evaluate it;
    returns its record (cached in ``eval.json``)."""
    folder = out / "runs" / spec.name / f"seed{seed}"
    done = folder / "eval.json"
    if done.is_file():
        record = read_json(done, "run record")
        if record.get("steps") == spec.steps:
            _say(f"{spec.name} seed {seed}: already done")
            return record
    _say(f"{spec.name} seed {seed}: training {spec.steps} steps")
    curve_file = folder.with_name(f"{folder.name}-curve.json")  # beside the run folder
    curve = read_json(curve_file, "learning curve") if curve_file.is_file() else []
    points = curve_steps(spec.steps, plan.curve_points)

    def on_point(step: int, compute: int) -> None:
        if step == spec.steps:
            return  # the final evaluation below is the curve's last point
        nonlocal curve
        curve = [c for c in curve if c["step"] < step] + [
            {"step": step, "compute": compute, **{k: r[k] for k in ("preset", "resolution",
                                                                     "val_loss")}}
            for r in evaluate(folder, spec.presets, final=False)]
        write_json(curve_file, curve)

    trained = train(run_config(plan, spec, seed, resolutions, device), folder, points,
                    on_point)
    t0 = time.perf_counter()
    rows = evaluate(folder, spec.presets)
    curve = [c for c in curve if c["step"] < spec.steps] + [
        {"step": spec.steps, "compute": trained["compute"],
         **{k: r[k] for k in ("preset", "resolution", "val_loss")}} for r in rows]
    write_json(curve_file, curve)
    record = {"method": spec.method, "run": spec.name, "budget": spec.budget, "seed": seed,
              "horizon": spec.horizon or plan.steps, **trained,
              "parent_compute": spec.parent_compute,
              "eval_seconds": time.perf_counter() - t0, "rows": rows, "curve": curve}
    write_json(done, record)
    _say(f"{spec.name} seed {seed}: {trained['steps']} steps, "
         f"{trained['compute'] / 1e12:.3f} TMACs, {trained['seconds']:.0f} s; val loss "
         + ", ".join(f"{r['preset']}@{r['resolution']} {r['val_loss']:.4f}" for r in rows))
    return record


def _check_plan_file(out: Path, plan: StudyPlan, i3d: str | None = None) -> None:
    """The output-folder rule (no file, no input, no folder of another kind), then: a study
    already in ``out`` must have this plan (it is resumed)."""
    config = plan.config if Path(plan.config).suffix in (".yaml", ".yml") else None
    check_output(out, STUDY, [config, i3d], reuse=True)
    f = out / "study.json"
    if f.is_file():
        old = read_json(f, "study plan")
        if old != plan.to_dict():
            diff = sorted(k for k in set(old) | set(plan.to_dict())
                          if old.get(k) != plan.to_dict().get(k))
            raise ConfigError(f"study: {out} holds a study with other settings ({', '.join(diff)}"
                              f" differ); use another --out or the same settings to resume")


def _device_name(device: str, jobs: int = 1) -> str:
    import os
    import platform

    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name()}, {jobs} job(s)"
    threads = threads_per_job(jobs) if jobs > 1 else torch.get_num_threads()
    return (f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, "
            f"torch {torch.__version__}, {jobs} job(s) × {threads} thread(s)")

