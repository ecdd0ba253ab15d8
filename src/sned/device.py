"""The one place a device value (``--device``, ``train.device``) becomes a ``torch.device``."""

from __future__ import annotations

import torch


def resolve_device(name: str | torch.device = "auto", *, flag: str = "--device",
                   local_rank: int | None = None) -> torch.device:
    """``"auto"`` → the GPU when there is one, else the CPU; ``"cpu"``, ``"cuda"``,
    ``"cuda:N"`` as given. Under torchrun pass ``local_rank``: a bare ``cuda`` / ``auto`` then
    means this rank's GPU, which becomes the current CUDA device. Raises ValueError naming
    ``flag`` and the value when it is unknown or asks for a GPU this machine does not have."""
    if isinstance(name, torch.device):
        name = str(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"{flag} {name!r}: not a device; use auto, cpu or cuda[:N]") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{flag} {name}: no CUDA GPU is available on this machine; use "
                             f"cpu (or auto)")
        if dev.index is None and local_rank is not None:
            dev = torch.device("cuda", local_rank)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{flag} {name}: this machine has {torch.cuda.device_count()} "
                             f"CUDA GPU(s)")
        if local_rank is not None:
            torch.cuda.set_device(dev)
    elif dev.type != "cpu":
        raise ValueError(f"{flag} {name}: unsupported; use auto, cpu or cuda[:N]")
    return dev
