"""Run configuration for ``sned train``: model, diffusion, data and training sections.

A run config is a YAML file with up to four sections::

    model: tiny-base            # built-in name, YAML path, or an inline mapping
    diffusion: {prediction_type: v_prediction, beta_schedule: cosine}
    data: {kind: synthetic, num_videos: 512}
    train: {steps: 1000, batch_size: 8, sampler: sandwich}

or just a model config name/path (everything else at defaults). Overrides are
``section.key=value`` (``train.lr=2e-4``, ``model.frames=4``, ``data.root=/videos``); a bare
``key=value`` is looked up in the train section. Unknown sections or keys are errors naming them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..arch import ArchError
from ..config import ModelConfig, load_config_dict
from ..config_parsing import ConfigError, parse_override, read_yaml, section_from_dict, set_key
from ..data.config import DataConfig
from ..diffusion import DiffusionConfig
from ..models.autoencoder import load_model_config
from ..space import parse_preset

SECTIONS = ("model", "diffusion", "data", "train")
SAMPLERS = ("cycle", "uniform", "sandwich")
DRAWS = ("descent", "uniform")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and supernet-sampling settings (SNED Algorithm 1).

    Attributes:
        steps: total optimizer steps (a resumed run stops at the same total).
        batch_size: clips per optimizer step per rank (per micro-batch).
        batch_size_per_resolution: ``{resolution: batch}`` overrides so memory stays balanced.
        grad_accum: micro-batches per optimizer step (same arch and resolution).
        lr / weight_decay / betas / eps: AdamW; peak lr 1e-4 as in the paper.
        lr_warmup_steps: linear learning-rate warm-up.
        lr_schedule: after the warm-up, ``cosine`` (default: decay to ``lr_floor`` × lr at the
            last step, as BigNAS / AttentiveNAS) or ``constant`` (the paper). Supernet and
            standalone (``fixed_arch``) runs use the same schedule.
        lr_floor: the cosine schedule's final fraction of ``lr`` (BigNAS: ≈ 5 %).
        grad_clip: max global grad norm (0 = off).
        exact_freeze: masked AdamW that leaves inactive weights, moments and decay untouched;
            False = plain AdamW (ablation).
        adam_counts: exact freezing's step counts: ``element`` (default: each element's
            moments and bias correction advance only when it is active) or ``tensor`` (one
            count per parameter tensor; the ablation).
        update_impl: ``fused`` (default: masked AdamW over dense full tensors with broadcast
            masks and compact counts, EMA by one lerp) or ``legacy`` (the previous slice-based
            update with full-size counts and diffusers' two-pass EMA; kept for the
            old-vs-new benchmarks, ``benchmarks/bench_step_ops.py``).
        sampler: ``cycle`` (default, size-aware: one arch per step, in turn the largest, a
            random draw, the smallest at the floors, a random draw), ``uniform`` (the paper:
            every layer's ratio and every block's components drawn independently — sizes pile
            up in the middle) or ``sandwich`` (largest + smallest + k random per step).
            "Smallest" is the smallest arch the step's floors allow with the components preset
            S keeps (:meth:`~sned.train.arch_sampler.ArchSampler.smallest`).
        draw: how ``cycle`` and ``sandwich`` draw their random archs: ``descent`` (default:
            the served family — the :meth:`~sned.space.SearchSpace.descent` arch at a
            parameter fraction drawn uniformly between the smallest's and the largest's,
            :meth:`~sned.space.SearchSpace.family_arch`) or ``uniform`` (per-layer uniform,
            as the ``uniform`` sampler).
        fixed_arch: train one arch only — a preset (``S``/``M``/``L``/``B`` or a fraction
            such as ``0.75``, :func:`sned.space.parse_preset`; stored as its label) or an arch
            JSON file; the resolution is still drawn per step from the model's resolutions.
            With exact freezing this is training that static subnet alone. None = supernet.
        sandwich_k: random archs per sandwich step.
        inplace_distill: every sampler — after the sampling warm-up, every arch a step trains
            other than the largest (under the resolution's cap) also regresses the teacher's
            prediction on the same full batch: loss = ground truth + ``distill_weight`` ×
            distillation (before it, ground truth only: the teacher is untrained). A step
            that does not train the largest runs the teacher's forward without gradient; its
            MACs are counted in ``train_macs``. Not for ``fixed_arch`` runs.
        distill_weight: weight of the distillation term of the children.
        distill_teacher: ``largest`` (the largest arch with the current weights: in place)
            or ``ema`` (the EMA weights at the largest arch; needs ``ema_decay`` > 0).
        parent_fraction: the once-for-all route inside one run: the first
            ``round(parent_fraction × steps)`` steps train only the largest arch (the parent),
            then the sampling warm-up (``warmup_steps``, counted from the parent phase's end)
            and the supernet phase shrink it with distillation. 0 = off.
        warmup_steps: sampling warm-up length (paper: 30,000); 0 = off.
        warmup_stages: number of equal steps the floors take from 100 % to the final floors.
        final_min_ratio / final_min_keep: floors after warm-up (paper: 40 %).
        cfg_drop_prob: probability of dropping the caption (classifier-free guidance).
        ema_decay: EMA decay of the supernet weights (0 = no EMA).
        mixed_precision: ``auto`` (bf16 on CUDA, fp32 on CPU), ``bf16`` or ``no``.
        gradient_checkpointing: recompute activations in backward instead of keeping them:
            ``true`` (every UNet level, each in the way that needs the least memory),
            ``false`` or ``auto`` (off when the memory estimate of :mod:`sned.train.memory`
            fits the device — GPU memory, or RAM on CPU — else the levels and ways with the
            least recompute that fit).
        checkpoint_unit: ``block`` (a diffusion block at once), ``layer`` (each ResBlock,
            attention and feed-forward alone) or ``auto`` (the planner's choice per level).
        checkpoint_policy: ``full`` (recompute every op), ``selective`` (keep conv, matmul
            and attention outputs; recompute norms, activations, casts) or ``auto``.
        allow_tf32: TF32 tensor cores for fp32 matmuls and convolutions on CUDA (the fp32
            parts of a bf16 run, or an fp32 run); no effect on CPU.
        seed / deterministic: reproducibility (deterministic algorithms on CPU).
        log_every / checkpoint_every / keep_last: logging and checkpoint cadence.
        nan_patience: abort after this many non-finite losses in a row.
        device: ``auto``, ``cpu`` or ``cuda``.
        parallel: under ``torchrun``: ``ddp`` (full replicas) or ``fsdp`` (FSDP2 shards of
            parameters, gradients, optimizer state and EMA; :mod:`sned.train.parallel`).
            Checkpoints are the same files in both modes (and in one process).
        async_checkpoint: rank 0 writes checkpoints in a background thread from a CPU snapshot
            (the other ranks never wait for the write; the next save waits for the last).
        autoencoder: latent models only — the trained autoencoder (run folder, checkpoint or
            autoencoder folder) whose latents the supernet learns to denoise.
        init_from: start the supernet from a trained model (run folder, checkpoint or model
            folder of a supernet or an extracted model with the same spatial structure: an
            image model, or a video model of the family such as a ``fixed_arch=B`` run; see
            :mod:`sned.train.transfer`). Applies at step 0 only; a resumed run keeps its weights.
        image_fraction: share of each batch trained as images (joint image-video training):
            that many clips give one frame each, run with the temporal layers off (frames = 1,
            the arch without temporal attention). 0 = videos only.
    """

    steps: int = 1000
    batch_size: int = 8
    batch_size_per_resolution: dict[int, int] = field(default_factory=dict)
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    lr_warmup_steps: int = 0
    lr_schedule: str = "cosine"
    lr_floor: float = 0.05
    grad_clip: float = 1.0
    exact_freeze: bool = True
    adam_counts: str = "element"
    update_impl: str = "fused"
    sampler: str = "cycle"
    draw: str = "descent"
    fixed_arch: str | float | None = None
    sandwich_k: int = 2
    inplace_distill: bool = True
    distill_weight: float = 1.0
    distill_teacher: str = "largest"
    parent_fraction: float = 0.0
    warmup_steps: int = 30000
    warmup_stages: int = 6
    final_min_ratio: float = 0.4
    final_min_keep: float = 0.4
    cfg_drop_prob: float = 0.1
    ema_decay: float = 0.9999
    mixed_precision: str = "auto"
    gradient_checkpointing: bool | str = "auto"
    checkpoint_unit: str = "auto"
    checkpoint_policy: str = "auto"
    allow_tf32: bool = True
    seed: int = 0
    deterministic: bool = False
    log_every: int = 10
    checkpoint_every: int = 500
    keep_last: int = 3
    nan_patience: int = 5
    device: str = "auto"
    parallel: str = "ddp"
    async_checkpoint: bool = True
    autoencoder: str | None = None
    init_from: str | None = None
    image_fraction: float = 0.0

    def __post_init__(self) -> None:
        checks = [
            ("steps", self.steps >= 1), ("batch_size", self.batch_size >= 1),
            ("grad_accum", self.grad_accum >= 1), ("lr", self.lr > 0),
            ("sampler", self.sampler in SAMPLERS), ("draw", self.draw in DRAWS),
            ("parent_fraction", 0 <= self.parent_fraction < 1),
            ("lr_schedule", self.lr_schedule in ("constant", "cosine")),
            ("lr_floor", 0 <= self.lr_floor <= 1),
            ("adam_counts", self.adam_counts in ("element", "tensor")),
            ("update_impl", self.update_impl in ("fused", "legacy")),
            ("distill_weight", self.distill_weight >= 0),
            ("distill_teacher", self.distill_teacher in ("largest", "ema")),
            ("sandwich_k", self.sandwich_k >= 0), ("warmup_steps", self.warmup_steps >= 0),
            ("warmup_stages", self.warmup_stages >= 1),
            ("final_min_ratio", 0 < self.final_min_ratio <= 1),
            ("final_min_keep", 0 <= self.final_min_keep <= 1),
            ("cfg_drop_prob", 0 <= self.cfg_drop_prob <= 1),
            ("ema_decay", 0 <= self.ema_decay < 1),
            ("mixed_precision", self.mixed_precision in ("auto", "bf16", "no")),
            ("checkpoint_every", self.checkpoint_every >= 1), ("keep_last", self.keep_last >= 1),
            ("nan_patience", self.nan_patience >= 1), ("log_every", self.log_every >= 1),
            ("device", self.device in ("auto", "cpu", "cuda")),
            ("gradient_checkpointing", self.gradient_checkpointing in (True, False, "auto")),
            ("checkpoint_unit", self.checkpoint_unit in ("auto", "block", "layer")),
            ("checkpoint_policy", self.checkpoint_policy in ("auto", "full", "selective")),
            ("parallel", self.parallel in ("ddp", "fsdp")),
            ("image_fraction", 0.0 <= self.image_fraction <= 1.0),
        ]
        for key, ok in checks:
            if not ok:
                raise ConfigError(f"train.{key}: invalid value {getattr(self, key)!r}")
        if self.fixed_arch is not None:
            object.__setattr__(self, "fixed_arch", fixed_arch_spec(self.fixed_arch))
        if self.fixed_arch is not None and self.sampler == "sandwich":
            raise ConfigError(f"train.fixed_arch={self.fixed_arch!r} trains one arch; "
                              f"train.sampler={self.sampler!r} does not apply (use cycle or "
                              f"uniform)")
        if self.fixed_arch is not None and self.parent_fraction:
            raise ConfigError(f"train.parent_fraction={self.parent_fraction} grows a supernet "
                              f"from its largest arch; train.fixed_arch={self.fixed_arch!r} "
                              f"trains one arch")
        if self.distill_teacher == "ema" and self.ema_decay == 0:
            raise ConfigError("train.distill_teacher='ema' needs train.ema_decay > 0")
        for res, b in self.batch_size_per_resolution.items():
            if b < 1:
                raise ConfigError(f"train.batch_size_per_resolution[{res}] must be >= 1 (got {b})")

    def batch_for(self, resolution: int) -> int:
        return self.batch_size_per_resolution.get(resolution, self.batch_size)


