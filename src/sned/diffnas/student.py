"""The elastic student: a supernet of the teacher's config.

The teacher (an extracted model) is a prefix / centre slice of its config's supernet, so its
weights are written straight into the views the elastic layers' ``active_weights`` return — the
very views forward and extraction use. Two initialisations (:data:`STUDENT_INITS`):

* ``scratch`` (the default; the DNA line of work): the stem, embeddings and output head are the
  teacher's, every stage (the searched blocks and resamplers) is freshly initialised, so the
  teacher-shaped candidate is a fair reference trained with the same weight sharing as the rest.
* ``teacher``: every weight is the teacher's; run at the teacher's arch the student computes
  exactly what the teacher computes, and smaller candidates start from the teacher's leading
  channels and kernel centres (once-for-all). The teacher-shaped candidate then starts at
  distillation loss 0 and is hard to beat.
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


STUDENT_INITS = ("scratch", "teacher")


@torch.no_grad()
def init_student(teacher: VideoUNet, init: str = "teacher") -> VideoUNet:
    """A supernet of ``teacher.config`` initialised as ``init`` says (see the module doc).

    Weights outside the teacher's sizes keep their fresh initialisation; DiffNAS never
    activates them (candidates are at most the teacher's size). The fresh weights come from
    torch's global RNG: seed it first for a reproducible student.
    """
    if init not in STUDENT_INITS:
        raise ValueError(f"student init {init!r} is not one of {list(STUDENT_INITS)}")
    p = next(teacher.parameters())
    student = VideoUNet(teacher.config).to(device=p.device, dtype=p.dtype)
    fresh = ({n: t.clone() for m in (student.stage_modules(st) for st in student.stages)
              for mod in m for n, t in _named_state(student, mod)} if init == "scratch" else {})
    for view, weight in weight_pairs(student, teacher):
        view.copy_(weight)
    if fresh:  # the stages go back to their fresh initialisation
        for name, t in student.state_dict(keep_vars=True).items():
            if name in fresh:
                t.data.copy_(fresh[name])
    return student


def _named_state(model: VideoUNet, module) -> list[tuple[str, torch.Tensor]]:
    """``module``'s state entries named as in ``model.state_dict()``."""
    prefix = next(n for n, m in model.named_modules() if m is module)
    return [(f"{prefix}.{n}", t) for n, t in module.state_dict().items()]
