"""What the :class:`~sned.train.trainer.Trainer` trains: one small "task" per kind of run.

The Trainer owns the loop, the optimizer (masked AdamW), EMA, checkpoints and logging; a task
owns what differs between runs — the model, the data, and the forward/backward of one step:

* :class:`DiffusionTask` — the pixel supernet (SNED Algorithm 1: archs + resolution per step,
  dynamic cost). Today's behaviour.
* :class:`LatentDiffusionTask` — the same supernet step on the latents of a frozen autoencoder:
  clips are resized to the step's *pixel* resolution, encoded and normalised (scale/shift
  estimated when latent training starts), then noised as usual.
* :class:`AutoencoderTask` — the video autoencoder with super-position only (one resolution per
  step, no arch): L1 + KL (+ optional perceptual, + optional adversarial after ``disc_start``).
  Reconstruction PSNR / SSIM on held-out clips are logged to ``eval.jsonl`` at checkpoints.

Every task has ``build_model()``, ``dataset()``, ``backward(trainer, batch) -> StepOutcome``,
``full_params``, ``start(trainer)`` (once, after resume) and ``state()`` (JSON saved in each
checkpoint's ``state.json``), and ``evaluate(trainer)`` (dict of metrics, or {}).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..arch import Arch
from ..config import ConfigError
from ..cost import TRAINING_MACS_PER_FORWARD, Cost, autoencoder_cost, training_macs
from ..data.synthetic import SyntheticVideoDataset
from ..data.transforms import collate, resize_video
from ..metrics.perceptual import load_perceptual
from ..metrics.reconstruction import reconstruction_quality
from ..models.autoencoder import (
    AutoencoderConfig,
    PatchDiscriminator3d,
    VideoAutoencoder,
    load_autoencoder_config,
)
from ..models.codec import (
    FOLDER,
    LatentCodec,
    estimate_stats,
    load_autoencoder,
    load_codec,
    save_autoencoder,
)
from ..models.unet import VideoUNet
from ..space import SearchSpace
from ..store.files import atomic_write_text
from .arch_sampler import ArchSampler, Floors
from .data import build_dataset


@dataclass
class StepOutcome:
    """What one step's forward/backward produced (gradients are in the model). ``losses``
    (one per micro-batch × arch) and ``extras`` values may be device tensors (0-d): the
    trainer reads them only when it writes the log, so a step does not wait on the host."""

    losses: list
    resolution: int
    archs: list[Arch | None]
    floors: Floors
    cost: Cost
    extras: dict[str, float] = field(default_factory=dict)
    train_macs: int = 0  # forward + backward MACs of this rank's step (sned.cost.training_macs)


def make_task(run):
    """The task of a :class:`~sned.train.config.RunConfig`."""
    return task_class(run)(run)


def task_class(run):
    """The task class a run config names (its ``kind`` is recorded in every checkpoint, so a
    resumed run continues the same task); ConfigError for contradicting sections."""
    if isinstance(run.model, AutoencoderConfig):
        if run.train.autoencoder is not None:
            raise ConfigError("train.autoencoder is for latent models; this run trains the "
                              f"autoencoder {run.model.name!r} itself")
        return AutoencoderTask
    if run.model.autoencoder is not None:
        return LatentDiffusionTask
    if run.train.autoencoder is not None:
        raise ConfigError(f"autoencoder={run.train.autoencoder}: model {run.model.name!r} is a "
                          f"pixel model (its config names no `autoencoder`)")
    return DiffusionTask


# --------------------------------------------------------------------------------- diffusion
@dataclass
class _Part:
    """Clips (B, C, T, H, W) of one step run the same way: videos, or one-frame images with
    the temporal layers off (``stream`` 1: its own noise stream)."""

    video: Tensor
    emb: Tensor
    mask: Tensor
    archs: list[Arch]
    weight: float          # share of the step's samples
    frames: int | None     # for the cost model (None = the config's)
    stream: int


class DiffusionTask:
    """The pixel-space supernet (SNED Algorithm 1)."""

    kind = "diffusion"

    def __init__(self, run) -> None:
        self.run = run
        self.space = SearchSpace.for_run(run.model, run.train)
        self.sampler = ArchSampler(self.space, run.train)

    @property
    def full_params(self) -> int:
        return self.space.full_params

    def build_model(self) -> nn.Module:
        return VideoUNet(self.run.model)

    def dataset(self):
        return build_dataset(self.run.data, self.run.model)

    def to_model_space(self, video: Tensor, resolution: int) -> Tensor:
        """(B, 3, T, H, W) clips → the denoiser's input space at ``resolution``."""
        return resize_video(video, resolution)

    def start(self, trainer) -> None:
        pass

    def state(self) -> dict:
        return {}

    def evaluate(self, trainer) -> dict:
        return {}

    def backward(self, trainer, batch: dict) -> StepOutcome:
        """Draw the step's archs, then forward + backward every (micro-batch, arch).

        Sandwich with ``inplace_distill``: once the sampling warm-up is over, every arch after
        the first (the largest) learns ground truth + ``distill_weight`` × the regression of
        the teacher's prediction — the largest's own (in place) or, with
        ``distill_teacher=ema``, the EMA weights' at the largest arch.

        With ``train.image_fraction`` the last clips of the batch each give one frame, run as
        images (frames = 1, every arch without its temporal attention); the step's loss is
        the per-sample mean over videos and images."""
        cfg = trainer.cfg
        archs, floors = self.sampler(trainer.step)
        res = archs[0].resolution
        n = cfg.batch_for(res)
        video = self.to_model_space(batch["video"][:n].to(trainer.device, non_blocking=True),
                                    res)
        n = video.shape[0]
        emb, mask = self._encode_text(trainer, batch["caption"][:n], n)
        parts = self._parts(trainer, video, emb, mask, archs)
        distilling = (cfg.sampler == "sandwich" and cfg.inplace_distill
                      and trainer.step >= cfg.warmup_steps and len(archs) > 1)
        losses, extras = [], {}
        for micro in range(cfg.grad_accum):
            noised = [trainer.noised_inputs(p.video, p.emb, p.mask,
                                            micro + p.stream * cfg.grad_accum) for p in parts]
            teachers = [self._ema_prediction(trainer, inputs, p.archs[0])
                        if distilling and cfg.distill_teacher == "ema" else None
                        for p, (inputs, _, _) in zip(parts, noised)]
            for i in range(len(archs)):
                last = micro == cfg.grad_accum - 1 and i == len(archs) - 1
                step_loss = None
                for j, (part, (inputs, target, t)) in enumerate(zip(parts, noised)):
                    w = part.weight if len(parts) > 1 else None  # share of the samples
                    with trainer.autocast():
                        pred = trainer.forward(inputs, part.archs[i],
                                               sync=last and j == len(parts) - 1)
                        loss = trainer.objective.loss(pred, target, t).mean()
                        if distilling and i > 0:
                            kd = trainer.objective.loss(pred, teachers[j], t).mean()
                            kd_part = kd.detach() if w is None else kd.detach() * w
                            extras["distill_loss"] = extras.get("distill_loss", 0.0) + kd_part
                            total = loss + cfg.distill_weight * kd
                        else:
                            total = loss
                    if i == 0 and teachers[j] is None:
                        teachers[j] = pred.detach()
                    total = total if w is None else total * w
                    (total / (len(archs) * cfg.grad_accum)).backward()
                    part_loss = loss.detach() if w is None else loss.detach() * w
                    step_loss = part_loss if step_loss is None else step_loss + part_loss
                losses.append(step_loss)
        if "distill_loss" in extras:
            extras["distill_loss"] /= cfg.grad_accum * (len(archs) - 1)
        if parts[-1].stream:
            extras["image_clips"] = parts[-1].video.shape[0]
        macs = sum(training_macs(self.run.model, p.archs, p.video.shape[0] * cfg.grad_accum,
                                 frames=p.frames) for p in parts)
        return StepOutcome(losses, res, archs, floors, self.space.cost(archs[0]), extras,
                           train_macs=macs)

    def _parts(self, trainer, video: Tensor, emb: Tensor, mask: Tensor, archs: list[Arch]
               ) -> list[_Part]:
        """The step's video part and (``train.image_fraction``) image part: the last
        ``round(fraction × n)`` clips, one frame each (drawn per sample from the step's seed),
        run at frames = 1 without temporal attention."""
        n = video.shape[0]
        k = round(trainer.cfg.image_fraction * n)
        parts = []
        if k < n:
            parts.append(_Part(video[:n - k], emb[:n - k], mask[:n - k], archs,
                               (n - k) / n, None, 0))
        if k:
            rng = np.random.default_rng([trainer.cfg.seed, trainer.step, trainer.rank, 0x1A6E])
            frame = torch.as_tensor(rng.integers(0, video.shape[2], k), device=video.device)
            clips = video[n - k:]
            images = clips[torch.arange(k, device=video.device), :, frame].unsqueeze(2)
            parts.append(_Part(images, emb[n - k:], mask[n - k:],
                               [a.without("temporal_attn") for a in archs], k / n, 1, 1))
        return parts

    @torch.no_grad()
    def _ema_prediction(self, trainer, inputs: dict, arch: Arch) -> Tensor:
        """The EMA weights' prediction at ``arch`` (a frozen copy refreshed every step)."""
        if getattr(self, "_ema_model", None) is None:
            self._ema_model = self.build_model().to(trainer.device).requires_grad_(False)
            self._ema_model.load_state_dict(trainer.model.state_dict())
        trainer.ema.copy_to(self._ema_model.parameters())
        self._ema_model.eval()
        with trainer.autocast():
            return self._ema_model(**inputs, arch=arch).detach()

    def _encode_text(self, trainer, captions, b: int) -> tuple[Tensor, Tensor]:
        if not self.run.model.conditional:  # the model ignores text: no encoder needed
            d = trainer.device
            return (torch.zeros(b, 1, self.run.model.text_dim, device=d),
                    torch.ones(b, 1, dtype=torch.bool, device=d))
        return trainer.encode(captions)


