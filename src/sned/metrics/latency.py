"""Latency: robust timing of a callable, one denoiser forward, and a per-device lookup table.

* :func:`measure_latency` — median milliseconds over ``repeats`` calls after ``warmup`` calls;
  CUDA events + synchronize on GPU, ``time.perf_counter`` on CPU.
* :func:`denoiser_latency` — one denoiser forward (a supernet under an arch, or a static model).
* :class:`LatencyTable` — measured latencies keyed by (config, arch, resolution, frames, batch,
  dtype) for one device, saved to a JSON file and reused, so a search can use latency as a
  constraint without re-measuring archs (``table.latency_fn(...)``).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from ..arch import Arch

__all__ = ["LatencyStats", "LatencyTable", "arch_key", "denoiser_latency", "device_name",
           "latency_stats", "measure_latency"]


@dataclass(frozen=True)
class LatencyStats:
    """Per-call times in milliseconds of one measurement."""

    samples_ms: tuple[float, ...]

    @property
    def median_ms(self) -> float:
        return float(statistics.median(self.samples_ms))

    @property
    def mean_ms(self) -> float:
        return float(statistics.fmean(self.samples_ms))

    @property
    def min_ms(self) -> float:
        return float(min(self.samples_ms))

    @property
    def max_ms(self) -> float:
        return float(max(self.samples_ms))


def _as_device(device: torch.device | str | None) -> torch.device:
    return torch.device("cpu") if device is None else torch.device(device)


def latency_stats(fn: Callable[[], Any], warmup: int = 3, repeats: int = 10,
                  device: torch.device | str | None = None,
                  timer: Callable[[], float] | None = None) -> LatencyStats:
    """Time ``fn()`` ``repeats`` times after ``warmup`` untimed calls.

    On a CUDA ``device`` each call is bracketed by CUDA events and the device is synchronised
    (so asynchronous kernels are counted); otherwise ``timer`` (default ``time.perf_counter``,
    seconds) is read around each call. Pass a fake ``timer`` to test without real time.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0 (got {repeats}, {warmup})")
    dev = _as_device(device)
    use_cuda = dev.type == "cuda" and timer is None
    for _ in range(warmup):
        fn()
    samples = []
    if use_cuda:
        torch.cuda.synchronize(dev)
        for _ in range(repeats):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(dev)
            samples.append(float(start.elapsed_time(end)))
    else:
        import time
        clock = timer or time.perf_counter
        for _ in range(repeats):
            t0 = clock()
            fn()
            samples.append((clock() - t0) * 1e3)
    return LatencyStats(tuple(samples))


def measure_latency(fn: Callable[[], Any], warmup: int = 3, repeats: int = 10,
                    device: torch.device | str | None = None,
                    timer: Callable[[], float] | None = None) -> float:
    """Median milliseconds of ``fn()`` (see :func:`latency_stats`)."""
    return latency_stats(fn, warmup, repeats, device, timer).median_ms


def denoiser_latency(model: torch.nn.Module, arch: Arch | None, inputs: Mapping[str, Any],
                     warmup: int = 3, repeats: int = 10) -> float:
    """Median milliseconds of one denoiser forward ``model(**inputs, arch=arch)``.

    ``arch=None`` runs a static (extracted) model, or a supernet at full size. Runs in eval mode
    under ``torch.inference_mode`` (the model's training flag is restored afterwards); the device
    is the one ``inputs["sample"]`` lives on.
    """
    kwargs = dict(inputs)
    if arch is not None:
        kwargs["arch"] = arch
    sample = kwargs.get("sample")
    device = sample.device if isinstance(sample, torch.Tensor) else next(
        model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return measure_latency(lambda: model(**kwargs), warmup, repeats, device)
    finally:
        model.train(was_training)


# --------------------------------------------------------------------------------- the table
def _cpu_name() -> str:
    name = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return name or platform.machine() or "unknown-cpu"


def device_name(device: torch.device | str | None = None) -> str:
    """A name for latency keys: ``cuda:<GPU name>`` or ``cpu:<processor> threads=<n>``."""
    dev = _as_device(device)
    if dev.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(dev)}"
    if dev.type == "cpu":
        return f"cpu:{_cpu_name()} threads={torch.get_num_threads()}"
    return dev.type


def arch_key(arch: Arch | Mapping[str, Any] | str | None) -> str:
    """Short stable key of an arch: a hash of its canonical JSON; ``None`` → ``"full"``; a
    string (e.g. a model folder or preset name) is used as it is."""
    if arch is None:
        return "full"
    if isinstance(arch, str):
        return arch
    d = arch.to_dict() if isinstance(arch, Arch) else dict(arch)
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _dtype_name(dtype: torch.dtype | str) -> str:
    return str(dtype).replace("torch.", "")


