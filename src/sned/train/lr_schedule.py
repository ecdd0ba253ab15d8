"""The learning-rate schedule of a run: linear warm-up, then ``constant`` or ``cosine`` to a
floor (``train.lr_schedule`` / ``train.lr_floor``).

One function of the step for every run — supernet and standalone (``train.fixed_arch``) alike —
used as a ``torch.optim.lr_scheduler.LambdaLR`` multiplier of ``train.lr``.
"""

from __future__ import annotations

import math
from typing import Callable


def lr_factor(schedule: str, steps: int, warmup: int = 0, floor: float = 0.05
              ) -> Callable[[int], float]:
    """The multiplier of the peak lr at scheduler step ``s`` (the lr of optimizer step s+1).

    ``warmup`` steps ramp linearly to 1; ``constant`` stays at 1; ``cosine`` then decays as
    ``floor + (1 − floor) · (1 + cos(π · p)) / 2`` with p going from 0 after the warm-up to 1
    at the last of ``steps`` optimizer steps (and staying at ``floor`` beyond it).
    """
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"lr schedule {schedule!r} must be 'constant' or 'cosine'")

    def factor(s: int) -> float:
        if warmup and s + 1 < warmup:
            return (s + 1) / warmup
        if schedule == "constant":
            return 1.0
        span = max(1, steps - max(warmup, 1))
        p = min(1.0, max(0.0, (s + 1 - max(warmup, 1)) / span))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * p))

    return factor
