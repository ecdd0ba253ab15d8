"""The elastic student: a supernet of the teacher's config holding the teacher's weights.

The teacher (an extracted model) is a prefix / centre slice of its config's supernet, so its
weights are written straight into the views the elastic layers' ``active_weights`` return — the
very views forward and extraction use. Run at the teacher's arch, the student computes exactly
what the teacher computes; every smaller candidate starts from the teacher's leading channels
and the centre of its kernels (once-for-all).
"""

from __future__ import annotations

import torch

from ..arch import Arch
from ..extract import weight_pairs
from ..models.unet import VideoUNet
from ..space import SearchSpace


def teacher_arch(teacher: VideoUNet) -> Arch:
    """The teacher's Arch in its config's space (the full supernet when it has none)."""
    if teacher.is_supernet:
        raise TypeError("the DiffNAS teacher must be a static (extracted) model; extract a "
                        "subnet first (sned extract)")
    if teacher.arch is not None:
        return teacher.arch
    return SearchSpace(teacher.config).largest()


@torch.no_grad()
def init_student(teacher: VideoUNet) -> VideoUNet:
    """A supernet of ``teacher.config`` whose teacher-shaped subnet equals the teacher.

    Weights outside the teacher's sizes keep their fresh initialisation; DiffNAS never
    activates them (candidates are at most the teacher's size).
    """
    p = next(teacher.parameters())
    student = VideoUNet(teacher.config).to(device=p.device, dtype=p.dtype)
    for view, weight in weight_pairs(student, teacher):
        view.copy_(weight)
    return student
