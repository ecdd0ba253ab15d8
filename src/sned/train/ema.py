"""The EMA of the supernet weights: diffusers' ``EMAModel`` (its decay schedule, counters,
``shadow_params``, ``copy_to`` / ``state_dict`` and saving conventions), updated in ONE pass.

``EMAModel.step(foreach=True)`` computes ``s − (1 − d)·(s − p)`` as two foreach calls and a
full temporary the size of the weights; :meth:`LerpEMA.step` computes the same
``s + (1 − d)·(p − s)`` with ``torch._foreach_lerp_`` in place (no temporary, no host read).
Equal to diffusers' update up to float rounding (``tests/test_masked_adamw.py``).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from diffusers.training_utils import EMAModel


class LerpEMA(EMAModel):
    """``diffusers.training_utils.EMAModel`` whose :meth:`step` is one in-place lerp."""

    @torch.no_grad()
    def step(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        parameters = list(parameters)
        if any(_is_dtensor(s) for s in self.shadow_params):
            return super().step(parameters)  # FSDP2 shards: diffusers' DTensor-safe path
        self.optimization_step += 1
        decay = self.get_decay(self.optimization_step)
        self.cur_decay_value = decay
        trained = [(s, p) for s, p in zip(self.shadow_params, parameters) if p.requires_grad]
        frozen = [(s, p) for s, p in zip(self.shadow_params, parameters) if not p.requires_grad]
        if frozen:
            torch._foreach_copy_([s for s, _ in frozen], [p for _, p in frozen],
                                 non_blocking=True)
        if trained:
            torch._foreach_lerp_([s for s, _ in trained], [p for _, p in trained], 1 - decay)


def _is_dtensor(t: torch.Tensor) -> bool:
    return type(t).__name__ == "DTensor"
