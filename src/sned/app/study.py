"""``sned study``: does one supernet replace training each preset alone? And the ablations.

Every method trains through the one :class:`~sned.train.trainer.Trainer` with run-config
overrides, on the same synthetic training set, and is evaluated the same way:

- ``supernet``: the recipe (issue 18) — zero-init residual outputs, the size-aware ``cycle``
  sampler, per-element exact freezing, the plan's lr schedule, warm-up, super-position;
- ``standalone``: each preset's arch trained alone for the same steps (``train.fixed_arch``,
  same recipe), plus preset B trained for as many MACs as one ``supernet`` run;
- one ablation row per recipe element: ``supernet-uniform`` (the paper's per-layer uniform
  draw), ``zero-init-off``, ``per-tensor-adam`` (one Adam step count per tensor),
  ``constant-lr``; and ``supernet-sandwich``, ``no-warmup``, ``plain-adamw``,
  ``per-resolution`` (one supernet per resolution, the steps split between them).

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
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch

from ..config import ConfigError, load_config
from ..cost import training_macs
from ..space import SearchSpace
from ..store.files import STUDY, check_output, read_json, write_json
from ..train.arch_sampler import ArchSampler
from ..train.config import load_run_config
from ..train.run_folder import RunFolder, RunFolderError
from ..train.trainer import Trainer
from .study_eval import Evaluator
from .study_jobs import cap_jobs, run_in_workers, study_lock, threads_per_job
from .study_report import aggregate, write_results

METHODS = ("supernet", "standalone", "supernet-uniform", "zero-init-off", "per-tensor-adam",
           "constant-lr", "supernet-sandwich", "no-warmup", "plain-adamw", "per-resolution")
DEFAULT_METHODS = METHODS[:6]
"""The main comparison and the recipe's four ablations (what the default plan runs)."""
MAIN = ("supernet", "standalone")
"""Methods trained with every seed; the others with ``ablation_seeds``."""
PRESETS = ("S", "M", "L", "B")
SUPERNET_METHODS = {"supernet": [],
                    "supernet-uniform": ["train.sampler=uniform"],
                    "zero-init-off": ["model.zero_init_residual=false"],
                    "per-tensor-adam": ["train.adam_counts=tensor"],
                    "constant-lr": ["train.lr_schedule=constant"],
                    "supernet-sandwich": ["train.sampler=sandwich"],
                    "no-warmup": ["train.warmup_steps=0"],
                    "plain-adamw": ["train.exact_freeze=false"]}