# --------------------------------------------------------------------------------- latent
class LatentDiffusionTask(DiffusionTask):
    """The supernet on normalised latents of a frozen autoencoder (``train.autoencoder``)."""

    kind = "latent"

    def __init__(self, run) -> None:
        super().__init__(run)

        if run.train.image_fraction:
            raise ConfigError(f"train.image_fraction={run.train.image_fraction}: latent "
                              f"models encode whole clips (the autoencoder compresses time); "
                              f"joint image-video training is for pixel models")
        if run.train.autoencoder is None:
            raise ConfigError(f"model {run.model.name!r} is a latent model: pass "
                              f"autoencoder=PATH (a trained autoencoder run folder, checkpoint "
                              f"or autoencoder folder)")
        self.ae_config = check_latent_pair(run.model, None)
        ae, _ = load_autoencoder(run.train.autoencoder)
        check_latent_pair(run.model, ae.config, run.train.autoencoder)
        self.ae = ae
        self.codec = None

    @property
    def factors(self) -> tuple[int, int]:
        return self.ae.config.temporal_factor, self.ae.config.spatial_factor

    def dataset(self):
        return latent_clips(self.run, self.factors)

    def to_model_space(self, video: Tensor, resolution: int) -> Tensor:
        return self.codec.encode(resize_video(video, resolution * self.factors[1]))

    def start(self, trainer) -> None:
        """Load the run's codec (resumed) or estimate the latent stats and store the AE in
        ``OUT/autoencoder/`` (first start)."""
        folder = trainer.out / FOLDER
        self.ae = self.ae.to(trainer.device)
        if trainer.step > 0 and folder.is_dir():
            self.codec = load_codec(folder, trainer.device)
            return
        stats = estimate_stats(self.ae, self._stat_batches())
        self.codec = LatentCodec(self.ae, stats)
        if trainer.is_main:
            save_autoencoder(self.ae, folder, stats,
                             extra={"source": str(self.run.train.autoencoder)})

    def _stat_batches(self, clips: int = 32, batch: int = 4):
        """Training clips at the largest pixel resolution (deterministic: the first ``clips``)."""
        ds = self.dataset()
        idx = list(range(min(clips, len(ds))))
        for i in range(0, len(idx), batch):
            yield collate([ds[j] for j in idx[i:i + batch]])["video"]

    def state(self) -> dict:

        if self.codec is None:
            return {}
        return {"latent": {"autoencoder": FOLDER, **self.codec.stats.to_dict(),
                           "autoencoder_config": self.ae.config.to_dict()}}


