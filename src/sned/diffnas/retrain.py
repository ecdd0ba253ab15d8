"""DiffNAS stage 3: retraining the searched subnet with the dynamic joint loss.

L = β·L_distill + (1 − β)·L_diffusion, where L_distill is the mean over stages of the L2
between the subnet's stage outputs and the teacher's (both from full forwards on the same noised
batch, recorded with :class:`~sned.models.unet.Trace`) and L_diffusion is the shared
:class:`~sned.diffusion.Objective` loss. β moves from 1 to 0 over the run (linear, or cosine).
Every step is logged as one JSON line: step, loss, beta, distill_loss, diffusion_loss.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable

import torch

from ..diffusion import DiffusionConfig, Objective
from ..models.unet import Trace, VideoUNet
from .blocks import teacher_trace, trace_distill_loss

SCHEDULES = ("linear", "cosine")


def beta_at(step: int, total: int, schedule: str = "linear") -> float:
    """β of 0-based ``step`` of ``total``: 1 at the first step, 0 at the last."""
    if schedule not in SCHEDULES:
        raise ValueError(f"beta schedule {schedule!r} is not one of {list(SCHEDULES)}")
    if total <= 1:
        return 0.0
    frac = min(1.0, step / (total - 1))
    return 1.0 - frac if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * frac))


def retrain(model: VideoUNet, teacher: VideoUNet, diffusion: DiffusionConfig,
            batches: Iterable[dict], steps: int, metrics: str | Path,
            schedule: str = "linear", lr: float = 1e-4, grad_clip: float = 1.0) -> VideoUNet:
    """Retrain the extracted ``model`` in place for ``steps`` steps; returns it in eval mode.

    ``batches`` yields ``{"inputs", "target", "t"}`` (see :func:`sned.diffnas.data
    .noised_batches`); ``metrics`` is the JSONL log (rewritten from the start).
    """
    if model.is_supernet:
        raise TypeError("retrain() takes an extracted model")
    objective = Objective(diffusion)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    metrics = Path(metrics)
    metrics.parent.mkdir(parents=True, exist_ok=True)
    model.train()
    with open(metrics, "w") as log:
        for step, batch in zip(range(steps), batches):
            beta = beta_at(step, steps, schedule)
            _, t_trace = teacher_trace(teacher, batch["inputs"])
            trace = Trace()
            pred = model(**batch["inputs"], trace=trace)
            distill = trace_distill_loss(trace, t_trace)
            diff = objective.loss(pred, batch["target"], batch["t"]).mean()
            loss = beta * distill + (1.0 - beta) * diff
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            opt.step()
            log.write(json.dumps({"step": step + 1, "loss": loss.item(), "beta": beta,
                                  "distill_loss": distill.item(),
                                  "diffusion_loss": diff.item()}) + "\n")
            log.flush()
    return model.eval()