@dataclass(frozen=True)
class StudyPlan:
    """Everything that decides a study's numbers (saved as ``study.json``).

    The defaults are the plateau-horizon plan sized to about 2 hours on a 2-core machine (two
    1-thread jobs, ``sned study --jobs 2``): 2,000 steps at 16 px, 3 seeds of supernet vs
    standalone, one seed of each recipe ablation. Left out to fit: 32 px, more ablation
    seeds and the non-recipe ablations (``--resolutions 16,32``, ``--ablation-seeds``,
    ``--methods`` add them).

    Attributes:
        config: model config (built-in name or YAML path).
        steps: optimizer steps of every supernet run and of every same-steps standalone run.
        seeds: training seeds 0 … seeds-1 of the main comparison (supernet vs standalone;
            data, held-out pairs and evaluation stay fixed).
        ablation_seeds: seeds of the other methods (0 … ablation_seeds-1, at most ``seeds``).
        frames: clip length T for training and evaluation.
        resolutions: the resolutions trained and evaluated (None: the config's; a subset
            such as ``(16,)`` is the single-resolution study).
        batch: clips per step at each resolution.
        lr / lr_warmup_steps / lr_schedule / lr_floor / ema_decay: optimisation, the same for
            every run (EMA weights are evaluated).
        warmup_fraction: sampling warm-up length as a fraction of each supernet run's steps.
        num_videos: synthetic training set size.
        val_videos / pairs_per_clip: held-out clips per resolution and (timestep, noise)
            draws per clip: ``val_videos × pairs_per_clip`` evaluation pairs per resolution.
        curve_points: evaluations along each run (at steps/k, 2·steps/k, …, steps).
        caption_prompts / caption_steps / cfg: sampled videos for caption accuracy (DDIM).
        methods: the methods to run (a subset of :data:`METHODS`).
    """

    config: str = "tiny-base"
    steps: int = 2000
    seeds: int = 3
    ablation_seeds: int = 1
    frames: int = 4
    resolutions: tuple[int, ...] | None = (16,)
    batch: dict[int, int] = field(default_factory=lambda: {16: 4, 32: 1})
    lr: float = 1e-3
    lr_warmup_steps: int = 10
    lr_schedule: str = "cosine"
    lr_floor: float = 0.05
    ema_decay: float = 0.95
    warmup_fraction: float = 1 / 3
    num_videos: int = 2048
    val_videos: int = 64
    pairs_per_clip: int = 4
    curve_points: int = 8
    caption_prompts: int = 8
    caption_steps: int = 6
    cfg: float = 3.0
    methods: tuple[str, ...] = DEFAULT_METHODS

    def __post_init__(self) -> None:
        for key in ("steps", "seeds", "ablation_seeds", "frames", "val_videos",
                    "pairs_per_clip", "curve_points", "caption_prompts", "caption_steps",
                    "num_videos"):
            if getattr(self, key) < 1:
                raise ConfigError(f"study: {key} must be >= 1 (got {getattr(self, key)})")
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise ConfigError(f"study: unknown method {bad[0] if bad else None!r}; methods are "
                              f"{list(METHODS)}")
        if not 0 <= self.warmup_fraction < 1:
            raise ConfigError(f"study: warmup_fraction must be in [0, 1) "
                              f"(got {self.warmup_fraction})")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ConfigError(f"study: lr_schedule must be constant or cosine "
                              f"(got {self.lr_schedule!r})")

    @property
    def eval_pairs(self) -> int:
        """(clip, timestep, noise) evaluation pairs per resolution."""
        return self.val_videos * self.pairs_per_clip

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["batch"] = {str(k): v for k, v in self.batch.items()}
        d["methods"] = list(self.methods)
        d["resolutions"] = None if self.resolutions is None else list(self.resolutions)
        return d


QUICK = StudyPlan(steps=20, seeds=1, resolutions=None, val_videos=16, pairs_per_clip=2,
                  curve_points=2)
"""``--quick``: indicative numbers in a few minutes (both of tiny-base's resolutions)."""


@dataclass
class RunSpec:
    """One training run of a method (per seed)."""

    method: str
    name: str                 # folder under runs/
    overrides: list[str]
    steps: int
    presets: tuple[str, ...]  # presets this run is evaluated at
    budget: str = "same-steps"
    resolutions: tuple[int, ...] | None = None  # None: the config's


def _say(msg: str) -> None:
    print(f"[study] {msg}", flush=True)


# ----------------------------------------------------------------------------- planning
def base_overrides(plan: StudyPlan, resolutions: tuple[int, ...], device: str) -> list[str]:
    batch = {r: plan.batch.get(r, min(plan.batch.values())) for r in resolutions}
    return [f"model.frames={plan.frames}", f"model.resolutions={list(resolutions)}",
            f"data.num_videos={plan.num_videos}", f"train.lr={plan.lr}",
            f"train.lr_warmup_steps={plan.lr_warmup_steps}", f"train.ema_decay={plan.ema_decay}",
            f"train.lr_schedule={plan.lr_schedule}", f"train.lr_floor={plan.lr_floor}",
            f"train.batch_size={max(batch.values())}",
            f"train.batch_size_per_resolution={json.dumps(batch)}",
            f"train.checkpoint_every={10 ** 9}", "train.keep_last=1", f"train.device={device}"]


