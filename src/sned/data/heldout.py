"""Held-out real data: the one place evaluation, search and FVD get their "real" videos from.

Given a run's data config (``data`` section of its ``state.json``, plus ``--data key=value``
overrides), :func:`held_out_set` returns the clips no training step saw:

- ``kind=folder``: the ``val`` part of the folder's hash split (``data.val_fraction``; see
  :func:`sned.data.folder.split_of`) — training uses the ``train`` part only;
- ``kind=synthetic``: the generator's held-out split (``split="held_out"``: the (colour, shape,
  direction) combinations training never draws) with the training set's options (objects,
  textures) under held-out seeds (``10_000 + 1000·data.seed + seed``).

Every set carries a JSON-able ``source`` record — ``{"kind", "root", "split", "n", …}`` plus all
that determines its clips (seed, frames, resolution, data options, a hash of the held-out file
list) — that outputs (``table.json``, ``pareto.json``) record and FVD's real-statistics cache
uses as its key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..config_parsing import ConfigError, parse_override
from ..extract import is_model_folder, read_model_meta
from ..store.checkpoint import read_state, resolve_checkpoint
from ..video_io import to_uint8
from .config import DataConfig
from .folder import VideoFolderDataset
from .synthetic import SyntheticVideoDataset, caption_for

HELDOUT_SEED = 10_000


def heldout_seed(data: DataConfig, seed: int = 0) -> int:
    """Seed of held-out draw ``seed`` (FVD run index, …) for a run trained with ``data``."""
    return HELDOUT_SEED + 1000 * int(data.seed) + int(seed)


def run_data_config(checkpoint: str | os.PathLike) -> DataConfig | None:
    """The data config a training run / checkpoint (``state.json``) or a model folder
    (``config.json`` field ``data``) was trained with; None if it records none."""
    p = Path(checkpoint)
    if is_model_folder(p):
        raw = read_model_meta(p).get("data")
        source = str(p / "config.json")
    else:
        folder = resolve_checkpoint(p)
        raw = (read_state(folder).get("run") or {}).get("data")
        source = str(folder / "state.json")
    return None if raw is None else DataConfig.from_dict(raw, source)


def with_overrides(data: DataConfig, overrides: Sequence[str]) -> DataConfig:
    """``data`` with ``key=value`` overrides (``root=/videos``, ``data.val_fraction=0.2``);
    unknown keys / bad values raise ConfigError naming them."""
    if not overrides:
        return data
    raw = dataclasses.asdict(data)
    for item in overrides:
        key, value = parse_override(item)
        key = key[len("data."):] if key.startswith("data.") else key
        if key not in raw:
            raise ConfigError(f"--data {item}: unknown key {key!r}; valid keys are "
                              f"{sorted(raw)}")
        raw[key] = value
    return DataConfig.from_dict(raw, "--data")


def resolve_data(checkpoint: str | os.PathLike | None,
                 overrides: Sequence[str] = ()) -> DataConfig:
    """The data config to evaluate ``checkpoint`` against: its recorded training data (else
    the synthetic defaults), then ``overrides``."""
    data = run_data_config(checkpoint) if checkpoint is not None else None
    return with_overrides(data or DataConfig(), overrides)


class HeldOutSet:
    """``n`` held-out clips of ``frames`` frames at ``resolution``², decoded lazily.

    Attributes: ``source`` (the JSON-able record), ``n``, ``frames``, ``resolution``.
    :meth:`batches` yields ``(videos (B, 3, T, R, R) float in [-1, 1], captions)``;
    :meth:`uint8_batches` yields ``(B, T, R, R, 3)`` uint8 (FVD's real set); :meth:`tensor`
    materialises all clips (val-loss proxy).
    """

    def __init__(self, dataset: Any, n: int, frames: int, resolution: int,
                 source: dict[str, Any]) -> None:
        self._ds, self.n, self.frames, self.resolution = dataset, n, frames, resolution
        self.source = source

    def _index(self, i: int) -> int:
        if hasattr(self._ds, "set_epoch"):  # folder: clip i = video i mod V, a new start per lap
            self._ds.set_epoch(i // len(self._ds))
            return i % len(self._ds)
        return i

    def _item(self, i: int) -> dict[str, Any]:
        return self._ds[self._index(i)]

    def captions(self) -> list[str]:
        """The captions of the ``n`` clips, without rendering or decoding them (the prompts
        that make generated videos comparable with this real set)."""
        if hasattr(self._ds, "draw"):
            return [self._ds.draw(self._index(i))[1] for i in range(self.n)]

        return [caption_for(self._ds.attributes(i)) for i in range(self.n)]

    def batches(self, batch: int = 8) -> Iterator[tuple[Tensor, list[str]]]:
        for i in range(0, self.n, batch):
            items = [self._item(j) for j in range(i, min(i + batch, self.n))]
            yield torch.stack([it["video"] for it in items]), [it["caption"] for it in items]

    def uint8_batches(self, batch: int = 8) -> Iterator[np.ndarray]:

        for videos, _ in self.batches(batch):
            yield to_uint8(videos)

    def tensor(self) -> tuple[Tensor, list[str]]:
        videos, captions = zip(*self.batches(self.n))
        return videos[0], captions[0]

    def describe(self) -> str:
        return describe_source(self.source)


def describe_source(s: dict[str, Any]) -> str:
    """One line for reports, e.g. ``held-out videos of folder /v (split 'val', …), n=64``."""
    if s["kind"] == "folder":
        return (f"held-out videos of folder {s['root']} (split {s['split']!r}, "
                f"val_fraction {s['val_fraction']}, {s['videos']} videos), n={s['n']}")
    return (f"synthetic shapes of the held-out split (combinations training never draws), "
            f"seed {s['seed']}, n={s['n']}")


def _files_sha256(ds: Any) -> str:
    """Hash of the held-out files (relative path, size, mtime): the real set's identity."""
    h = hashlib.sha256()
    for v in ds.videos:
        p = ds.root / v.rel
        st = p.stat()
        h.update(f"{v.rel}\0{st.st_size}\0{st.st_mtime_ns}\0{len(v.frame_files)}\n".encode())
    return h.hexdigest()[:16]


def held_out_set(data: DataConfig, n: int, frames: int, resolution: int, seed: int = 0,
                 overrides: Sequence[str] = ()) -> HeldOutSet:
    """The held-out real set of a run trained with ``data`` (see the module docstring).

    ``seed`` selects the draw (FVD run index): another synthetic seed, or other clip starts
    within the same held-out folder videos. Raises ValueError (naming the key to change) when a
    folder has no held-out split.
    """
    if n < 1 or frames < 1 or resolution < 1:
        raise ValueError(f"held-out set needs n, frames, resolution >= 1 (got {n}, {frames}, "
                         f"{resolution})")
    data = with_overrides(data, overrides)
    s = heldout_seed(data, seed)
    if data.kind == "synthetic":

        ds = SyntheticVideoDataset(n, frames, resolution, seed=s, max_objects=data.max_objects,
                                   textured_background=data.textured_background,
                                   split="held_out", motion_start=data.motion_start)
        source = {"kind": "synthetic", "root": None, "split": "held_out", "n": n,
                  "seed": s, "max_objects": data.max_objects,
                  "textured_background": data.textured_background}
        if data.motion_start != "anywhere":  # records of the default stay as they were
            source["motion_start"] = data.motion_start
    else:

        if data.val_fraction <= 0:
            raise ValueError(f"data.root {data.root}: no held-out split (data.val_fraction is "
                             "0, so training used every file); pass --data val_fraction=0.1 "
                             "(the model then saw those files) or --data root=<other folder>")
        ds = VideoFolderDataset(data.root, frames, resolution, stride=data.stride,
                                captions=data.captions, seed=s, split="val",
                                val_fraction=data.val_fraction)
        source = {"kind": "folder", "root": str(ds.root), "split": "val", "n": n,
                  "videos": len(ds), "val_fraction": data.val_fraction, "stride": data.stride,
                  "captions": data.captions, "seed": s, "files_sha256": _files_sha256(ds),
                  "skipped": len(ds.skipped)}
    source.update(frames=frames, resolution=resolution)
    return HeldOutSet(ds, n, frames, resolution, source)


__all__ = ["HELDOUT_SEED", "HeldOutSet", "describe_source", "held_out_set", "heldout_seed", "resolve_data",
           "run_data_config", "with_overrides"]
