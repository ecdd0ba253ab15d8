"""The process group under ``torchrun``: joined when a trainer starts, released at exit.

A trainer joins the default group when ``WORLD_SIZE > 1`` (NCCL on CUDA, else gloo). The
group is released at exit, while the interpreter is still whole, after every live trainer has
dropped its DDP wrapper (:meth:`sned.train.trainer.Trainer.close`): a group whose last
reference dies with DDP's reducer is destroyed while holding the GIL, and gloo's worker
threads, which take the GIL to free a finished collective's tensors, can then deadlock it
(pytorch/pytorch#56297).
"""

from __future__ import annotations

import atexit
import os
import weakref

import torch
import torch.distributed as dist

_live_trainers: weakref.WeakSet = weakref.WeakSet()


def join_process_group() -> tuple[int, int]:
    """(rank, world size); starts the default group under ``torchrun`` if none is running
    (a group the caller started is used as is, and stays the caller's to destroy)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        atexit.register(_release)
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def release_at_exit(trainer) -> None:
    """Close ``trainer`` (drop its DDP wrapper) before the group is released at exit."""
    _live_trainers.add(trainer)


def _release() -> None:
    for trainer in list(_live_trainers):
        trainer.close()
    if dist.is_initialized():
        dist.destroy_process_group()