def plan_runs(plan: StudyPlan, resolutions: tuple[int, ...]) -> list[RunSpec]:
    """The same-steps runs of one seed, ``supernet`` first (the matched-compute standalone
    run is added after it, see :func:`matched_steps`)."""
    warm = f"train.warmup_steps={int(plan.steps * plan.warmup_fraction)}"
    runs = [RunSpec("supernet", "supernet", [warm], plan.steps, PRESETS)]
    for m in plan.methods:
        if m in SUPERNET_METHODS and m != "supernet":
            runs.append(RunSpec(m, m, [warm] + SUPERNET_METHODS[m], plan.steps, PRESETS))
        elif m == "standalone":
            runs += [RunSpec(m, f"standalone-{p}", [f"train.fixed_arch={p}"], plan.steps, (p,))
                     for p in PRESETS]
        elif m == "per-resolution":
            share = max(1, plan.steps // len(resolutions))
            runs += [RunSpec(m, f"per-resolution-{r}",
                             [f"train.warmup_steps={int(share * plan.warmup_fraction)}"], share,
                             PRESETS, resolutions=(r,)) for r in resolutions]
    return runs


def seeds_of(plan: StudyPlan, method: str) -> int:
    """How many seeds ``method`` is trained with."""
    return plan.seeds if method in MAIN else min(plan.seeds, plan.ablation_seeds)


def run_config(plan: StudyPlan, spec: RunSpec, seed: int, resolutions: tuple[int, ...],
               device: str, steps: int | None = None, extra: list[str] = ()):
    """The run config of ``spec`` at ``seed``; ``extra`` overrides come last (benchmarks)."""
    res = spec.resolutions or resolutions
    return load_run_config(plan.config, base_overrides(plan, res, device) + spec.overrides + [
        f"train.seed={seed}", f"train.steps={spec.steps if steps is None else steps}",
        *extra])


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
              i3d: str | None = None, jobs: int = 1) -> Path:
    """Train and evaluate every run of ``plan``; write ``results.json`` / ``results.md``.
    ``jobs > 1`` trains that many runs at once in worker processes (:mod:`.study_jobs`); the
    results do not depend on it.

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
    with study_lock(out):  # one study (and its workers) at a time in ``out``
        return _run_all(out, plan, device, i3d, jobs, specs, resolutions)


def _run_all(out: Path, plan: StudyPlan, device: str, i3d, jobs: int, specs, resolutions):
    if not (out / "study.json").is_file():
        write_json(out / "study.json", plan.to_dict())
    t_start = time.perf_counter()
    tasks = [((seed, i), spec, seed) for seed in range(plan.seeds)
             for i, spec in enumerate(specs) if seed < seeds_of(plan, spec.method)]
    finished = _finished(out, plan, tasks)
    if finished is not None:
        _say(f"study: every run in {out} is done and {finished.name} is up to date; nothing "
             f"to do")
        return finished

    def follow_up(task, record: dict) -> list:
        """The matched-compute standalone run follows its seed's supernet run."""
        (seed, i), spec, _ = task
        if spec.name != "supernet" or "standalone" not in plan.methods:
            return []
        return [((seed, i + 0.5), _matched_spec(plan, record, seed, resolutions, device), seed)]

    make_evaluator = partial(Evaluator, plan, min(resolutions), out, device, i3d)
    run_task = partial(_train_and_evaluate, plan, resolutions, device, out)
    if jobs > 1:
        records, (fvd_note, caption_res, prompts) = run_in_workers(
            jobs, tasks, follow_up, make_evaluator, run_task, _describe, lock_dir=out)
    else:
        evaluate = make_evaluator()
        records, queue = [], list(tasks)
        while queue:
            task = queue.pop(0)
            records.append(run_task(task[1], task[2], evaluate))
            queue[:0] = follow_up(task, records[-1])
        fvd_note, caption_res, prompts = _describe(evaluate)
    wall = time.perf_counter() - t_start
    rows = aggregate(records, plan)
    meta = {"plan": plan.to_dict(), "device": _device_name(device, jobs), "jobs": jobs,
            "wall_seconds": wall, "fvd_note": fvd_note, "caption_resolution": caption_res,
            "caption_prompts": prompts, "eval_pairs": plan.eval_pairs,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    return write_results(out, rows, records, meta)


def _finished(out: Path, plan: StudyPlan, tasks) -> Path | None:
    """``results.json`` when it already holds every (run, seed) of ``tasks`` (and the
    matched-compute runs) exactly as their ``eval.json`` files do — a rerun has nothing to do;
    else None."""
    path = out / "results.json"
    if not path.is_file() or not (out / "results.md").is_file():
        return None
    runs = {(r.get("run"), r.get("seed")): r for r in read_json(path, "study results")["runs"]}
    wanted = {(spec.name, seed) for _, spec, seed in tasks}
    if "standalone" in plan.methods:
        wanted |= {("standalone-B-matched", seed) for (name, seed) in wanted
                   if name == "supernet"}
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
                   budget="matched-compute")
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
              **trained, "eval_seconds": time.perf_counter() - t0, "rows": rows,
              "curve": curve}
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