def latent_clips(run, factors: tuple[int, int]):
    """The pixel clips a latent model of ``run`` trains on: its latent frames and largest
    latent side × the autoencoder's (temporal, spatial) ``factors``."""
    ft, fs = factors
    return build_dataset(run.data, run.model, frames=run.model.frames * ft,
                         resolution=max(run.model.resolutions) * fs)


def check_latent_pair(model_cfg, ae_cfg: AutoencoderConfig | None, source: str | None = None
                      ) -> AutoencoderConfig:
    """The AE config a latent UNet config names; with ``ae_cfg`` (a trained AE's), check that
    it has the same latent channels and factors. ConfigError names the mismatch."""
    try:
        named = load_autoencoder_config(model_cfg.autoencoder)
    except ConfigError as e:
        raise ConfigError(f"model {model_cfg.name!r}: autoencoder: {e}") from None
    if named.latent_channels != model_cfg.in_channels:
        raise ConfigError(f"model {model_cfg.name!r}: in_channels {model_cfg.in_channels} != "
                          f"autoencoder {named.name!r} latent_channels {named.latent_channels}")
    if ae_cfg is not None:
        mine = (ae_cfg.latent_channels, tuple(ae_cfg.downsample))
        want = (named.latent_channels, tuple(named.downsample))
        if mine != want:
            raise ConfigError(f"autoencoder={source}: its latent channels/factors {mine} do not "
                              f"match model {model_cfg.name!r}'s autoencoder {named.name!r} "
                              f"{want}")
    return named


