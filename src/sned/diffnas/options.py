"""The settings of a ``sned diffnas`` run (:class:`Options`), validated on construction."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..data.config import DataConfig
from .space import DEFAULT_RATIOS
from .student import STUDENT_INITS
from .tasks import SCHEDULES


@dataclass(frozen=True)
class Options:
    """Settings of one run (recorded in ``state.json``; a resumed run must match them).

    The retrain fields left None take the teacher's recorded recipe
    (:mod:`sned.diffnas.recipe`): ``retrain_steps`` then gives as many samples as the teacher
    saw."""

    supernet_steps: int = 200
    retrain_steps: int | None = None
    budget: int = 64
    max_macs: int | None = None
    batch_size: int = 4
    search_clips: int = 128
    lr: float = 1e-3
    beta_schedule: str = "linear"
    seed: int = 0
    device: str = "cpu"
    data: dict = field(default_factory=dict)
    teacher_prob: float = 0.0
    ema_decay: float | None = None
    fvd_videos: int = 16
    i3d: str | None = None
    student_init: str = "scratch"
    draws: int = 4
    grad_clip: float = 1.0
    ratios: str = ",".join(f"{r:g}" for r in DEFAULT_RATIOS)
    margin: float = 0.0
    score_heldout: int = 64
    compare: str = ""
    pairs_per_clip: int = 4
    retrain_batch: int | None = None
    retrain_lr: float | None = None
    retrain_schedule: str | None = None
    tolerance: float = 0.01
    goal_macs: float | None = None
    agreement_samples: int = 8
    agreement_steps: int = 20

    def __post_init__(self) -> None:
        for k in ("supernet_steps", "budget", "batch_size", "search_clips", "draws",
                  "score_heldout", "pairs_per_clip", "agreement_steps"):
            if getattr(self, k) < 1:
                raise ValueError(f"diffnas: --{k.replace('_', '-')} must be >= 1 "
                                 f"(got {getattr(self, k)})")
        for k in ("retrain_steps", "retrain_batch"):
            if getattr(self, k) is not None and getattr(self, k) < 1:
                raise ValueError(f"diffnas: --{k.replace('_', '-')} must be >= 1 "
                                 f"(got {getattr(self, k)})")
        if self.agreement_samples < 0:
            raise ValueError(f"diffnas: --agreement-samples must be >= 0 (got "
                             f"{self.agreement_samples})")
        if self.max_macs is not None and self.max_macs < 1:
            raise ValueError(f"diffnas: --max-macs must be >= 1 (got {self.max_macs})")
        if self.beta_schedule not in SCHEDULES:
            raise ValueError(f"diffnas: --beta-schedule {self.beta_schedule!r} is not one of "
                             f"{list(SCHEDULES)}")
        if self.retrain_schedule not in (None, "constant", "cosine"):
            raise ValueError(f"diffnas: --retrain-schedule {self.retrain_schedule!r} is not "
                             f"one of ['constant', 'cosine'] (leave it out for the teacher's)")
        for k in ("lr", "retrain_lr"):
            v = getattr(self, k)
            if v is not None and not (v > 0 and math.isfinite(v)):
                raise ValueError(f"diffnas: --{k.replace('_', '-')} must be > 0 (got {v})")
        if not 0.0 <= self.teacher_prob <= 1.0:
            raise ValueError(f"diffnas: --teacher-prob must be in [0, 1] (got "
                             f"{self.teacher_prob})")
        if not (self.tolerance >= 0 and math.isfinite(self.tolerance)):
            raise ValueError(f"diffnas: --tolerance must be >= 0 (got {self.tolerance})")
        if self.goal_macs is not None and not 0.0 < self.goal_macs <= 1.0:
            raise ValueError(f"diffnas: --goal-macs must be in (0, 1] (got {self.goal_macs})")
        if self.fvd_videos < 0:
            raise ValueError(f"diffnas: --fvd-videos must be >= 0 (got {self.fvd_videos})")
        if self.i3d not in (None, "random") and not Path(self.i3d).expanduser().is_file():
            raise ValueError(f"diffnas: --i3d {self.i3d}: no such file (a Kinetics-400 I3D "
                             f"checkpoint, 'random', or leave it out for the installed one)")
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"diffnas: --ema-decay must be in [0, 1) (got {self.ema_decay})")
        if self.student_init not in STUDENT_INITS:
            raise ValueError(f"diffnas: --student-init {self.student_init!r} is not one of "
                             f"{list(STUDENT_INITS)}")
        if not self.grad_clip >= 0:
            raise ValueError(f"diffnas: --grad-clip must be >= 0 (got {self.grad_clip})")
        if not self.margin >= 0:
            raise ValueError(f"diffnas: --margin must be >= 0 (got {self.margin})")
        self.ratio_list()
        self.compare_list()
        self.data_config()  # validates the data section

    def data_config(self) -> DataConfig:
        unknown = sorted(set(self.data) - {f.name for f in dataclasses.fields(DataConfig)})
        if unknown:
            raise ValueError(f"diffnas: unknown --data key {unknown[0]!r}; valid keys are "
                             f"{sorted(f.name for f in dataclasses.fields(DataConfig))}")
        try:
            return DataConfig(**self.data)
        except (TypeError, ValueError) as e:
            raise ValueError(f"diffnas: --data {self.data}: {e}") from None

    def ratio_list(self) -> tuple[float, ...] | None:
        """The width ratios of the stage spaces (None: the config's whole ladder, ``full``)."""
        return None if self.ratios == "full" else _fractions("--ratios", self.ratios, True)

    def compare_list(self) -> tuple[float, ...] | None:
        """The ratios r of the capped comparison: () = no comparison (the default), None =
        ``auto`` (the uniform shrink nearest above the subnet's MACs)."""
        if self.compare == "auto":
            return None
        return _fractions("--compare", self.compare, False)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _fractions(flag: str, text: str, need_one: bool) -> tuple[float, ...]:
    """``"1,0.75,0.5"`` → (1.0, 0.75, 0.5); every value in (0, 1]."""
    try:
        vals = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        vals = None
    if vals is None or any(not 0.0 < v <= 1.0 for v in vals) or (need_one and not vals):
        raise ValueError(f"diffnas: {flag} {text!r} must be comma-separated fractions in (0, 1]"
                         + (" (or 'full')" if need_one else ""))
    return vals
