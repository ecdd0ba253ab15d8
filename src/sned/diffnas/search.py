"""DiffNAS stages 1 and 2: block-wise supernet training with distillation supervision, and
block-wise local search.

* :func:`train_supernet` — every step, one teacher forward on a noised training batch records
  every stage's inputs and outputs; each stage of the elastic student runs one candidate drawn
  from its space on the teacher's inputs and regresses the teacher's outputs (L2). All stages
  train in the same backward; updates are exact (masked AdamW: unsampled weights untouched).
* :func:`local_search` — per stage, candidates (all when few, else ``budget`` of them, always
  the teacher-shaped one) are scored by distillation loss on fixed held-out teacher traces;
  the chosen one is the cheapest (MACs) whose loss is ≤ the teacher-shaped candidate's.
* :func:`fit_max_macs` — with a MACs cap, further cuts go first where blocks have most slack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import torch

from ..arch import Arch, resolve
from ..models.unet import VideoUNet
from ..train.masked_adamw import ActivityTracker, MaskedAdamW
from .blocks import distill_loss, run_stage, teacher_trace
from .space import StageSpace, with_stage


def train_supernet(student: VideoUNet, teacher: VideoUNet, spaces: list[StageSpace],
                   teacher_arch: Arch, batches: Iterable[dict], steps: int, lr: float = 1e-4,
                   seed: int = 0, sandwich: bool = True,
                   log: Callable[[dict], None] | None = None) -> VideoUNet:
    """Train every stage of ``student`` to imitate ``teacher`` for ``steps`` steps.

    ``batches`` yields forward kwargs of noised training inputs (see ``data.noised_batches``).
    Each stage trains a candidate drawn uniformly from its space; with ``sandwich`` (default)
    it also trains the teacher-shaped candidate every step. The search compares every candidate
    with the teacher-shaped one, so that reference must not be the least trained point of the
    space: uniform draws alone rarely hit it, and the shared weights drift away from it (on a
    briefly trained tiny-base teacher, 60 uniform-only steps left the teacher-shaped loss 2-16×
    above the best small candidates').
    """
    rng = np.random.default_rng(seed)
    params = [p for p in student.parameters()]
    opt = MaskedAdamW(params, lr=lr, weight_decay=0.0)
    tracker = ActivityTracker(student)
    student.train()
    try:
        for step, inputs in zip(range(steps), batches):
            _, trace = teacher_trace(teacher, inputs)
            opt.zero_grad(set_to_none=True)
            tracker.reset()
            losses = []
            for space, io in zip(spaces, trace.stages):
                cands = [space.sample(rng)] + ([space.teacher] if sandwich else [])
                for cand in cands:
                    layouts = resolve(student.config, with_stage(teacher_arch, space.stage,
                                                                 cand), student.specs)
                    out = run_stage(student, space.stage, io, trace, layouts)
                    losses.append(distill_loss(out, io.outputs))
            loss = torch.stack(losses).sum()
            loss.backward()
            opt.step(regions=tracker.regions())
            if log is not None:
                log({"step": step + 1, "loss": loss.item(),
                     "losses": [x.item() for x in losses]})  # per stage: random, teacher
    finally:
        tracker.remove()
    return student.eval()


@torch.no_grad()
def evaluate(student: VideoUNet, spaces: list[StageSpace], teacher_arch: Arch, traces: list,
             candidates: list[list[tuple]]) -> list[list[float]]:
    """Held-out distillation loss of every candidate of every stage (mean over ``traces``)."""
    student.eval()
    out = []
    for s_i, (space, cands) in enumerate(zip(spaces, candidates)):
        losses = []
        for cand in cands:
            layouts = resolve(student.config, with_stage(teacher_arch, space.stage, cand),
                              student.specs)
            vals = [float(distill_loss(run_stage(student, space.stage, tr.stages[s_i], tr,
                                                 layouts), tr.stages[s_i].outputs))
                    for tr in traces]
            losses.append(float(np.mean(vals)))
        out.append(losses)
    return out


@dataclass
class StageResult:
    """Search outcome of one stage; ``candidates[teacher]`` is the teacher-shaped one."""

    name: str
    candidates: list[dict]  # {arch, params, macs, eval_loss}
    teacher: int
    chosen: int
    choices: list[tuple] = field(default_factory=list, repr=False)  # the BlockArch tuples

    def to_dict(self) -> dict:
        return {"name": self.name, "candidates": self.candidates, "teacher": self.teacher,
                "chosen": self.chosen}


def choose(candidates: list[dict], teacher: int) -> int:
    """Index of the cheapest candidate (MACs, then params, then loss) whose eval loss is ≤ the
    teacher-shaped candidate's (the teacher-shaped one always qualifies)."""
    bar = candidates[teacher]["eval_loss"]
    ok = [i for i, c in enumerate(candidates) if c["eval_loss"] <= bar]
    return min(ok, key=lambda i: (candidates[i]["macs"], candidates[i]["params"],
                                  candidates[i]["eval_loss"], i))


def local_search(student: VideoUNet, spaces: list[StageSpace], teacher_arch: Arch,
                 traces: list, budget: int, seed: int = 0) -> list[StageResult]:
    """Block-wise local search (see the module docstring)."""
    rng = np.random.default_rng(seed)
    cands = [space.candidates(budget, rng) for space in spaces]
    losses = evaluate(student, spaces, teacher_arch, traces, cands)
    results = []
    for space, cs, ls in zip(spaces, cands, losses):
        rows = []
        for c, loss in zip(cs, ls):
            cost = space.cost(c)
            rows.append({"arch": space.describe(c), "params": cost.params, "macs": cost.macs,
                         "eval_loss": loss})
        results.append(StageResult(space.stage.name, rows, 0, choose(rows, 0), cs))
    return results


def fit_max_macs(results: list[StageResult], fixed_macs: int, max_macs: int) -> None:
    """Lower the chosen candidates until the assembly's MACs ≤ ``max_macs`` (in place).

    ``fixed_macs``: MACs outside the searched stages (stem, resamplers). Each move takes, in
    some stage, the next cheaper candidate on that stage's (MACs, loss) Pareto front; the move
    made is the one costing the least slack — its loss relative to the stage's teacher-shaped
    loss, so stages with large absolute losses do not dominate — per MAC saved.
    Raises ValueError when even the cheapest candidates exceed the cap.
    """
    def total() -> int:
        return fixed_macs + sum(r.candidates[r.chosen]["macs"] for r in results)

    floor = fixed_macs + sum(min(c["macs"] for c in r.candidates) for r in results)
    if floor > max_macs:
        raise ValueError(f"--max-macs {max_macs:,} is below the cheapest evaluated assembly "
                         f"({floor:,} MACs)")
    while total() > max_macs:
        best = None
        for r in results:
            cur = r.candidates[r.chosen]
            ref = max(r.candidates[r.teacher]["eval_loss"], 1e-12)
            for i, c in enumerate(r.candidates):
                if c["macs"] >= cur["macs"]:
                    continue
                rise = max(0.0, c["eval_loss"] - cur["eval_loss"]) / ref
                score = (rise / (cur["macs"] - c["macs"]), c["eval_loss"] / ref, -c["macs"])
                if best is None or score < best[0]:
                    best = (score, r, i)
        _, r, i = best
        r.chosen = i
