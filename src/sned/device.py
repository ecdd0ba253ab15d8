"""The one place a device value (``--device``, ``train.device``) becomes a ``torch.device``."""

from __future__ import annotations

from contextlib import contextmanager

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


_MATMUL_LAYERS = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)


@contextmanager
def matmul_weights_in(model: torch.nn.Module, dtype: torch.dtype | None, keep: bool = False):
    """Inside: the fp32 weights and biases of ``model``'s linear and conv layers are ``dtype``
    copies, cast ONCE — instead of by autocast in every forward (every denoising step) — with
    bitwise the same outputs under ``torch.autocast(dtype=dtype)``: autocast would round the
    same fp32 values to ``dtype`` for the same kernels. Norms, embeddings and other
    parameters stay fp32 (autocast runs them in fp32). On exit the fp32 tensors are back.

    ``keep``: keep the copies on the model for the next call while its weights are unchanged
    (serving an extracted model: a compiled / CUDA-graph model sees the same tensors each
    call). ``dtype`` None or fp32: nothing happens."""
    if dtype is None or dtype == torch.float32:
        yield model
        return
    params = [p for m in model.modules() if isinstance(m, _MATMUL_LAYERS)
              for p in (m.weight, m.bias)
              if p is not None and p.dtype == torch.float32 and type(p.data) is torch.Tensor]
    versions = tuple(p._version for p in params)
    cache = model.__dict__.get("_sned_cast")
    if cache is not None and cache[0] == (dtype, versions, len(params)):
        casts = cache[1]
    else:
        casts = [p.data.to(dtype) for p in params]
        if keep:
            model.__dict__["_sned_cast"] = ((dtype, versions, len(params)), casts)
    originals = [p.data for p in params]
    for p, c in zip(params, casts):
        p.data = c
    try:
        yield model
    finally:
        for p, d in zip(params, originals):
            p.data = d


@contextmanager
def repeated_shapes(device: torch.device):
    """Inside: ``torch.backends.cudnn.benchmark`` on for CUDA work whose shapes repeat (every
    denoising step of a sampling run: an extracted model, a fixed arch or a schedule's
    segments), so cuDNN times its algorithms once per shape and reuses the fastest; the
    previous setting is back on exit (no global side effect). Off under deterministic
    algorithms (benchmarking may pick non-deterministic kernels); nothing on other devices."""
    if device.type != "cuda" or torch.are_deterministic_algorithms_enabled():
        yield
        return
    cudnn = torch.backends.cudnn
    with cudnn.flags(enabled=cudnn.enabled, benchmark=True, deterministic=cudnn.deterministic,
                     allow_tf32=cudnn.allow_tf32):
        yield
