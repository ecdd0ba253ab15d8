"""DiffNAS training stages as :class:`~sned.train.trainer.Trainer` tasks (stages 1 and 3).

Latent teachers pass their ``codec``: the tasks then read pixel clips and train on their
autoencoder's latents (as :class:`~sned.train.tasks.LatentDiffusionTask`).

The Trainer owns the loop, the optimizer, EMA, checkpoints, resume, the non-finite-loss guard
and Ctrl-C handling, the step-indexed data order and the noising of every batch
(``Trainer.noised_inputs``: random t, noise and caption dropout as a pure function of the
seed and step). A task owns what differs (:mod:`sned.train.tasks`):

* :class:`BlockDistillTask` — block-wise supernet training with distillation supervision. Each
  step runs the frozen teacher once on the noised batch, recording every stage's inputs and
  outputs (:func:`~sned.diffnas.blocks.teacher_trace`); each stage of the elastic student
  (:func:`~sned.diffnas.student.init_student`) then runs ``draws_per_step`` candidates of its
  fixed pool — the very candidates the search scores ("train what you score") — and, with
  probability ``teacher_prob``, the teacher-shaped candidate too, on the teacher's recorded
  inputs and regresses the teacher's outputs (L2). Pool draws walk through a fresh random
  permutation of the pool per pass, so every candidate gets the same number of updates (± 1;
  :meth:`BlockDistillTask.update_counts`). All stages train in one backward; each stage's
  gradient is clipped on its own (``stage_clip``: one stage's large gradient no longer sets
  every stage's step size); the Trainer's masked AdamW (``exact_freeze``) leaves unsampled
  weights untouched.
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
from ..data.transforms import resize_video
from ..train.tasks import DiffusionTask, StepOutcome, latent_clips
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

    def __init__(self, run: RunConfig, teacher: VideoUNet, arch: Arch, model: nn.Module,
                 codec=None) -> None:
        self.run, self.teacher, self.arch, self._model = run, teacher, arch, model
        self.teacher_cost = model_cost(run.model, arch)
        self.codec = codec  # latent teachers: the frozen autoencoder + latent stats

    def dataset(self):
        if self.codec is None:
            return super().dataset()
        return latent_clips(self.run, (self.codec.config.temporal_factor,
                                       self.codec.config.spatial_factor))

    def to_model_space(self, video: torch.Tensor, resolution: int) -> torch.Tensor:
        """Pixel clips → the teacher's input space (latent teachers: encoded by its codec)."""
        if self.codec is None:
            return super().to_model_space(video, resolution)
        return self.codec.encode(resize_video(video, resolution
                                              * self.codec.config.spatial_factor))

    @property
    def full_params(self) -> int:
        return self.teacher_cost.params

    def build_model(self) -> nn.Module:
        return self._model

    def start(self, trainer) -> None:
        self.teacher.to(trainer.device).eval().requires_grad_(False)
        if self.codec is not None:
            self.codec.ae.to(trainer.device)

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

    ``spaces``: one :class:`StageSpace` per stage; ``pools``: per stage the fixed candidate list
    (the teacher-shaped one first) drawn from; ``draws_per_step``: pool candidates per stage
    and step; ``teacher_prob``: probability per step and stage of also training the
    teacher-shaped candidate (1 = sandwich, 0 = pool draws only); ``stage_clip``: max grad norm
    of each stage's parameters (0 = off). Draws are a pure function of (seed, step), so a
    resumed run draws what a straight one does.
    """

    kind = "diffnas-supernet"

    def __init__(self, run: RunConfig, teacher: VideoUNet, arch: Arch, student: VideoUNet,
                 spaces: list[StageSpace], teacher_prob: float,
                 pools: list[list[tuple]] | None = None, draws_per_step: int = 1,
                 stage_clip: float = 0.0, codec=None) -> None:
        super().__init__(run, teacher, arch, student, codec)
        self.spaces, self.teacher_prob = spaces, teacher_prob
        self.pools = pools if pools is not None else [[sp.teacher] for sp in spaces]
        self.draws_per_step, self.stage_clip = draws_per_step, stage_clip

    def _pool_index(self, stage: int, position: int) -> int:
        n = len(self.pools[stage])
        perm = np.random.default_rng([self.run.train.seed, stage, position // n, 0xD1F]
                                     ).permutation(n)
        return int(perm[position % n])

    def draw_indices(self, step: int) -> list[list[int]]:
        """Per stage, the pool indices trained at ``step`` (``-1``: the teacher-shaped
        candidate added with probability ``teacher_prob``)."""
        rng = np.random.default_rng([self.run.train.seed, step, 0xD1E])
        k = self.draws_per_step
        out = []
        for s in range(len(self.spaces)):
            idx = [self._pool_index(s, step * k + j) for j in range(k)]
            if rng.random() < self.teacher_prob:
                idx.append(-1)
            out.append(idx)
        return out

    def draws(self, step: int) -> list[list[tuple]]:
        """Per stage, the candidates trained at ``step``."""
        return [[space.teacher if i < 0 else pool[i] for i in idx]
                for space, pool, idx in zip(self.spaces, self.pools, self.draw_indices(step))]

    def update_counts(self, steps: int) -> list[list[int]]:
        """Per stage and pool candidate, its draws in the first ``steps`` steps — the
        distillation loss terms it was trained on (the teacher-shaped candidate, index 0, also
        counts its ``teacher_prob`` extras). Draws of one step share its optimizer step."""
        counts = [[0] * len(p) for p in self.pools]
        for step in range(steps):
            for c, idx in zip(counts, self.draw_indices(step)):
                for i in idx:
                    c[max(i, 0)] += 1
        return counts

    def backward(self, trainer, batch: dict) -> StepOutcome:
        inputs, _, _, n = self._inputs(trainer, batch)
        _, trace = teacher_trace(self.teacher, inputs)
        student = trainer.model
        losses, per_stage, draws = [], [], self.draws(trainer.step)
        with trainer.autocast():
            for space, io, cands in zip(self.spaces, trace.stages, draws):
                stage_losses = []
                for cand in cands:
                    layouts = resolve(student.config, with_stage(self.arch, space.stage, cand),
                                      student.specs)
                    stage_losses.append(distill_loss(run_stage(student, space.stage, io, trace,
                                                               layouts), io.outputs))
                losses += stage_losses
                per_stage.append(torch.stack(stage_losses).mean())
        torch.stack(per_stage).sum().backward()
        norms = self._clip_stages(student)
        drawn = sum(space.cost(c).macs for space, cands in zip(self.spaces, draws) for c in cands)
        return StepOutcome([sum(x.item() for x in per_stage)], self.arch.resolution,
                           [self.arch], NO_FLOORS, self.teacher_cost,
                           extras={"stage_losses": [x.item() for x in losses],
                                   "stage_grad_norms": norms},
                           train_macs=(self.teacher_cost.macs + TRAINING_MACS_PER_FORWARD
                                       * drawn) * n)

    def _clip_stages(self, student: VideoUNet) -> list[float]:
        """Clip each stage's gradient to ``stage_clip`` (0 = measure only); the norms before."""
        norms = []
        for space in self.spaces:
            params = [p for m in student.stage_modules(space.stage) for p in m.parameters()
                      if p.grad is not None]
            if not params:
                norms.append(0.0)
                continue
            if self.stage_clip > 0:
                norms.append(float(nn.utils.clip_grad_norm_(params, self.stage_clip)))
            else:
                norms.append(float(torch.linalg.vector_norm(torch.stack(
                    [torch.linalg.vector_norm(p.grad) for p in params]))))
        return norms


