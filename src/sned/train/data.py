"""Training data plumbing: dataset construction, a resumable per-step batch order, resizing.

The batch of step ``s`` is a pure function of ``(seed, s, rank)``: a fresh permutation per epoch
of the global index list, sliced by step and rank. Resuming at step ``s`` therefore continues
the exact sequence, with no sampler state to save.
"""

from __future__ import annotations

import os
import signal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from ..config import ModelConfig
from ..data.folder import VideoFolderDataset
from ..data.synthetic import SyntheticVideoDataset
from ..data.transforms import collate
from .config import DataConfig


def build_dataset(data: DataConfig, model: ModelConfig, frames: int | None = None,
                  resolution: int | None = None) -> Dataset:
    """The training set at the model's largest resolution (batches are resized per step);
    ``frames`` / ``resolution`` override the model's (latent models train on pixel clips).
    For a folder, its ``train`` split (``data.val_fraction`` is held out)."""
    frames = model.frames if frames is None else frames
    res = max(model.resolutions) if resolution is None else resolution
    if data.kind == "synthetic":

        return SyntheticVideoDataset(data.num_videos, frames, res, seed=data.seed,
                                     max_objects=data.max_objects,
                                     textured_background=data.textured_background,
                                     motion_start=data.motion_start)

    return VideoFolderDataset(data.root, frames, res, stride=data.stride,
                              captions=data.captions, seed=data.seed,
                              split="train" if data.val_fraction > 0 else "all",
                              val_fraction=data.val_fraction)


class StepBatchSampler(Sampler[list[int]]):
    """Yields the index batches of steps ``start, start+1, …`` for one rank.

    Args:
        n: dataset size. batch: per-rank batch. rank / world: DDP position. seed: order seed.
    """

    def __init__(self, n: int, batch: int, seed: int, start: int = 0, rank: int = 0,
                 world: int = 1) -> None:
        self.n, self.batch, self.seed = n, batch, seed
        self.start, self.rank, self.world = start, rank, world

    def indices(self, step: int) -> list[int]:
        global_batch = self.batch * self.world
        first = step * global_batch + self.rank * self.batch
        out = []
        for pos in range(first, first + self.batch):
            epoch, offset = divmod(pos, self.n)
            perm = self._perm(epoch)
            out.append(int(perm[offset]))
        return out

    def _perm(self, epoch: int) -> np.ndarray:
        cache = getattr(self, "_cache", None)
        if cache is None or cache[0] != epoch:
            self._cache = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n))
        return self._cache[1]

    def __iter__(self):
        step = self.start
        while True:
            yield self.indices(step)
            step += 1

    def __len__(self) -> int:  # infinite; DataLoader only needs it for len()
        return 2 ** 62


def num_workers(data: DataConfig, device: torch.device, world: int = 1) -> int:
    """``data.num_workers`` resolved: ``auto`` = 0 on the CPU (the step computes on those
    cores), else ``min(8, CPUs per rank - 1)`` (at least 1)."""
    if data.num_workers != "auto":
        return int(data.num_workers)
    if device.type == "cpu":
        return 0
    per_rank = (os.cpu_count() or 2) // max(1, min(world, torch.cuda.device_count() or 1))
    return max(1, min(8, per_rank - 1))


def _ignore_sigint(_worker_id: int) -> None:
    """Workers leave Ctrl-C to the training process (a terminal sends it to the whole
    process group): the trainer finishes its step, saves and stops the workers itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_loader(dataset: Dataset, data: DataConfig, batch: int, seed: int, start: int,
                rank: int = 0, world: int = 1, workers: int | None = None) -> DataLoader:
    """A loader of the batches of steps ``start, start+1, …`` for one rank (``workers``:
    DataLoader workers; None = ``data.num_workers`` for a CPU run).

    The loader gets its own generator seeded from ``(seed, start, rank)``: a DataLoader
    iterator otherwise draws its base (worker) seed from the *global* torch RNG, so creating
    one after a resume would shift every later global draw (e.g. dropout)."""
    sampler = StepBatchSampler(len(dataset), batch, seed, start, rank, world)
    generator = torch.Generator().manual_seed(
        int(np.random.default_rng([seed, start, rank, 0x10AD]).integers(2 ** 62)))
    if workers is None:
        workers = num_workers(data, torch.device("cpu"), world)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate,
                      num_workers=workers, persistent_workers=workers > 0,
                      worker_init_fn=_ignore_sigint if workers > 0 else None,
                      pin_memory=torch.cuda.is_available(), generator=generator)

