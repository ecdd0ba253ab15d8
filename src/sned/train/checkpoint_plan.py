"""A gradient-checkpointing plan: which UNet levels are checkpointed, by what unit and policy.

The memory planner (:func:`sned.train.memory.plan_checkpointing`) chooses one; the Trainer
applies it to its :class:`~sned.models.unet.VideoUNet` (:meth:`CheckpointPlan.apply`), whose
``gradient_checkpointing`` / ``checkpoint_unit`` / ``checkpoint_policy`` attributes run it
(:mod:`sned.nn.checkpoint`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..arch import unet_blocks
from ..config import ConfigError, ModelConfig
from ..nn.checkpoint import POLICIES

UNITS = ("block", "layer")


@dataclass(frozen=True)
class CheckpointPlan:
    """How each UNet level is checkpointed: ``modes`` = ((level, unit, policy), ...) for the
    checkpointed levels (unit in :data:`UNITS`, policy in ``POLICIES``), by level; the empty
    plan is no checkpointing. ``everything``: every block (layers, full), for a model whose
    levels are not known (``train.gradient_checkpointing=true`` on a caller's task)."""

    modes: tuple[tuple[int, str, str], ...] = ()
    everything: bool = False

    def __bool__(self) -> bool:
        return bool(self.modes) or self.everything

    @classmethod
    def uniform(cls, cfg: ModelConfig, checkpointing, unit: str = "layer",
                policy: str = "full") -> "CheckpointPlan":
        """True (every level), False or a list of levels, all as ``unit`` / ``policy``."""
        if unit not in UNITS or policy not in POLICIES:
            raise ConfigError(f"checkpointing unit {unit!r} / policy {policy!r}: use one of "
                              f"{UNITS} / {POLICIES}")
        known = levels(cfg)
        chosen = (known if checkpointing is True else [] if checkpointing is False
                  else sorted(set(checkpointing)))
        if not set(chosen) <= set(known):
            raise ConfigError(f"checkpointing levels {chosen}: {cfg.name!r} has levels {known}")
        return cls(tuple((lv, unit, policy) for lv in chosen))

    def block_modes(self, cfg: ModelConfig) -> dict[int, tuple[str, str]]:
        """Diffusion block index → (unit, policy) of the checkpointed blocks."""
        by_level = {lv: (u, p) for lv, u, p in self.modes}
        return {i: by_level[s.level] for i, s in enumerate(unet_blocks(cfg))
                if s.level in by_level}

    def describe(self, cfg: ModelConfig | None) -> dict:
        """``checkpointing`` (False, True = every level, or the levels), ``checkpoint_unit`` and
        ``checkpoint_policy`` (one value, or level → value when they differ; None when off)."""
        if self.everything:
            return {"checkpointing": True, "checkpoint_unit": "layer",
                    "checkpoint_policy": "full"}
        if not self.modes:
            return {"checkpointing": False, "checkpoint_unit": None, "checkpoint_policy": None}
        lvls = [lv for lv, _, _ in self.modes]
        d = {"checkpointing": True if lvls == levels(cfg) else lvls}
        for key, k in (("checkpoint_unit", 1), ("checkpoint_policy", 2)):
            values = {str(m[0]): m[k] for m in self.modes}
            d[key] = next(iter(values.values())) if len(set(values.values())) == 1 else values
        return d

    def apply(self, model: torch.nn.Module, cfg: ModelConfig | None) -> None:
        """Set ``model``'s (a VideoUNet's) ``gradient_checkpointing`` (True, False or the block
        indices), ``checkpoint_unit`` and ``checkpoint_policy`` (one value or per block)."""
        if self.everything or not self.modes:
            model.gradient_checkpointing = bool(self.everything)
            return
        modes = self.block_modes(cfg)
        n = len(unet_blocks(cfg))
        model.gradient_checkpointing = True if len(modes) == n else frozenset(modes)
        for attr, k in (("checkpoint_unit", 0), ("checkpoint_policy", 1)):
            values = {i: m[k] for i, m in modes.items()}
            setattr(model, attr, next(iter(values.values())) if len(set(values.values())) == 1
                    else values)


def levels(cfg: ModelConfig) -> list[int]:
    """The resolution levels of ``cfg``'s UNet (0 = full resolution)."""
    if not isinstance(cfg, ModelConfig):
        raise ConfigError(f"memory estimates are for diffusion UNets; {cfg.name!r} is an "
                          f"autoencoder config")
    return sorted({s.level for s in unet_blocks(cfg)})


def checkpoint_modes(unit: str = "auto", policy: str = "auto") -> list[tuple[str, str]]:
    """The (unit, policy) ways a level may be checkpointed under ``train.checkpoint_unit`` /
    ``train.checkpoint_policy`` (``auto`` = any)."""
    if unit not in ("auto", *UNITS):
        raise ConfigError(f"train.checkpoint_unit: invalid value {unit!r}; use auto, block or "
                          f"layer")
    if policy not in ("auto", *POLICIES):
        raise ConfigError(f"train.checkpoint_policy: invalid value {policy!r}; use auto, full "
                          f"or selective")
    return [(u, p) for u in (UNITS if unit == "auto" else (unit,))
            for p in (POLICIES if policy == "auto" else (policy,))]
