"""Training for a wall-time budget (the quickstart's stages): plan the steps, then train.

A run's lr schedule (cosine by default) and its sampling warm-up (the first third of the steps)
are laid out over ``train.steps``, so a budgeted run must reach that end for either to mean what
it says: a run planned too long stops at its budget with the lr still high and the small
subnets barely trained. :func:`step_seconds` therefore times the Trainer's own steps — a few in
the sampling warm-up (the largest subnet) and two cycles of the size-aware sampler after it —
in a temporary folder, and :func:`planned_steps` sizes the run so both phases fit.

A stage may also ask for a minimum of training in *steps* (``min_steps``): on a busy machine
the budget then buys fewer steps than the stage needs, and the stage trains its minimum anyway
(taking longer than the budget, said up front) — or, when even that would take more than
:data:`SLOW_LIMIT` × the budget, stops before training with :class:`TooSlow`, a one-line
message naming the measured step time. A run with a minimum is never cut by the clock.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch

from ..train.config import load_run_config
from ..train.trainer import Trainer

WARMUP_FRACTION = 1 / 3
"""Sampling warm-up: the first third of a budgeted run's steps."""
PROBE_UNTIMED, PROBE_WARM, PROBE_AFTER = 2, 2, 8
"""Probe steps: untimed (allocation, first-call costs), timed in the warm-up, timed after it
(two cycles of the ``cycle`` sampler: largest / random / smallest / random)."""


SLOW_LIMIT = 4.0
"""A stage whose minimum of steps is predicted to take more than this multiple of its budget
stops with :class:`TooSlow` instead of training for hours."""


class TooSlow(ValueError):
    """The machine is too busy (or slow) to train a stage's minimum of steps near its budget."""


def step_seconds(config: str, overrides: list[str], device: torch.device) -> tuple[float, float]:
    """Wall seconds of one training step of ``config`` with ``overrides`` on ``device``: (in
    the sampling warm-up, after it), medians of the Trainer's own per-step times
    (``metrics.jsonl``: data wait, step, logging; checkpoint writes excluded)."""
    warm_end = PROBE_UNTIMED + PROBE_WARM
    total = warm_end + PROBE_AFTER
    run = load_run_config(config, overrides + [
        f"train.steps={100 * total}", f"train.warmup_steps={warm_end}",
        f"train.device={device.type}", f"train.checkpoint_every={10 ** 9}", "train.log_every=1"])
    with tempfile.TemporaryDirectory(prefix="sned-probe-") as tmp:
        Trainer(run, Path(tmp) / "run", progress=False).fit(steps=total)
        rows = [json.loads(line) for line in
                (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines() if line.strip()]
    seconds = [r["seconds"] for r in rows]

    def median(xs: list[float]) -> float:
        return sorted(xs)[len(xs) // 2]

    return median(seconds[PROBE_UNTIMED:warm_end]), median(seconds[warm_end:total])


def planned_steps(seconds: float, warm_s: float, after_s: float, minimum: int = 20) -> int:
    """Steps N whose warm-up third at ``warm_s`` and the rest at ``after_s`` fill ``seconds``."""
    per_step = WARMUP_FRACTION * warm_s + (1 - WARMUP_FRACTION) * after_s
    return max(minimum, int(seconds / per_step))


def train_for(config: str, overrides: list[str], out: Path, seconds: float,
              device: torch.device, max_steps: int | None = None, progress: bool = False,
              say=print, min_steps: int = 0) -> int:
    """Train ``config`` into ``out`` for about ``seconds`` (the probe included): the steps are
    planned from :func:`step_seconds`, the warm-up is their first third. Returns the steps
    trained. A rerun starts afresh (``out`` is the caller's own folder).

    ``min_steps``: train at least this many steps whatever the clock says (``max_steps``, a
    smoke-test cap, still wins); :class:`TooSlow` when they are predicted to take more than
    :data:`SLOW_LIMIT` × ``seconds``. Without a minimum the run stops at the budget."""
    t0 = time.monotonic()
    warm_s, after_s = step_seconds(config, overrides, device)
    left = seconds - (time.monotonic() - t0)
    steps = planned_steps(left, warm_s, after_s, minimum=max(20, min_steps))
    if max_steps:
        steps = min(steps, max_steps)
    per_step = WARMUP_FRACTION * warm_s + (1 - WARMUP_FRACTION) * after_s
    predicted = steps * per_step
    if min_steps and steps >= min_steps and predicted > SLOW_LIMIT * max(seconds, 1.0):
        raise TooSlow(f"{config}: this machine measured {per_step:.2f} s per training step, so "
                      f"the {steps} steps this stage needs would take {predicted / 60:.0f} min "
                      f"(budget {seconds / 60:.1f} min); free the CPU (other jobs are "
                      f"running?) or pass a larger --minutes")
    warm = max(1, int(steps * WARMUP_FRACTION))
    run = load_run_config(config, overrides + [f"train.steps={steps}",
                                               f"train.warmup_steps={warm}",
                                               f"train.device={device.type}"])
    over = ""
    if predicted > left:
        why = ("the stage's minimum of steps" if steps == min_steps else
               "the max_steps cap" if steps == max_steps else "the 20-step floor")
        over = f", {predicted - max(left, 0):.0f} s over the budget ({why})"
    say(f"training {config}: {steps} steps in ≈ {predicted:.0f} s{over} (measured "
        f"{warm_s:.3f} s/step in the warm-up of {warm} steps, {after_s:.3f} s after it)")
    trainer = Trainer(run, out, progress=progress, overwrite=True)
    trainer.fit(max_seconds=None if min_steps else left)
    if trainer.interrupted:
        raise KeyboardInterrupt
    return trainer.step
