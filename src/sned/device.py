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


# --------------------------------------------------------------------------------- CUDA options
CUBLAS_WORKSPACE = ":4096:8"
"""cuBLAS's workspace setting for deterministic results (what ``torch.use_deterministic_
algorithms`` asks for on CUDA ≥ 10.2)."""


def deterministic_env(deterministic: bool, environ: dict[str, str]) -> dict[str, str]:
    """Environment variables to set before CUDA starts for ``deterministic`` mode: cuBLAS
    needs ``CUBLAS_WORKSPACE_CONFIG`` (``:4096:8`` unless the user already set it), else its
    matmuls raise under ``torch.use_deterministic_algorithms(True)``. Empty when not needed."""
    if not deterministic or environ.get("CUBLAS_WORKSPACE_CONFIG"):
        return {}
    return {"CUBLAS_WORKSPACE_CONFIG": CUBLAS_WORKSPACE}


def tf32_flags(allow_tf32: bool, device_type: str) -> dict[str, bool] | None:
    """The ``torch.backends`` TF32 switches for a run on ``device_type``: TF32 tensor cores
    for fp32 matmuls (``cuda.matmul.allow_tf32``) and cuDNN convolutions
    (``cudnn.allow_tf32``) when ``allow_tf32`` on CUDA; None on other devices (nothing to
    set). The I3D detector turns TF32 off around its own forward whatever is set here."""
    if device_type != "cuda":
        return None
    return {"matmul": bool(allow_tf32), "cudnn": bool(allow_tf32)}


def apply_tf32(flags: dict[str, bool] | None) -> None:
    """Set the switches :func:`tf32_flags` chose (None: leave everything as it is)."""
    if flags is None:
        return
    torch.backends.cuda.matmul.allow_tf32 = flags["matmul"]
    torch.backends.cudnn.allow_tf32 = flags["cudnn"]


def sampling_autocast(precision: str | None, device: torch.device) -> str | None:
    """The autocast dtype of sampling: ``"auto"`` → ``"bf16"`` on CUDA, None (fp32) elsewhere;
    ``"bf16"`` / ``"fp16"`` as given; None / ``"fp32"`` → None."""
    if precision == "auto":
        return "bf16" if torch.device(device).type == "cuda" else None
    if precision in (None, "fp32", "no"):
        return None
    return precision