class LatencyTable:
    """Measured latencies of one device, keyed by (config, arch, resolution, frames, batch,
    dtype), persisted as JSON and reused.

    The file holds entries for any number of devices (``{"devices": {device: {key: entry}}}``);
    a table reads and writes only its own device's entries, so a lookup never returns a number
    measured on other hardware. Saving merges with what is on disk.

    Args:
        path: JSON file (created on first save); None keeps the table in memory.
        device: the device measured on (its name is the table's device key), or ``device_name``.
        autosave: save after every new measurement.
    """

    VERSION = 1

    def __init__(self, path: str | Path | None = None, device: torch.device | str | None = None,
                 device_label: str | None = None, autosave: bool = True) -> None:
        self.path = Path(path) if path is not None else None
        self.device = device_label or device_name(device)
        self.autosave = autosave
        self.entries: dict[str, dict[str, Any]] = {}
        if self.path is not None and self.path.exists():
            self.entries = dict(self._read().get(self.device, {}))

    # ----------------------------------------------------------------------------- keys
    @staticmethod
    def key(config: str, arch: Arch | Mapping[str, Any] | str | None, resolution: int,
            frames: int, batch: int, dtype: torch.dtype | str) -> str:
        """The lookup key (without the device: the table is per device)."""
        return (f"{config}|{arch_key(arch)}|r{int(resolution)}|f{int(frames)}|b{int(batch)}"
                f"|{_dtype_name(dtype)}")

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def get(self, config: str, arch, resolution: int, frames: int, batch: int,
            dtype: torch.dtype | str) -> float | None:
        e = self.entries.get(self.key(config, arch, resolution, frames, batch, dtype))
        return None if e is None else float(e["ms"])

    def put(self, config: str, arch, resolution: int, frames: int, batch: int,
            dtype: torch.dtype | str, ms: float) -> None:
        entry: dict[str, Any] = {"ms": float(ms), "config": config, "resolution": int(resolution),
                                 "frames": int(frames), "batch": int(batch),
                                 "dtype": _dtype_name(dtype)}
        if isinstance(arch, Arch):
            entry["arch"] = arch.to_dict()
        elif isinstance(arch, Mapping):
            entry["arch"] = dict(arch)
        self.entries[self.key(config, arch, resolution, frames, batch, dtype)] = entry
        if self.autosave and self.path is not None:
            self.save()

    def get_or_measure(self, config: str, arch, resolution: int, frames: int, batch: int,
                       dtype: torch.dtype | str, measure_fn: Callable[[], float]) -> float:
        """The stored latency, or ``measure_fn()`` (ms) stored first (and saved) on a miss."""
        ms = self.get(config, arch, resolution, frames, batch, dtype)
        if ms is None:
            ms = float(measure_fn())
            self.put(config, arch, resolution, frames, batch, dtype, ms)
        return ms

    def latency_fn(self, config: str, resolution: int, frames: int, batch: int,
                   dtype: torch.dtype | str, measure: Callable[[Arch], float]
                   ) -> Callable[[Arch], float]:
        """An ``arch -> ms`` callable for search: table lookups, ``measure(arch)`` on a miss."""
        def fn(arch: Arch) -> float:
            return self.get_or_measure(config, arch, resolution, frames, batch, dtype,
                                       lambda: measure(arch))
        return fn

    # ----------------------------------------------------------------------------- disk
    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"latency table {str(self.path)!r} is not valid JSON: {e}") from None
        if not isinstance(data, dict) or not isinstance(data.get("devices"), dict):
            raise ValueError(f"latency table {str(self.path)!r} has no 'devices' object")
        return data["devices"]

    def save(self, path: str | Path | None = None) -> Path:
        """Write the table (merged with other devices' entries already in the file)."""
        p = Path(path) if path is not None else self.path
        if p is None:
            raise ValueError("LatencyTable.save needs a path (the table was made without one)")
        devices: dict[str, Any] = {}
        if p.exists():
            other = LatencyTable.__new__(LatencyTable)
            other.path = p
            devices = other._read()
        devices[self.device] = {**devices.get(self.device, {}), **self.entries}
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"version": self.VERSION, "devices": devices}, indent=1,
                                  sort_keys=True) + "\n")
        os.replace(tmp, p)
        return p

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str | None = None,
             device_label: str | None = None) -> "LatencyTable":
        """The table of ``device`` stored in ``path`` (empty when the file lacks it)."""
        if not Path(path).exists():
            raise FileNotFoundError(f"latency table {str(path)!r} does not exist")
        return cls(path, device, device_label)

    def devices(self) -> list[str]:
        """Every device with entries in the file (and this table's)."""
        names = set(self._read()) if self.path is not None and self.path.exists() else set()
        return sorted(names | {self.device})
