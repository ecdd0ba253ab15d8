"""Training checkpoints: atomic folders of safetensors plus one JSON of scalar state.

Layout of ``OUT/checkpoints/step-000100/``::

    model.safetensors       supernet weights
    ema.safetensors         EMA weights (same names)
    optimizer.safetensors   exp_avg/<name>, exp_avg_sq/<name>, step/<name>
    rng.safetensors         torch CPU (and CUDA) generator states
    state.json              step, lr schedule, EMA counters, python/numpy RNG, run config,
                            ``digests`` of the .safetensors files (verified on every load)

``OUT/checkpoints/latest`` is a symlink to the newest. A folder is written under a temporary
name and renamed into place, so a crash never leaves a half checkpoint that looks complete.
Nothing is ever unpickled on load; every weight file is checked against its recorded digest
and for non-finite values (:func:`sned.store.files.load_safetensors`).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from .files import (CheckpointError, atomic_folder, check_state_dict, expected_digest,
                    load_safetensors, read_format_json, save_safetensors)

FORMAT = "sned-train-checkpoint"


def load_checkpoint_file(path: Path, device="cpu") -> dict[str, torch.Tensor]:
    """A checkpoint's ``*.safetensors`` file, verified against the digest its ``state.json``
    records (a checkpoint written before digests loads with a note) and for non-finite values."""
    record = path.parent / "state.json"
    digests = read_format_json(record, FORMAT, "sned training checkpoint").get("digests")
    return load_safetensors(path, device, expected_digest(path, digests, record))


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    py = random.getstate()
    scalars = {"python": [py[0], list(py[1]), py[2]],
               "numpy": _jsonable(np.random.get_state())}
    return tensors, scalars


def set_rng_state(tensors: dict[str, torch.Tensor], scalars: dict) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    if torch.cuda.is_available():
        cuda = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    v, state, gauss = scalars["python"]
    random.setstate((v, tuple(state), gauss))
    np_state = scalars["numpy"]
    np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32), *np_state[2:]))


def _jsonable(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (tuple, list)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


def training_tensors(model: torch.nn.Module, optimizer, ema) -> dict[str, dict[str, torch.Tensor]]:
    """CPU copies of the model, EMA and optimizer tensors by parameter name, as
    :func:`write_checkpoint` stores them (``{"model": …, "ema": …, "optimizer": …}``) — for a
    model in one process (or a DDP replica). A snapshot: training may go on while it is written.
    """
    names = {p: n for n, p in model.named_parameters()}
    out = {"model": _cpu_copy(model.state_dict())}
    if ema is not None:
        out["ema"] = _cpu_copy({n: s for (n, _), s in zip(model.named_parameters(),
                                                          ema.shadow_params)})
    opt = {}
    for p, st in optimizer.state.items():
        for k, v in st.items():
            opt[f"{k}/{names[p]}"] = v if torch.is_tensor(v) else torch.tensor(v)
    out["optimizer"] = _cpu_copy(opt)
    return out


def _cpu_copy(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}


def snapshot(step: int, tensors: dict[str, dict[str, torch.Tensor]], lr_scheduler, ema,
             extra: dict) -> dict:
    """Everything a checkpoint of ``step`` holds, taken now (RNG states included): the
    ``tensors`` of :func:`training_tensors` plus ``rng`` and the JSON ``state``."""
    rng_t, rng_s = rng_state()
    state = {"format": FORMAT, "step": step, "rng": rng_s,
             "lr_scheduler": lr_scheduler.state_dict(),
             "ema": None if ema is None else {"optimization_step": ema.optimization_step},
             **extra}
    return {"step": step, "tensors": {**tensors, "rng": _cpu_copy(rng_t)},
            "state": json.loads(json.dumps(state, default=_jsonable))}


def write_checkpoint(root: Path, snap: dict, keep_last: int) -> Path:
    """Write a :func:`snapshot` to ``root/step-NNNNNNN`` atomically, point ``root/latest`` at
    it, prune old ones (only file I/O: safe in a background thread)."""
    final = root / f"step-{snap['step']:07d}"
    with atomic_folder(final) as tmp:
        digests = {f"{name}.safetensors": save_safetensors(tensors, tmp / f"{name}.safetensors")
                   for name, tensors in snap["tensors"].items()}
        (tmp / "state.json").write_text(json.dumps({**snap["state"], "digests": digests},
                                                   indent=1))
    link_tmp = root / f".latest-{os.getpid()}"
    if link_tmp.is_symlink() or link_tmp.exists():
        link_tmp.unlink()
    link_tmp.symlink_to(final.name)
    os.replace(link_tmp, root / "latest")
    for old in list_checkpoints(root)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def save_checkpoint(root: Path, step: int, model: torch.nn.Module, optimizer, ema,
                    lr_scheduler, extra: dict, keep_last: int) -> Path:
    """Write ``root/step-NNNNNNN`` atomically, point ``root/latest`` at it, prune old ones."""
    snap = snapshot(step, training_tensors(model, optimizer, ema), lr_scheduler, ema, extra)
    return write_checkpoint(root, snap, keep_last)


class BackgroundWriter:
    """Writes one checkpoint at a time in a thread, so rank 0 rejoins the other ranks at once
    instead of keeping them at a barrier (or a collective) for the whole write.

    ``submit`` waits for the previous write first; ``wait`` joins it. An error in the thread
    is raised by the next ``submit`` / ``wait``. ``enabled=False`` writes in the caller.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._thread = None
        self._error: BaseException | None = None

    def submit(self, fn, *args) -> None:
        self.wait()
        if not self.enabled:
            fn(*args)
            return
        import threading

        def run():
            try:
                fn(*args)
            except BaseException as e:  # noqa: BLE001 - re-raised in the training thread
                self._error = e

        self._thread = threading.Thread(target=run, name="sned-checkpoint", daemon=False)
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise err


