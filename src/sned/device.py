"""The one place a ``--device`` value becomes a ``torch.device``."""

from __future__ import annotations

import torch


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → the GPU when there is one, else the CPU; ``"cpu"``, ``"cuda"``,
    ``"cuda:N"`` as given. Raises ValueError naming the value when it is unknown or asks for a
    GPU this machine does not have."""
    if isinstance(name, torch.device):
        name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device {name!r}: not a device; use auto, cpu or cuda[:N]") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: no CUDA GPU is available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} "
                             f"CUDA GPU(s)")
    elif dev.type != "cpu":
        raise ValueError(f"--device {name}: unsupported; use auto, cpu or cuda[:N]")
    return dev
