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
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from dataclasses import dataclass, field
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

METHODS = ("supernet", "standalone", "uniform-draws", "no-distill", "previous-recipe",
           "parent-third", "parent-two-thirds", "grown-from-B", "supernet-uniform",
           "zero-init-off", "per-tensor-adam", "constant-lr", "supernet-sandwich", "no-warmup",
           "plain-adamw", "per-resolution")
DEFAULT_METHODS = METHODS[:8]
"""The main comparison and issue 26's ablations (what the default plan runs)."""
MAIN = ("supernet", "standalone")
"""Methods trained with every seed; the others with ``ablation_seeds``."""
PRESETS = ("S", "M", "L", "B")
PARENT = {"parent-third": 1 / 3, "parent-two-thirds": 2 / 3}
"""Parent-phase ablations: ``train.parent_fraction``."""
SUPERNET_METHODS = {"supernet": [],
                    "uniform-draws": ["train.draw=uniform"],
                    "no-distill": ["train.inplace_distill=false"],
                    "previous-recipe": ["train.draw=uniform", "train.inplace_distill=false"],
                    "parent-third": [f"train.parent_fraction={PARENT['parent-third']:.6f}"],
                    "parent-two-thirds": [
                        f"train.parent_fraction={PARENT['parent-two-thirds']:.6f}"],
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

    The defaults: 2,000 steps at 16 px, 3 seeds of supernet vs standalone, one seed of each
    issue-26 ablation, no second horizon (about 2 hours on a 2-core machine with
    ``--jobs 2``). The decisive plan (``docs/training.md``) adds ``--seeds 5
    --plateau-seeds``. Left out to fit: 32 px, more ablation seeds and the older ablations
    (``--resolutions 16,32``, ``--ablation-seeds``, ``--methods`` add them).

    Attributes:
        config: model config (built-in name or YAML path).
        steps: optimizer steps of every supernet run and of every same-steps standalone run.
        seeds: training seeds 0 … seeds-1 of the main comparison (supernet vs standalone;
            data, held-out pairs and evaluation stay fixed).
        ablation_seeds: seeds of the other methods (0 … ablation_seeds-1, at most ``seeds``).
        frames: clip length T for training and evaluation.
        max_objects: objects per synthetic clip (1 to that many; training and held-out
            sets alike) — with ``frames``, the study's task: more objects and frames separate
            the presets more (standalone B vs S).
        plateau_seeds: seeds (0 …) of the second horizon 2N: the supernet and standalone S and
            B trained again for 2 × ``steps`` (their own full schedules); 0 = one horizon.
        plateau_seeds_ml: seeds of standalone M and L at 2N (at most ``plateau_seeds``).
        grow_fraction: ``grown-from-B``'s supernet steps as a fraction of ``steps``.
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
    max_objects: int = 1
    plateau_seeds: int = 0
    plateau_seeds_ml: int = 1
    grow_fraction: float = 1 / 3
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
        for key in ("plateau_seeds", "plateau_seeds_ml"):
            if getattr(self, key) < 0:
                raise ConfigError(f"study: {key} must be >= 0 (got {getattr(self, key)})")
        if not 1 <= self.max_objects <= 8:
            raise ConfigError(f"study: max_objects must be in [1, 8] (got {self.max_objects})")
        if not 0 < self.grow_fraction <= 1:
            raise ConfigError(f"study: grow_fraction must be in (0, 1] "
                              f"(got {self.grow_fraction})")
        if not 0 <= self.warmup_fraction < 1:
            raise ConfigError(f"study: warmup_fraction must be in [0, 1) "
                              f"(got {self.warmup_fraction})")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ConfigError(f"study: lr_schedule must be constant or cosine "
                              f"(got {self.lr_schedule!r})")

    @property
    def horizons(self) -> list[int]:
        """The horizons trained: N (``steps``) and, with ``plateau_seeds``, 2N."""
        return [self.steps] + ([2 * self.steps] if self.plateau_seeds else [])

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
    horizon: int = 0          # the plan horizon (N or 2N) this run belongs to; 0: ``steps``
    seeds: int | None = None  # None: seeds_of(plan, method)
    init_from: str | None = None  # train.init_from (grown-from-B: the seed's standalone B)
    parent_compute: int = 0   # training MACs of the parent it starts from (counted in its total)


def _say(msg: str) -> None:
    print(f"[study] {msg}", flush=True)


# ----------------------------------------------------------------------------- planning
def base_overrides(plan: StudyPlan, resolutions: tuple[int, ...], device: str) -> list[str]:
    batch = {r: plan.batch.get(r, min(plan.batch.values())) for r in resolutions}
    return [f"model.frames={plan.frames}", f"model.resolutions={list(resolutions)}",
            f"data.num_videos={plan.num_videos}", f"data.max_objects={plan.max_objects}",
            f"train.lr={plan.lr}",
            f"train.lr_warmup_steps={plan.lr_warmup_steps}", f"train.ema_decay={plan.ema_decay}",
            f"train.lr_schedule={plan.lr_schedule}", f"train.lr_floor={plan.lr_floor}",
            f"train.batch_size={max(batch.values())}",
            f"train.batch_size_per_resolution={json.dumps(batch)}",
            f"train.checkpoint_every={10 ** 9}", "train.keep_last=1", f"train.device={device}"]


def _warm(plan: StudyPlan, steps: int, parent: float = 0.0) -> str:
    """The sampling warm-up of a supernet run of ``steps`` (after its parent phase)."""
    return f"train.warmup_steps={int((steps - round(parent * steps)) * plan.warmup_fraction)}"


def plan_runs(plan: StudyPlan, resolutions: tuple[int, ...]) -> list[RunSpec]:
    """The runs of a seed: the same-steps runs of horizon N, ``supernet`` first (the
    matched-compute standalone run is added after it, see :func:`matched_steps`;
    ``grown-from-B`` after standalone B, :func:`grown_spec`), then those of horizon 2N."""
    n = plan.steps
    runs = [RunSpec("supernet", "supernet", [_warm(plan, n)], n, PRESETS, horizon=n)]
    for m in plan.methods:
        if m in SUPERNET_METHODS and m != "supernet":
            runs.append(RunSpec(m, m, [_warm(plan, n, PARENT.get(m, 0.0))] + SUPERNET_METHODS[m],
                                n, PRESETS, horizon=n))
        elif m == "standalone":
            runs += [RunSpec(m, f"standalone-{p}", [f"train.fixed_arch={p}"], n, (p,),
                             horizon=n) for p in PRESETS]
        elif m == "per-resolution":
            share = max(1, plan.steps // len(resolutions))
            runs += [RunSpec(m, f"per-resolution-{r}",
                             [f"train.warmup_steps={int(share * plan.warmup_fraction)}"], share,
                             PRESETS, resolutions=(r,), horizon=n) for r in resolutions]
    if plan.plateau_seeds:
        long = 2 * n
        runs.append(RunSpec("supernet", f"supernet@{long}", [_warm(plan, long)], long, PRESETS,
                            horizon=long, seeds=min(plan.seeds, plan.plateau_seeds)))
        if "standalone" in plan.methods:
            runs += [RunSpec("standalone", f"standalone-{p}@{long}", [f"train.fixed_arch={p}"],
                             long, (p,), horizon=long,
                             seeds=min(plan.seeds, plan.plateau_seeds if p in "SB" else
                                       min(plan.plateau_seeds, plan.plateau_seeds_ml)))
                     for p in PRESETS]
    return runs


def grown_spec(plan: StudyPlan, parent: dict, folder: Path) -> RunSpec:
    """``grown-from-B``: the supernet started from the seed's standalone B run (``folder``,
    its record ``parent``), trained ``grow_fraction`` × steps; B's compute is its parent's."""
    steps = max(1, round(plan.steps * plan.grow_fraction))
    return RunSpec("grown-from-B", "grown-from-B", [_warm(plan, steps)], steps, PRESETS,
                   horizon=plan.steps, init_from=str(folder),
                   parent_compute=int(parent["compute"]))


def tier(plan: StudyPlan, spec: RunSpec) -> int:
    """The order runs start in, so that an interrupted study has its verdict's runs first:
    0 the supernet and standalone runs of horizon N (every seed), 1 the ablations, 2 the
    runs of horizon 2N."""
    if (spec.horizon or plan.steps) != plan.steps:
        return 2
    return 0 if spec.method in MAIN else 1


def seeds_of(plan: StudyPlan, method: str) -> int:
    """How many seeds ``method`` is trained with (at horizon N)."""
    return plan.seeds if method in MAIN else min(plan.seeds, plan.ablation_seeds)


def seeds_of_spec(plan: StudyPlan, spec: RunSpec) -> int:
    return seeds_of(plan, spec.method) if spec.seeds is None else spec.seeds


def run_config(plan: StudyPlan, spec: RunSpec, seed: int, resolutions: tuple[int, ...],
               device: str, steps: int | None = None, extra: list[str] = ()):
    """The run config of ``spec`` at ``seed``; ``extra`` overrides come last (benchmarks)."""
    res = spec.resolutions or resolutions
    run = load_run_config(plan.config, base_overrides(plan, res, device) + spec.overrides + [
        f"train.seed={seed}", f"train.steps={spec.steps if steps is None else steps}",
        *extra])
    if spec.init_from is not None:  # a path is not a YAML value: set after parsing
        run = dataclasses.replace(run, train=dataclasses.replace(run.train,
                                                                 init_from=spec.init_from))
    return run


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
        from .study_partial import report_partial

        return report_partial(out, plan, device, specs, functools.partial(
            Evaluator, plan, min(resolutions), out, device, i3d))
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
        if spec.name == "supernet" and "standalone" in plan.methods:
            matched = _matched_spec(plan, record, seed, resolutions, device)
            return [((tier(plan, matched), seed, i + 0.5), matched, seed)]
        if (spec.name == "standalone-B" and "grown-from-B" in plan.methods
                and seed < seeds_of(plan, "grown-from-B")):
            folder = out.resolve() / "runs" / spec.name / f"seed{seed}"
            grown = grown_spec(plan, record, folder)
            return [((tier(plan, grown), seed, i + 0.5), grown, seed)]
        return []

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


def plan_tasks(plan: StudyPlan, specs: list[RunSpec]) -> list[tuple[tuple, RunSpec, int]]:
    """Every (order key, spec, seed) of the plan in the order they start (:func:`tier`);
    the follow-ups (matched compute, grown-from-B) join when their parent run finishes."""
    return sorted(((tier(plan, spec), seed, i), spec, seed) for seed in range(plan.seeds)
                  for i, spec in enumerate(specs) if seed < seeds_of_spec(plan, spec))


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
    if "standalone" in plan.methods:
        wanted |= {("standalone-B-matched", seed) for (name, seed) in wanted
                   if name == "supernet"}
    if "grown-from-B" in plan.methods:
        wanted |= {("grown-from-B", seed) for (name, seed) in wanted
                   if name == "standalone-B" and seed < seeds_of(plan, "grown-from-B")}
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