def step_of(folder: Path) -> int | None:
    """The step number of a ``step-N`` folder name (any number of digits), else None."""
    m = re.fullmatch(r"step-(\d+)", Path(folder).name)
    return int(m.group(1)) if m else None


def list_checkpoints(root: Path) -> list[Path]:
    """The ``step-N`` folders under ``root``, oldest first by step *number* (not by name)."""
    found = [p for p in Path(root).glob("step-*") if p.is_dir() and step_of(p) is not None]
    return sorted(found, key=step_of)


def is_complete(folder: Path) -> bool:
    """Whether ``folder`` holds every file of a checkpoint and a readable ``state.json``."""
    if not all((folder / f).is_file() for f in ("model.safetensors", "optimizer.safetensors",
                                                 "rng.safetensors")):
        return False
    try:
        state = read_state(folder)
    except CheckpointError:
        return False
    return state.get("ema") is None or (folder / "ema.safetensors").is_file()


def newest_complete(root: Path) -> Path | None:
    """The complete checkpoint with the highest step under ``root``, or None."""
    done = [p for p in list_checkpoints(root) if is_complete(p)]
    return done[-1] if done else None


def read_state(folder: Path) -> dict:
    return read_format_json(folder / "state.json", FORMAT, "sned training checkpoint")


def load_weights(folder: Path, model: torch.nn.Module, ema: bool = False) -> None:
    """Load model (or EMA) weights of a checkpoint into ``model`` (strict, named errors)."""
    file = folder / ("ema.safetensors" if ema else "model.safetensors")
    state = load_checkpoint_file(file)
    expected = model.state_dict()
    if ema:  # EMA holds parameters only; buffers come from the model weights
        state = {**{k: v for k, v in load_checkpoint_file(folder / "model.safetensors").items()
                    if k not in state}, **state}
    check_state_dict(expected, state, str(file), "the model")
    model.load_state_dict(state)


def load_training_state(folder: Path, model, optimizer, ema, lr_scheduler, layout=None) -> dict:
    """Restore everything :func:`save_checkpoint` wrote; returns the JSON state.

    ``layout`` places full tensors where training keeps them (:class:`sned.train.parallel.
    Parallel`: FSDP shards); None = a model in one process (or a DDP replica)."""
    state = read_state(folder)
    device = next(model.parameters()).device
    if layout is None:
        load_weights(folder, model)
        params = dict(model.named_parameters())
        shard = like_param = (lambda name, full: full)
    else:
        file = folder / "model.safetensors"
        weights = load_checkpoint_file(file)
        check_state_dict(layout.expected_state(), weights, str(file), "the model")
        layout.load_model(weights)
        params, shard, like_param = layout.optimizer_params(), layout.shard, layout.like_param
    opt = load_checkpoint_file(folder / "optimizer.safetensors", device)
    for key, value in opt.items():
        kind, name = key.split("/", 1)
        if name not in params:
            raise CheckpointError(f"{folder / 'optimizer.safetensors'}: unknown parameter {name}")
        p = params[name]
        optimizer.state[p][kind] = value.cpu() if kind == "step" else shard(name, value)
    if ema is not None:
        ema_state = load_checkpoint_file(folder / "ema.safetensors", device)
        ema.shadow_params = [like_param(n, ema_state[n].clone())
                             for n, _ in model.named_parameters()]
        ema.optimization_step = state["ema"]["optimization_step"]
    lr_scheduler.load_state_dict(state["lr_scheduler"])
    set_rng_state(load_checkpoint_file(folder / "rng.safetensors"), state["rng"])
    return state


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint folder from a folder, a run dir (uses checkpoints/latest) or a symlink.

    A ``latest`` link whose target is gone (pruned, or a crash between writes) is an error
    that names the target and the newest complete checkpoint to use instead."""
    p = Path(path)
    latest = p / "checkpoints" / "latest"
    if p.name == "latest" and p.is_symlink():
        latest = p
    if latest.is_symlink() and not latest.exists():
        newest = newest_complete(latest.parent)
        hint = (f"; the newest complete checkpoint is {newest}" if newest is not None
                else "; no complete checkpoint is left")
        raise CheckpointError(f"{latest} points to {os.readlink(latest)!r}, which does not "
                              f"exist{hint}")
    if latest.exists():
        p = latest
    if not p.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    return p.resolve()
