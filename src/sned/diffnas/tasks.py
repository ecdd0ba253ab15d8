"""DiffNAS training stages as :class:`~sned.train.trainer.Trainer` tasks (stages 1 and 3).

The Trainer owns the loop, the optimizer, EMA, checkpoints, resume, the non-finite-loss guard
and Ctrl-C handling, the step-indexed data order and the noising of every batch
(``Trainer.noised_inputs``: random t, noise and caption dropout as a pure function of the
seed and step). A task owns what differs (:mod:`sned.train.tasks`):

* :class:`BlockDistillTask` — block-wise supernet training with distillation supervision. Each
  step runs the frozen teacher once on the noised batch, recording every stage's inputs and
  outputs (:func:`~sned.diffnas.blocks.teacher_trace`); each stage of the elastic student
  (:func:`~sned.diffnas.student.init_student`) then runs one candidate drawn uniformly from its
  space — and, with probability ``teacher_prob``, the teacher-shaped candidate too — on the
  teacher's recorded inputs and regresses the teacher's outputs (L2). All stages train in one
  backward; the Trainer's masked AdamW (``exact_freeze``) leaves unsampled weights untouched.
* :class:`JointLossTask` — retraining one fixed, extracted subnet with the dynamic joint loss
  ``L = β·L_distill + (1 − β)·L_diffusion``, β from 1 at the first step to 0 at the last
  (:func:`beta_at`, linear or cosine). ``L_distill`` is the mean over stages of the L2 between
  the subnet's and the teacher's stage outputs (both full forwards on the same noised batch);
  ``L_diffusion`` is the shared :class:`~sned.diffusion.Objective` loss. β and both terms are
  logged every step in the run's ``metrics.jsonl``.

:func:`train` builds the run config of such a stage and trains it, resuming from the run
folder's last checkpoint when there is one.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..arch import Arch, resolve
from ..cost import TRAINING_MACS_PER_FORWARD, model_cost, training_macs
from ..data.config import DataConfig
from ..models.unet import Trace, VideoUNet
from ..store.checkpoint import newest_complete
from ..train.arch_sampler import Floors
from ..train.config import RunConfig, TrainConfig
from ..train.tasks import DiffusionTask, StepOutcome
from ..train.trainer import Trainer
from .blocks import distill_loss, run_stage, teacher_trace, trace_distill_loss
from .space import StageSpace, with_stage

SCHEDULES = ("linear", "cosine")
NO_FLOORS = Floors(1.0, 1.0)


def beta_at(step: int, total: int, schedule: str = "linear") -> float:
    """β of 0-based ``step`` of ``total``: 1 at the first step, 0 at the last."""
    if schedule not in SCHEDULES:
        raise ValueError(f"beta schedule {schedule!r} is not one of {list(SCHEDULES)}")
    if total <= 1:
        return 0.0
    frac = min(1.0, step / (total - 1))
    return 1.0 - frac if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * frac))


class _TeacherTask(DiffusionTask):
    """Shared parts: a frozen teacher at its own resolution, the data and text of a
    :class:`DiffusionTask` (``dataset``, ``to_model_space``, ``_encode_text``), no sampler."""

    def __init__(self, run: RunConfig, teacher: VideoUNet, arch: Arch, model: nn.Module
                 ) -> None:
        self.run, self.teacher, self.arch, self._model = run, teacher, arch, model
        self.teacher_cost = model_cost(run.model, arch)

    @property
    def full_params(self) -> int:
        return self.teacher_cost.params

    def build_model(self) -> nn.Module:
        return self._model

    def start(self, trainer) -> None:
        self.teacher.to(trainer.device).eval().requires_grad_(False)

    def _inputs(self, trainer, batch: dict) -> tuple[dict, torch.Tensor, torch.Tensor, int]:
        """The step's noised inputs at the teacher's resolution (the Trainer's noising)."""
        n = trainer.cfg.batch_size
        video = self.to_model_space(batch["video"][:n].to(trainer.device, non_blocking=True),
                                    self.arch.resolution)
        emb, mask = self._encode_text(trainer, batch["caption"][:n], video.shape[0])
        inputs, target, t = trainer.noised_inputs(video, emb, mask, 0)
        return inputs, target, t, video.shape[0]


class BlockDistillTask(_TeacherTask):
    """Stage 1: the elastic ``student`` learns every stage of ``teacher`` (see module doc).

    ``spaces``: one :class:`StageSpace` per stage; ``teacher_prob``: probability per step and
    stage of also training the teacher-shaped candidate (1 = sandwich, 0 = uniform draws only).
    Draws are a pure function of (seed, step), so a resumed run draws what a straight one does.
    """

    kind = "diffnas-supernet"

    def __init__(self, run: RunConfig, teacher: VideoUNet, arch: Arch, student: VideoUNet,
                 spaces: list[StageSpace], teacher_prob: float) -> None:
        super().__init__(run, teacher, arch, student)
        self.spaces, self.teacher_prob = spaces, teacher_prob

    def draws(self, step: int) -> list[list[tuple]]:
        """Per stage, the candidates trained at ``step`` (random first, then maybe the
        teacher-shaped one)."""
        rng = np.random.default_rng([self.run.train.seed, step, 0xD1F])
        out = []
        for space in self.spaces:
            cands = [space.sample(rng)]
            if rng.random() < self.teacher_prob:
                cands.append(space.teacher)
            out.append(cands)
        return out

    def backward(self, trainer, batch: dict) -> StepOutcome:
        inputs, _, _, n = self._inputs(trainer, batch)
        _, trace = teacher_trace(self.teacher, inputs)
        student = trainer.model
        losses, draws = [], self.draws(trainer.step)
        with trainer.autocast():
            for space, io, cands in zip(self.spaces, trace.stages, draws):
                for cand in cands:
                    layouts = resolve(student.config, with_stage(self.arch, space.stage, cand),
                                      student.specs)
                    losses.append(distill_loss(run_stage(student, space.stage, io, trace,
                                                         layouts), io.outputs))
        torch.stack(losses).sum().backward()
        drawn = sum(space.cost(c).macs for space, cands in zip(self.spaces, draws) for c in cands)
        return StepOutcome([sum(x.item() for x in losses)], self.arch.resolution, [self.arch],
                           NO_FLOORS, self.teacher_cost,
                           extras={"stage_losses": [x.item() for x in losses]},
                           train_macs=(self.teacher_cost.macs + TRAINING_MACS_PER_FORWARD
                                       * drawn) * n)


class JointLossTask(_TeacherTask):
    """Stage 3: the extracted subnet ``model`` (at ``arch``) retrained with the dynamic joint
    loss (see module doc); ``schedule`` is β's (``linear`` or ``cosine``)."""

    kind = "diffnas-retrain"

    def __init__(self, run: RunConfig, teacher: VideoUNet, teacher_arch: Arch, model: VideoUNet,
                 schedule: str = "linear") -> None:
        if model.is_supernet or model.arch is None:
            raise TypeError("JointLossTask retrains an extracted (static) model")
        if schedule not in SCHEDULES:
            raise ValueError(f"beta schedule {schedule!r} is not one of {list(SCHEDULES)}")
        super().__init__(run, teacher, teacher_arch, model)
        self.schedule = schedule
        self.cost = model_cost(run.model, model.arch)

    def state(self) -> dict:
        return {"diffnas": {"arch": self._model.arch.to_dict(), "beta_schedule": self.schedule}}

    def backward(self, trainer, batch: dict) -> StepOutcome:
        inputs, target, t, n = self._inputs(trainer, batch)
        beta = beta_at(trainer.step, trainer.cfg.steps, self.schedule)
        _, t_trace = teacher_trace(self.teacher, inputs)
        trace = Trace()
        with trainer.autocast():
            pred = trainer.forward({**inputs, "trace": trace}, None, sync=True)
            distill = trace_distill_loss(trace, t_trace)
            diffusion = trainer.objective.loss(pred, target, t).mean()
            loss = beta * distill + (1.0 - beta) * diffusion
        loss.backward()
        return StepOutcome([loss.item()], self.arch.resolution, [self._model.arch], NO_FLOORS,
                           self.cost, extras={"beta": beta, "distill_loss": distill.item(),
                                              "diffusion_loss": diffusion.item()},
                           train_macs=training_macs(self.run.model, [self._model.arch], n)
                           + self.teacher_cost.macs * n)


def run_config(model, diffusion, data: DataConfig, *, steps: int, batch_size: int, lr: float,
               seed: int, device: str, ema_decay: float, exact_freeze: bool) -> RunConfig:
    """The run config of a DiffNAS training stage: constant lr, no weight decay, grad clip 1,
    checkpoints about every tenth of the run (the last two kept)."""
    train = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, weight_decay=0.0,
                        grad_clip=1.0, exact_freeze=exact_freeze, warmup_steps=0,
                        ema_decay=ema_decay, seed=seed, device=device,
                        checkpoint_every=max(1, steps // 10), keep_last=2, log_every=10)
    return RunConfig(model=model, diffusion=diffusion, data=data, train=train)


def train(task: _TeacherTask, out: str | Path, log=print):
    """Train ``task`` (its ``run`` config) in the run folder ``out``, continuing from the
    folder's newest complete checkpoint when it has one (a killed stage resumes mid-run);
    returns the Trainer. Ctrl-C / SIGTERM save a checkpoint and raise KeyboardInterrupt."""
    out = Path(out)
    resume = newest_complete(out / "checkpoints") is not None
    if resume:
        log(f"diffnas: resuming {out} from its last checkpoint")
    trainer = Trainer(task.run, out, resume=resume, overwrite=not resume, progress=False,
                      task=task)
    trainer.fit()
    if trainer.interrupted:
        raise KeyboardInterrupt
    return trainer