# --------------------------------------------------------------------------------- autoencoder
class AutoencoderTrainee(nn.Module):
    """The trained module of an AE run: ``ae`` (+ ``disc``). ``forward`` returns the losses.

    Checkpoint keys are ``ae.*`` and ``disc.*``.
    """

    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        self.config = cfg
        self.ae = VideoAutoencoder(cfg)
        if cfg.disc_start is not None:
            self.disc = PatchDiscriminator3d(cfg.in_channels, cfg.disc_channels, cfg.disc_layers)

    def forward(self, video: Tensor, step: int, generator: torch.Generator | None = None,
                perceptual=None) -> dict[str, Tensor]:
        """video (B, 3, T, H, W) → {"loss": total to back-propagate, and its terms}."""
        cfg = self.config
        recon, post = self.ae(video, generator=generator)
        per_sample = video[0].numel()
        rec = (recon.float() - video.float()).abs().mean()
        kl = post.kl().flatten(1).sum(1).mean() / per_sample
        ae_loss = rec + cfg.kl_weight * kl
        out = {"rec": rec.detach(), "kl": kl.detach()}
        if perceptual is not None:
            b, c, t, h, w = video.shape
            frames = [v.transpose(1, 2).reshape(b * t, c, h, w) for v in (video, recon)]
            p = perceptual(*frames).float().mean()
            ae_loss = ae_loss + cfg.perceptual_weight * p
            out["perceptual"] = p.detach()
        total = ae_loss
        if hasattr(self, "disc") and step >= cfg.disc_start:
            self.disc.requires_grad_(False)  # the generator term trains only the AE
            g = -self.disc(recon).float().mean()
            self.disc.requires_grad_(True)
            ae_loss = ae_loss + cfg.disc_weight * g
            d = 0.5 * (torch.relu(1 - self.disc(video)).mean()
                       + torch.relu(1 + self.disc(recon.detach())).mean())
            total = ae_loss + d  # d's gradient reaches only the discriminator
            out.update(g=g.detach(), d=d.detach())
        out["loss"] = total
        out["ae_loss"] = ae_loss.detach()
        return out