class JointLossTask(_TeacherTask):
    """Stage 3: the extracted subnet ``model`` (at ``arch``) retrained with the dynamic joint
    loss (see module doc); ``schedule`` is β's (``linear`` or ``cosine``)."""

    kind = "diffnas-retrain"

    def __init__(self, run: RunConfig, teacher: VideoUNet, teacher_arch: Arch, model: VideoUNet,
                 schedule: str = "linear", codec=None) -> None:
        if model.is_supernet or model.arch is None:
            raise TypeError("JointLossTask retrains an extracted (static) model")
        if schedule not in SCHEDULES:
            raise ValueError(f"beta schedule {schedule!r} is not one of {list(SCHEDULES)}")
        super().__init__(run, teacher, teacher_arch, model, codec)
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
               seed: int, device: str, ema_decay: float, exact_freeze: bool,
               grad_clip: float = 1.0, lr_schedule: str = "constant", lr_floor: float = 0.05,
               lr_warmup_steps: int = 0) -> RunConfig:
    """The run config of a DiffNAS training stage: lr ``lr_schedule`` (constant for the block
    supernet; the teacher's, e.g. cosine to its floor, for retraining), no weight decay, global
    grad clip ``grad_clip`` (0 = off: the supernet clips per stage itself), checkpoints about
    every tenth of the run (the last two kept)."""
    train = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, lr_schedule=lr_schedule,
                        lr_floor=lr_floor, lr_warmup_steps=lr_warmup_steps, weight_decay=0.0,
                        grad_clip=grad_clip, exact_freeze=exact_freeze, warmup_steps=0,
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
