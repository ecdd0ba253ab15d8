"""What a ``sned study`` trains: its plan (:class:`StudyPlan`, saved as ``study.json``), the
methods and their run-config overrides, the runs of a seed (:class:`RunSpec`,
:func:`plan_runs`) and the order they start in (:func:`tier`, :func:`plan_tasks`).
:mod:`sned.app.study` runs them."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..config import ConfigError
from ..train.config import load_run_config

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


def tier(plan: StudyPlan, spec: RunSpec, seed: int) -> int:
    """The order runs start in, so that a study stopped part way has the most to say: 0 the
    supernet and standalone runs of seed 0, 1 the ablations (seed 0: every method has one
    run), 2 the further seeds of the supernet and standalone runs (the intervals), 3 the runs
    of horizon 2N (the plateau test)."""
    if (spec.horizon or plan.steps) != plan.steps:
        return 3
    if spec.method not in MAIN:
        return 1
    return 0 if seed == 0 else 2


def follower(plan: StudyPlan, name: str, seed: int) -> str | None:
    """The run that follows run ``name`` at ``seed`` once it has finished (it needs its
    record), or None: the matched-compute standalone B follows the supernet run (needs its
    compute), ``grown-from-B`` the standalone B run (starts from it)."""
    if name == "supernet" and "standalone" in plan.methods:
        return "standalone-B-matched"
    if (name == "standalone-B" and "grown-from-B" in plan.methods
            and seed < seeds_of(plan, "grown-from-B")):
        return "grown-from-B"
    return None


def seeds_of(plan: StudyPlan, method: str) -> int:
    """How many seeds ``method`` is trained with (at horizon N)."""
    return plan.seeds if method in MAIN else min(plan.seeds, plan.ablation_seeds)


def seeds_of_spec(plan: StudyPlan, spec: RunSpec) -> int:
    return seeds_of(plan, spec.method) if spec.seeds is None else spec.seeds


def plan_tasks(plan: StudyPlan, specs: list[RunSpec]) -> list[tuple[tuple, RunSpec, int]]:
    """Every (order key, spec, seed) of the plan in the order they start (:func:`tier`);
    the follow-ups (matched compute, grown-from-B) join when their parent run finishes."""
    return sorted(((tier(plan, spec, seed), seed, i), spec, seed) for seed in range(plan.seeds)
                  for i, spec in enumerate(specs) if seed < seeds_of_spec(plan, spec))


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