class AutoencoderTask:
    """The video autoencoder: super-position only (one resolution per step, no arch)."""

    kind = "autoencoder"

    def __init__(self, run) -> None:
        self.run = run
        self.cfg: AutoencoderConfig = run.model
        self.floors = Floors(1.0, 1.0)
        self.perceptual = None
        if self.cfg.perceptual_weights is not None:  # no code runs unless the config says so
            self.perceptual = load_perceptual(self.cfg.perceptual_weights,
                                              trust_code=self.cfg.perceptual_trust_code)
        self._held_out: dict[int, Tensor] | None = None

    @property
    def full_params(self) -> int:
        return sum(autoencoder_cost(self.cfg, p, self.cfg.frames, self.cfg.resolutions[0]).params
                   for p in ("encoder", "decoder"))

    def build_model(self) -> nn.Module:
        return AutoencoderTrainee(self.cfg)

    def dataset(self):
        return build_dataset(self.run.data, self.cfg)

    def start(self, trainer) -> None:
        if self.perceptual is not None:
            self.perceptual = self.perceptual.to(trainer.device)

    def state(self) -> dict:
        return {}

    def resolution(self, step: int) -> int:
        """The step's resolution: a pure function of (seed, step), same on every rank."""
        rng = np.random.default_rng([self.run.train.seed, step, 0xAE])
        return int(rng.choice(self.cfg.resolutions))

    def backward(self, trainer, batch: dict) -> StepOutcome:
        cfg = trainer.cfg
        res = self.resolution(trainer.step)
        n = cfg.batch_for(res)
        video = resize_video(batch["video"][:n].to(trainer.device, non_blocking=True), res)
        losses, extras = [], {}
        for micro in range(cfg.grad_accum):  # posterior noise: a pure function of the step
            seed = np.random.default_rng([cfg.seed, trainer.step, trainer.rank, micro, 0xAE])
            g = torch.Generator().manual_seed(int(seed.integers(2 ** 62)))
            with trainer.autocast():
                out = trainer.forward({"video": video, "step": trainer.step, "generator": g,
                                        "perceptual": self.perceptual}, None,
                                       sync=micro == cfg.grad_accum - 1)
            (out["loss"] / cfg.grad_accum).backward()
            losses.append(out["ae_loss"])
            for k, v in out.items():
                if k not in ("loss", "ae_loss"):
                    extras[k] = extras.get(k, 0.0) + v.double() / cfg.grad_accum
        cost = sum((autoencoder_cost(self.cfg, p, self.cfg.frames, res)
                    for p in ("encoder", "decoder")), Cost(0, 0))
        return StepOutcome(losses, res, [None], self.floors, cost, extras,
                           train_macs=TRAINING_MACS_PER_FORWARD * cost.macs * n * cfg.grad_accum)

    def held_out(self, clips: int = 4) -> dict[int, Tensor]:
        """Held-out clips per resolution: the synthetic held-out split (as ``sned evaluate``),
        or the last ``clips`` videos of a folder dataset."""
        if self._held_out is None:

            data = self.run.data
            if data.kind == "synthetic":
                ds = SyntheticVideoDataset(clips, self.cfg.frames, max(self.cfg.resolutions),
                                           seed=50_000, split="held_out")
                idx = range(len(ds))
            else:
                ds = self.dataset()
                idx = range(max(0, len(ds) - clips), len(ds))
            video = collate([ds[i] for i in idx])["video"]
            self._held_out = {r: resize_video(video, r) for r in self.cfg.resolutions}
        return self._held_out

    def evaluate(self, trainer) -> dict:
        """Reconstruction PSNR / SSIM per resolution on the held-out clips."""
        ae = trainer.model.ae
        was = ae.training
        ae.eval()
        try:
            return {str(r): reconstruction_quality(ae, v)
                    for r, v in self.held_out().items()}
        finally:
            ae.train(was)


def write_eval(out: Path, step: int, metrics: dict) -> None:
    """Append ``{"step", **metrics}`` to ``out/eval.jsonl`` (rows past ``step`` are dropped)."""
    path = out / "eval.jsonl"
    rows = []
    if path.exists():
        rows = [r for r in path.read_text().splitlines()
                if r.strip() and json.loads(r)["step"] < step]
    rows.append(json.dumps({"step": step, **metrics}))
    atomic_write_text(path, "".join(r + "\n" for r in rows))