def fixed_arch_spec(value: str | float) -> str:
    """``train.fixed_arch`` as stored: a preset's label (``"S"``, ``"0.75"``; through the one
    parser :func:`sned.space.parse_preset`) or, for any other text, an arch JSON file's path
    (read and validated by the arch sampler). A number outside (0, 1] — or a bool, list, … — is
    a ConfigError naming the value."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigError(f"train.fixed_arch: invalid value {value!r}; expected a preset (S, M, "
                          f"L, B or a fraction in (0, 1]) or an arch JSON file")
    try:
        return parse_preset(value)[0]
    except ArchError as e:
        try:
            float(value)
        except ValueError:
            return value  # not a number: an arch JSON file
        raise ConfigError(f"train.fixed_arch={value!r}: {e}") from None


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig
    diffusion: DiffusionConfig = DiffusionConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()

    def __post_init__(self) -> None:
        for res in self.train.batch_size_per_resolution:
            if res not in self.model.resolutions:
                raise ConfigError(f"train.batch_size_per_resolution: resolution {res} is not in "
                                  f"model {self.model.name!r} resolutions "
                                  f"{list(self.model.resolutions)}")

    def to_dict(self) -> dict[str, Any]:
        train = dataclasses.asdict(self.train)
        train["batch_size_per_resolution"] = {str(k): v for k, v in
                                              self.train.batch_size_per_resolution.items()}
        train["betas"] = list(self.train.betas)
        return {"model": self.model.to_dict(), "diffusion": dataclasses.asdict(self.diffusion),
                "data": dataclasses.asdict(self.data), "train": train}


def load_run_config(config: str | Path | dict, overrides: list[str] | None = None) -> RunConfig:
    """A RunConfig from a model config name/path, a run YAML file or a dict, plus overrides."""
    source = str(config)
    if isinstance(config, dict):
        raw = dict(config)
    else:
        p = Path(config)
        raw_file = read_yaml(p) if p.is_file() else None
        if isinstance(raw_file, dict) and set(raw_file) & set(SECTIONS) and \
                set(raw_file) <= set(SECTIONS):
            raw = raw_file
        else:
            raw = {"model": str(config)}
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{source}: unknown section {unknown[0]!r}; sections are {SECTIONS}")
    model_raw = raw.get("model")
    if model_raw is None:
        raise ConfigError(f"{source}: the 'model' section is required")
    if isinstance(model_raw, str):
        model_raw, _ = load_config_dict(model_raw)
    for name in SECTIONS:
        value = model_raw if name == "model" else raw.get(name)
        if value is not None and not isinstance(value, dict):
            raise ConfigError(f"{source}: section {name!r} must be a mapping (got {value!r})")
    sections = {"model": dict(model_raw), **{k: dict(raw.get(k) or {}) for k in SECTIONS[1:]}}
    if isinstance(sections["model"].get("diffusion"), dict):  # the model's run defaults
        sections["diffusion"] = {**sections["model"].pop("diffusion"), **sections["diffusion"]}
    for item in overrides or []:
        key, value = parse_override(item)
        if key.split(".", 1)[0] not in SECTIONS:
            key = f"train.{key}"
        set_key(sections, key, value, item)
    model = load_model_config(sections["model"], source=f"{source} (model section)")
    train = sections["train"]
    if "batch_size_per_resolution" in train and train["batch_size_per_resolution"] is None:
        train["batch_size_per_resolution"] = {}
    return RunConfig(model=model,
                     diffusion=section_from_dict(DiffusionConfig, sections["diffusion"],
                                                 "diffusion", source),
                     data=DataConfig.from_dict(sections["data"], source),
                     train=section_from_dict(TrainConfig, train, "train", source))
