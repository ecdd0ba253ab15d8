"""DiffNAS stage 2: block-wise local search (stage 1, the block-wise supernet training, is
:class:`sned.diffnas.tasks.BlockDistillTask`).

* :func:`local_search` — per stage, the candidates of its fixed pool (the ones stage 1 trained;
  the teacher-shaped one first) are scored by distillation loss on fixed held-out teacher
  traces; the chosen one is the cheapest (MACs) whose loss is ≤ the teacher-shaped
  candidate's plus ``margin`` paired standard errors of the difference (0: the paper's rule).
* :func:`fit_max_macs` — with a MACs cap, further cuts go first where blocks have most slack.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..arch import Arch, resolve
from ..models.unet import VideoUNet
from .blocks import distill_loss, run_stage
from .space import StageSpace, with_stage


def per_sample_loss(outputs: list, targets: list) -> np.ndarray:
    """Per-row (N = B·T) squared error of a stage's outputs, averaged like
    :func:`~sned.diffnas.blocks.distill_loss` (its mean over rows is that loss)."""
    rows = [((o.float() - t.float()) ** 2).flatten(1).mean(1) for o, t in zip(outputs, targets)]
    return torch.stack(rows).mean(0).cpu().numpy()


@torch.no_grad()
def evaluate(student: VideoUNet, spaces: list[StageSpace], teacher_arch: Arch, traces: list,
             candidates: list[list[tuple]]) -> list[list[np.ndarray]]:
    """Held-out distillation loss of every candidate of every stage, per held-out row (N,)
    (the rows of all ``traces`` concatenated; the same rows for every candidate: paired)."""
    student.eval()
    out = []
    for s_i, (space, cands) in enumerate(zip(spaces, candidates)):
        losses = []
        for cand in cands:
            layouts = resolve(student.config, with_stage(teacher_arch, space.stage, cand),
                              student.specs)
            losses.append(np.concatenate([
                per_sample_loss(run_stage(student, space.stage, tr.stages[s_i], tr, layouts),
                                tr.stages[s_i].outputs) for tr in traces]))
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


def choose(candidates: list[dict], teacher: int, margin: float = 0.0) -> int:
    """Index of the cheapest candidate (MACs, then params, then loss) whose eval loss is ≤ the
    teacher-shaped candidate's plus ``margin`` × its ``paired_se`` (the standard error of the
    paired difference to the teacher-shaped candidate; margin 0 = the paper's rule). The
    teacher-shaped one always qualifies."""
    bar = candidates[teacher]["eval_loss"]
    ok = [i for i, c in enumerate(candidates)
          if c["eval_loss"] <= bar + (margin * c.get("paired_se", 0.0) if margin else 0.0)]
    return min(ok, key=lambda i: (candidates[i]["macs"], candidates[i]["params"],
                                  candidates[i]["eval_loss"], i))


def candidate_pools(spaces: list[StageSpace], budget: int, seed: int = 0
                    ) -> list[list[tuple]]:
    """Per stage the fixed candidate pool (:meth:`StageSpace.candidates`, teacher-shaped first):
    what stage 1 trains and stage 2 scores; a pure function of (spaces, budget, seed)."""
    rng = np.random.default_rng(seed)
    return [space.candidates(budget, rng) for space in spaces]


def local_search(student: VideoUNet, spaces: list[StageSpace], teacher_arch: Arch,
                 traces: list, pools: list[list[tuple]], margin: float = 0.0,
                 updates: list[list[int]] | None = None) -> list[StageResult]:
    """Block-wise local search over ``pools`` (see the module docstring); ``updates``: per
    stage and candidate, the stage-1 updates it got (recorded in the rows)."""
    losses = evaluate(student, spaces, teacher_arch, traces, pools)
    results = []
    for s_i, (space, cs, ls) in enumerate(zip(spaces, pools, losses)):
        rows = []
        for i, (c, loss) in enumerate(zip(cs, ls)):
            cost = space.cost(c)
            d = loss - ls[0]
            se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
            row = {"arch": space.describe(c), "params": cost.params, "macs": cost.macs,
                   "eval_loss": float(loss.mean()), "paired_se": se}
            if updates is not None:
                row["updates"] = int(updates[s_i][i])
            rows.append(row)
        results.append(StageResult(space.stage.name, rows, 0, choose(rows, 0, margin), cs))
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
