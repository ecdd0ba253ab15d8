"""Supernet training — SNED Algorithm 1, one readable loop.

Each optimizer step: draw the step's arch(s) and resolution (same on every rank), resize the
batch, compute the diffusion loss of the subnet, back-propagate, and update only the sampled
subnet's weights (masked AdamW). See :func:`train_step` for the whole step top to bottom.

The step never waits on the host for logging: losses and gradient norms stay on the device and
are read every ``log_every`` steps (:mod:`sned.train.metrics_log`). Its one device→host read
is the decision to apply or skip the update (non-finite loss), fused under ``torchrun`` with the
stop signal and the time budget into ONE all-reduce, so every rank stops at the same step
(SIGTERM / SIGINT on any rank), writes one checkpoint and exits 130.
"""

from __future__ import annotations

import gc
import os
import random
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from diffusers.training_utils import EMAModel
from torch import Tensor

from ..arch import Arch
from ..config import ConfigError
from ..data.folder import SkipTally
from ..device import (apply_tf32, deterministic_env, repeated_shapes, resolve_device,
                      tf32_flags)
from ..diffusion import Objective
from ..models.unet import VideoUNet
from ..store.checkpoint import BackgroundWriter, load_training_state, snapshot, write_checkpoint
from ..store.files import write_json
from ..text import TextEncoder
from .arch_sampler import Floors
from .config import RunConfig
from .data import make_loader, num_workers
from .distributed import join_process_group, release_at_exit
from .lr_schedule import lr_factor
from .ema import LerpEMA
from .masked_adamw import ActivityTracker, MaskedAdamW
from .memory import resolve_checkpointing
from .metrics_log import MetricsLog
from .parallel import Parallel
from .preempt import StopSignal
from .run_folder import RunFolder, run_inputs
from .tasks import make_task, task_class, write_eval
from .transfer import init_from


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss stayed non-finite); a checkpoint was saved."""


@dataclass
class StepResult:
    """One step. ``loss`` (the mean over ranks), ``grad_norm`` and ``losses`` (this rank's,
    per micro-batch × arch, shape (n,)) are device tensors, read when the log is written."""

    loss: Tensor
    resolution: int
    archs: list[Arch]
    floors: Floors
    params: int
    macs: int
    grad_norm: Tensor | float
    skipped: bool = False
    losses: Tensor | list[float] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)
    train_macs: int = 0  # forward + backward MACs of the whole step, every arch, every rank


class Trainer:
    """Owns the model, optimizer, EMA, data and logging of one run.

    Args:
        run: the run config.
        out_dir: run folder (``checkpoints/``, ``metrics.jsonl``, ``tensorboard/``).
        resume: continue the run in ``out_dir`` (its ``latest`` checkpoint, or the newest
            complete one); an error if it holds none or was trained with another model.
        overwrite: replace a run already in ``out_dir`` (without it, that is an error).
        progress: show a tqdm progress bar (rank 0).
        task: what to train (:mod:`sned.train.tasks`); None = the task ``run`` names
            (pixel / latent supernet, or autoencoder). Other modules pass their own (DiffNAS
            passes its distillation tasks).
        allow_world_change: resume under another world size (the global batch changes); the
            change is recorded in the run. Without it that is refused.

    The run folder rules are in :mod:`sned.train.run_folder`; nothing is written before they
    pass, nor before the data, the configs and the ``init_from`` source have loaded. A start
    that fails before its first checkpoint removes what it wrote (:meth:`_undo_failed_start`).
    """

    def __init__(self, run: RunConfig, out_dir: str | os.PathLike, resume: bool = False,
                 progress: bool = True, overwrite: bool = False, task=None,
                 allow_world_change: bool = False) -> None:
        if resume and overwrite:
            raise ValueError("resume and overwrite exclude each other")
        self.run, self.cfg = run, run.train
        self.out = Path(out_dir)
        os.environ.update(deterministic_env(self.cfg.deterministic, os.environ))  # before CUDA
        self.rank, self.world = join_process_group()
        release_at_exit(self)
        try:
            self.device = resolve_device(self.cfg.device, flag="train.device", local_rank=int(
                os.environ.get("LOCAL_RANK", self.rank)) if self.world > 1 else None)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        self.is_main = self.rank == 0
        self.folder = RunFolder(self.out)
        kind = task.kind if task is not None else task_class(run).kind
        checkpoint = self._check_run_folder(resume, overwrite, kind,  # before expensive work
                                            allow_world_change)
        if self.cfg.deterministic:
            torch.use_deterministic_algorithms(True)
        apply_tf32(tf32_flags(self.cfg.allow_tf32, self.device.type))
        _seed_global_rngs(self.cfg.seed)  # restored on resume; python/numpy are saved too

        # what is trained: pixel / latent supernet, autoencoder, or a caller's task
        self.task = make_task(run) if task is None else task
        self.space = getattr(self.task, "space", None)
        self.sampler = getattr(self.task, "sampler", None)
        self.objective = Objective(run.diffusion)
        self.model = self.task.build_model().to(self.device)
        self.init_record: dict | None = None  # image-to-video transfer (train.init_from)
        if checkpoint is None and self.cfg.init_from is not None:
            self._init_from(self.cfg.init_from)  # before EMA, optimizer and FSDP copy it
        self._dataset = self.task.dataset()  # the data is checked before the folder is touched
        self.checkpoint_plan = resolve_checkpointing(
            run, self.device, self.world, estimable=task is None)  # auto: by the estimate
        self.checkpoint_plan.apply(self.model, run.model)
        # DDP replicas or FSDP2 shards under torchrun (sned.train.parallel)
        self.parallel = Parallel(self.model, self.cfg.parallel, self.device, self.world)
        params = self._params = list(self.model.parameters())  # walked once, not per step
        opt_kw = dict(lr=self.cfg.lr, betas=self.cfg.betas, eps=self.cfg.eps,
                      weight_decay=self.cfg.weight_decay)
        owned = list(self.parallel.optimizer_params(local=self.cfg.exact_freeze).values())
        legacy = self.cfg.update_impl == "legacy"
        self.optimizer = (MaskedAdamW(owned, **opt_kw,
                                      per_element=self.cfg.adam_counts == "element",
                                      impl="slices" if legacy else "fused")
                          if self.cfg.exact_freeze else torch.optim.AdamW(owned, **opt_kw))
        self.tracker = ActivityTracker(self.model) if self.cfg.exact_freeze else None
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(
            self.cfg.lr_schedule, self.cfg.steps, self.cfg.lr_warmup_steps, self.cfg.lr_floor))
        self.ema = None
        if self.cfg.ema_decay > 0:  # diffusers' EMAModel; fused: updated by one lerp
            self.ema = (EMAModel if legacy else LerpEMA)(params, decay=self.cfg.ema_decay,
                                                         foreach=True)
        self.text = None
        self.step = 0
        self.nan_streak = 0
        self.nan_skipped = 0
        self.data_skipped: dict[str, Any] = {"count": 0, "files": []}  # unreadable/short videos
        self.history: list[tuple[int, int, list[Arch]]] = []
        self.stop = StopSignal(self.world)  # SIGINT / SIGTERM set a flag (sned.train.preempt)
        self._stop_agreed = False  # torchrun: some rank had a stop signal (all-reduced)
        self._deadline: float | None = None
        self._deadline_agreed = False
        self.writer = BackgroundWriter(self.cfg.async_checkpoint)
        self._done_group = (dist.new_group(backend="gloo", timeout=timedelta(hours=4))
                            if self.world > 1 else None)
        self.log: MetricsLog | None = None
        self.progress = progress and self.is_main

        if checkpoint is not None:
            self._resume(checkpoint)
        try:
            self._prepare_run_folder(overwrite)
            self.task.start(self)
        except BaseException:
            self._undo_failed_start()
            raise

    def _init_from(self, source: str) -> None:
        """Write the model ``source`` (image, or video of the family) into the fresh supernet
        (before EMA and optimizer copy it); errors name the source and the layer, before the
        run folder exists."""
        if not isinstance(self.model, VideoUNet) or not self.model.is_supernet:
            raise ConfigError(f"train.init_from={source}: starts a diffusion supernet from a "
                              f"diffusion model; this run trains a {type(self.model).__name__}")
        transfer = init_from(self.model, source, diffusion=self.run.diffusion)
        self.init_record = transfer.to_dict()
        self.folder.notes.append(transfer.summary())

    # ----------------------------------------------------------------------------- the step
    def train_step(self, batch: dict) -> StepResult:
        """One optimizer step (Algorithm 1, lines 4-9); the task does forward + backward."""
        torch.manual_seed(_seed(self.cfg.seed, self.step, self.rank, 0xD0))  # dropout
        self.parallel.zero_grad()
        self.optimizer.zero_grad(set_to_none=True)
        if self.tracker is not None:
            self.tracker.reset()
        outcome = self.task.backward(self, batch)
        res, archs, floors = outcome.resolution, outcome.archs, outcome.floors
        losses = torch.stack([torch.as_tensor(x, dtype=torch.float64, device=self.device)
                              .reshape(()) for x in outcome.losses])
        signature = None
        if self.tracker is not None and self.parallel.mode != "fsdp":
            # the update's lists, once per arch signature, built while the device works
            signature = self.tracker.signature()
            self.optimizer.prepare(boxes=self.tracker.extents, signature=signature)
        finite, mean_loss = self._agree(losses)  # the step's one device→host read
        cost = outcome.cost
        spent = outcome.train_macs * self.world
        if not finite:
            self.parallel.zero_grad()
            self.optimizer.zero_grad(set_to_none=True)
            return StepResult(mean_loss, res, archs, floors, cost.params, cost.macs,
                              float("nan"), skipped=True, losses=losses, train_macs=spent)
        grad_norm = self._clip()
        if self.tracker is not None and self.parallel.mode != "fsdp":
            self.optimizer.step(boxes=self.tracker.extents, signature=signature)
        elif self.tracker is not None:  # local index boxes of each rank's shard
            self.optimizer.step(regions=self.parallel.step_regions(self.tracker.regions()))
        else:
            self.parallel.step_regions(None)
            self.optimizer.step()
        self.lr_scheduler.step()
        if self.ema is not None:
            self.ema.step(self._params)
        return StepResult(mean_loss, res, archs, floors, cost.params, cost.macs, grad_norm,
                          losses=losses, extras=outcome.extras, train_macs=spent)

    # ------------------------------------------------------- the context tasks build steps from
    def noised_inputs(self, video: Tensor, emb: Tensor, mask: Tensor, micro: int):
        """Noise, timesteps, caption dropout and (SSR) the augmented low-res condition of
        micro-batch ``micro`` of this step, drawn ON THE DEVICE by a generator seeded with run
        seed, step, rank and ``micro`` (a pure function of them: a resumed run draws the same
        numbers bitwise; no host→device copy in the step).

        ``video`` (B, C, T, H, W) on the device, ``emb`` (B, L, D), ``mask`` (B, L) →
        (forward kwargs, target like ``video``, timesteps (B,))."""
        g = self.generator(micro)
        b, dev = video.shape[0], self.device
        t = self.objective.sample_timesteps(b, g, dev)
        noise = self.objective.noise(video.shape, g, dev)
        keep_text = torch.rand(b, generator=g, device=dev) >= self.cfg.cfg_drop_prob
        ssr = self.run.model.kind == "ssr"
        if ssr:  # low: the condition (upsampled, then noised below); video: what is diffused
            low, video = self.objective.ssr_pair(video, self.run.model.residual_scale)
        xt, target = self.objective.noisy(video, noise, t)
        inputs = {"sample": xt, "timestep": t, "encoder_hidden_states": emb,
                  "encoder_attention_mask": mask & keep_text[:, None]}
        if ssr:
            level = torch.rand(b, generator=g, device=dev)
            low_noise = torch.randn(video.shape, generator=g, device=dev)
            inputs["lowres"] = self.objective.augment_lowres(low, level, low_noise)
            inputs["noise_aug_level"] = level
        return inputs, target, t

    def generator(self, micro: int) -> torch.Generator:
        """The device generator of micro-batch ``micro`` of this step (seeded by run seed,
        step, rank and ``micro``; seeding a CUDA generator reads nothing from the device)."""
        return torch.Generator(device=self.device).manual_seed(
            _seed(self.cfg.seed, self.step, self.rank, micro))

    def _agree(self, losses: Tensor) -> tuple[bool, Tensor]:
        """Whether every rank's losses are finite (skip the update otherwise) and the mean
        loss over ranks (a device tensor). Under torchrun the same all-reduce carries the
        stop flags: a signal on any rank, or rank 0's time budget, stops every rank after
        this step (:attr:`_stop_agreed`, :attr:`_deadline_agreed`)."""
        mean = losses.mean()
        finite = torch.isfinite(losses).all()
        if self.world == 1:
            return bool(finite), mean
        past = self.is_main and self._deadline is not None and time.monotonic() >= self._deadline
        flags = torch.tensor([float(self.stop.caught), float(past)],
                             dtype=torch.float64).to(self.device, non_blocking=True)
        stats = torch.cat([torch.stack([torch.where(finite, mean, 0.0), finite.double()]),
                           flags])
        dist.all_reduce(stats)
        count, stop, deadline = stats[1:].tolist()
        self._stop_agreed, self._deadline_agreed = stop > 0, deadline > 0
        ok = count == self.world
        return ok, stats[0] / self.world if ok else torch.full_like(mean, float("nan"))

    def forward(self, inputs: dict, arch: Arch | None, sync: bool):
        """The model (DDP-wrapped under torchrun) on ``inputs`` at ``arch`` (None: the task's
        own forward kwargs); ``sync=False`` skips DDP's gradient all-reduce (accumulation)."""
        kw = inputs if arch is None else {**inputs, "arch": arch}
        with self.parallel.forward(sync) as module:
            return module(**kw)

    def _clip(self) -> Tensor:
        """The global gradient norm (clipped to ``grad_clip`` if set), on the device."""
        params = [p for p in self._params if p.grad is not None]
        if self.cfg.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        return norm.full_tensor() if hasattr(norm, "full_tensor") else norm

    def autocast(self):
        """The mixed-precision context of this run (bf16 on CUDA by default; fp32 on CPU)."""
        mp = self.cfg.mixed_precision
        if self.device.type == "cuda" and mp in ("auto", "bf16"):
            return torch.autocast("cuda", dtype=torch.bfloat16)
        if mp == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return nullcontext()

    def encode(self, captions: list[str]) -> tuple[Tensor, Tensor]:
        """Captions → token embeddings (B, L, D) and mask (B, L) on the device (frozen encoder,
        built on first use)."""
        if self.text is None:

            self.text = TextEncoder(self.run.data.text_encoder,
                                    max_length=self.run.model.text_len, device=self.device)
            if self.text.dim != self.run.model.text_dim:
                raise TrainingError(f"text encoder width {self.text.dim} != model.text_dim "
                                    f"{self.run.model.text_dim}")
        emb, mask = self.text.encode(list(captions))
        return emb.to(self.device), mask.to(self.device)

    def _precompute_captions(self, dataset) -> None:
        """Embed a dataset's fixed caption set once, in batches (``caption_set()``, when it
        fits the cache): steps then never run the encoder, and each caption's embedding is
        the same in a resumed process (the set and its batching are the same)."""
        if not getattr(self.run.model, "conditional", False) or \
                not hasattr(dataset, "caption_set"):
            return
        captions = dataset.caption_set()
        self.encode(captions[:1])  # loads the encoder
        if len(captions) <= self.text.cache_size:
            self.text.precompute(captions)

    # ----------------------------------------------------------------------------- the loop
    def fit(self, steps: int | None = None, max_seconds: float | None = None) -> "Trainer":
        """Train until ``steps`` total optimizer steps (default: the config's), or until
        ``max_seconds`` of wall time have passed (then save and return). A new run that fails
        before its first checkpoint leaves no run behind (:meth:`_undo_failed_start`)."""
        # shapes change every step, unless one arch is trained: then cuDNN benchmarks its
        # algorithms once per shape (scoped to the loop; off under deterministic algorithms)
        shapes = repeated_shapes(self.device) if self.cfg.fixed_arch is not None else nullcontext()
        try:
            with shapes:
                return self._fit(steps, max_seconds)
        except BaseException:
            self._undo_failed_start()
            raise

    def _fit(self, steps: int | None, max_seconds: float | None) -> "Trainer":
        self._deadline = None if max_seconds is None else time.monotonic() + max_seconds
        total = self.cfg.steps if steps is None else steps
        if self.step >= total:
            return self
        dataset = self._dataset
        skips = SkipTally(dataset)  # counts files skipped inside DataLoader workers too
        batch = max([self.cfg.batch_size, *self.cfg.batch_size_per_resolution.values()])
        loader = make_loader(dataset, self.run.data, batch, self.cfg.seed, self.step,
                             self.rank, self.world,
                             workers=num_workers(self.run.data, self.device, self.world))
        self._precompute_captions(dataset)
        writer = _tensorboard(self.out) if self.is_main else None
        self.log = MetricsLog(self.out, writer, self.cfg.log_every, self.task.full_params)
        bar = _progress(self.step, total) if self.progress else None
        self.stop.install()
        t0, last_saved = time.perf_counter(), self.step
        try:
            for batch in loader:
                skips.add(batch)
                self.data_skipped = skips.record()
                result = self.train_step(batch)
                self.history.append((self.step, result.resolution, result.archs))
                self.step += 1
                if self.is_main:
                    self._log(result, time.perf_counter() - t0)
                    if bar is not None:
                        bar.update(1)
                        _postfix(bar, self.log.last)
                self._account_nan(result)
                t0 = time.perf_counter()
                stop = self._stop_agreed if self.world > 1 else self.stop.caught
                done = self.step >= total or self._past()
                if done or self.step % self.cfg.checkpoint_every == 0 or stop:
                    self.save()
                    last_saved = self.step
                if done or stop:
                    if stop and not self.stop.caught:
                        self.stop.signum = signal.SIGTERM  # another rank's signal
                    break
        finally:
            if (self.world == 1 and self.step != last_saved
                    and self.nan_streak < self.cfg.nan_patience):
                self.save()  # an exception mid-run loses nothing that finished
            if self.is_main:
                self.log.flush()
            self.writer.wait()  # the last checkpoint is on disk before fit returns ...
            self.stop.restore()
            if bar is not None:
                bar.close()
            if writer is not None:
                writer.close()
            if self.is_main and len(skips):
                print(f"[sned train] skipped {len(skips)} unreadable or too-short video files "
                      f"(listed under data_skipped in {self.out / 'checkpoints'}/*/state.json)",
                      file=sys.stderr)
        if self._done_group is not None:
            # ... on every rank (not after an error: a failed rank must exit); gloo with a
            # long timeout, so a big write never times out the NCCL group
            dist.barrier(group=self._done_group)
        return self

    def _past(self) -> bool:
        """Whether the wall-time budget is spent (rank 0's clock decides for all ranks, read
        in the step's all-reduce)."""
        if self.world > 1:
            return self._deadline_agreed
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _account_nan(self, result: StepResult) -> None:
        if not result.skipped:
            self.nan_streak = 0
            return
        self.nan_streak += 1
        self.nan_skipped += 1
        if self.nan_streak >= self.cfg.nan_patience:
            self.save()
            raise TrainingError(
                f"loss was non-finite for {self.nan_streak} steps in a row (last step "
                f"{self.step}, resolution {result.resolution}); aborting. Weights were not "
                f"updated by those steps; the last good state is in "
                f"{self.out / 'checkpoints' / 'latest'}. Lower train.lr or check the data.")

    # ----------------------------------------------------------------------------- state
    def save(self) -> Path | None:
        """Checkpoint the current step (every rank calls it at the same step; no barrier).

        Rank 0 takes a CPU snapshot (under FSDP all ranks first gather the full tensors) and
        writes it in a background thread (``train.async_checkpoint``), so no rank waits for
        the write; the next save, and the end of :meth:`fit`, wait for it. Returns the folder
        being written (rank 0) or None."""
        if self.parallel.mode != "fsdp" and not self.is_main:
            return None
        tensors = self.parallel.training_tensors(self.optimizer, self.ema)
        if not self.is_main:
            return None
        if self.log is not None:
            self.log.flush()  # metrics.jsonl holds every step the checkpoint has
        snap = snapshot(self.step, tensors, self.lr_scheduler, self.ema,
                        {"nan_skipped": self.nan_skipped, "run": self.run.to_dict(),
                         "data_skipped": self.data_skipped, "task": self.task.kind,
                         "world_size": self.world, "global_batch": self.world
                         * self.cfg.batch_size * self.cfg.grad_accum,
                         **({"world_changes": self.world_changes} if self.world_changes else {}),
                         **self.task.state(),
                         **({"init_from": self.init_record} if self.init_record else {})})
        root = self.out / "checkpoints"
        self.writer.submit(write_checkpoint, root, snap, self.cfg.keep_last)
        metrics = self.task.evaluate(self)
        if metrics:
            write_eval(self.out, self.step, metrics)
        return root / f"step-{self.step:07d}"

    def _check_run_folder(self, resume: bool, overwrite: bool, kind: str,
                          allow_world_change: bool = False) -> Path | None:
        """Read-only checks of the run folder; the checkpoint to resume from, if any."""
        inputs = run_inputs(self.run)
        self.world_changes: list[dict] = []
        if not resume:
            self.folder.mark_start()  # what a failed start may remove (_undo_failed_start)
            self.folder.refuse_existing(overwrite, kind, inputs)
            return None
        self.folder.check_output(inputs)
        checkpoint = self.folder.resume_checkpoint()
        self.folder.check_task(checkpoint, kind)
        self.folder.check_config(checkpoint, self.run)
        self.world_changes = self.folder.check_world(checkpoint, self.world, self.run,
                                                     allow_world_change)
        return checkpoint

    def _undo_failed_start(self) -> None:
        """A new run that failed before its first checkpoint removes what this start wrote
        (:meth:`RunFolder.undo_start`), so the same command can simply be rerun."""
        if not self.is_main:
            return
        try:
            if hasattr(self, "writer"):
                self.writer.wait()  # a checkpoint being written counts
        except Exception:  # noqa: BLE001 - the write failed: there is no checkpoint
            pass
        self.folder.undo_start()

    def _prepare_run_folder(self, overwrite: bool) -> None:
        """Rank 0 clears (``overwrite``), cleans crash leftovers, trims the log to the
        resumed step and records the run config; then tells the user what it did."""
        if self.world > 1:
            dist.barrier()  # every rank has checked the folder before rank 0 changes it
        if not self.is_main:
            return
        if overwrite:
            self.folder.clear()
            self.folder.mark_start()  # the old run is gone: what is written now is this start's
        self.out.mkdir(parents=True, exist_ok=True)
        self.folder.clean_temps()
        self.folder.trim_metrics(self.step)
        write_json(self.out / "run_config.json", self.run.to_dict())
        for note in self.folder.notes:
            print(f"sned train: {note}", file=sys.stderr, flush=True)

    def _resume(self, folder: Path) -> None:
        state = load_training_state(folder, self.model, self.optimizer, self.ema,
                                    self.lr_scheduler,
                                    None if self.parallel.mode == "none" else self.parallel)
        if isinstance(self.optimizer, MaskedAdamW):
            self.optimizer.convert_states()  # an older run's full-size counts: compact now
        self.step = int(state["step"])
        self.init_record = state.get("init_from")
        self.nan_skipped = int(state.get("nan_skipped", 0))
        # the schedule continues at its step with this run's lr (a changed lr is noted);
        # LambdaLR.load_state_dict restores neither, so set both here
        self.lr_scheduler.base_lrs = [self.cfg.lr] * len(self.optimizer.param_groups)
        factor = self.lr_scheduler.lr_lambdas[0](self.lr_scheduler.last_epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = self.cfg.lr * factor
        self.lr_scheduler.load_state_dict({**self.lr_scheduler.state_dict(),
                                           "_last_lr": [g["lr"] for g in
                                                        self.optimizer.param_groups]})

    def _log(self, r: StepResult, seconds: float) -> None:
        """Buffer the step's row (device tensors stay there until the log is flushed)."""
        row = {"step": self.step, "loss": r.loss, "resolution": r.resolution,
               "params": r.params, "macs": r.macs, "min_ratio": r.floors.min_ratio,
               "min_keep": r.floors.min_keep, "lr": self.lr_scheduler.get_last_lr()[0],
               "grad_norm": r.grad_norm, "skipped": r.skipped, "seconds": round(seconds, 4),
               "train_macs": r.train_macs}
        if len(r.losses) > 1:
            row["losses"] = r.losses
        row.update(r.extras)
        self.log.add(row)

    @property
    def interrupted(self) -> bool:
        return self.stop.caught

    def close(self) -> None:
        """Drop the DDP wrapper while the process group is still registered: call it before
        ``destroy_process_group`` (``sned train`` does; at exit, :mod:`.distributed` does it
        for trainers still alive). Otherwise DDP's reducer may hold the group's last
        reference and destroy it with the GIL held — a deadlock with gloo's worker threads
        (pytorch/pytorch#56297: 2-rank runs that never exited on a loaded machine)."""
        if self.parallel.ddp is not None:
            self.parallel.ddp = None
            gc.collect()  # DDP's hooks form cycles: the reducer dies here, not later


def _seed_global_rngs(seed: int) -> None:
    """Seed torch, numpy and python's global RNGs, so the RNG state a checkpoint saves is a
    function of the seed and the steps taken — equal in a fresh process (bitwise resume)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2 ** 32)
    random.seed(seed)


def _seed(*parts: int) -> int:
    return int(np.random.default_rng(list(parts)).integers(2 ** 62))


def _postfix(bar, row: dict | None) -> None:
    if row is not None:
        bar.set_postfix(loss=f"{row['loss']:.4f}", res=row["resolution"],
                        params=f"{row['params'] / 1e6:.2f}M", floor=row["min_ratio"])


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency; tolerate a broken install
        return None
    return SummaryWriter(str(out / "tensorboard"))


def _progress(start: int, total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True)
