"""The teacher split into stages (DiffNAS "blocks") and the distillation loss between them.

One teacher forward with a :class:`~sned.models.unet.Trace` records, per stage, the hidden
input, the skips it consumes, and its outputs (the skips it produces, else its hidden output);
a student stage then maps exactly those inputs — with the teacher's timestep and text
embeddings — to its own outputs, compared to the teacher's with an L2 loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..arch import BlockLayout
from ..models.unet import UNetStage, StageIO, Trace, VideoUNet


@torch.no_grad()
def teacher_trace(teacher: VideoUNet, inputs: dict) -> tuple[Tensor, Trace]:
    """Run the teacher once on forward kwargs ``inputs``; (prediction, trace)."""
    trace = Trace()
    pred = teacher(**inputs, trace=trace)
    return pred, trace


def run_stage(student: VideoUNet, stage: UNetStage, io: StageIO, trace: Trace,
              layouts: list[BlockLayout] | None = None) -> list[Tensor]:
    """The student's outputs for ``stage`` on the teacher's recorded inputs ``io``.

    Returns a list like ``io.outputs``: the produced skips of a down stage, else [hidden].
    Inputs are made contiguous: the teacher's strided convs leave channels-last activations,
    and a CPU backward from such a leaf input crashed (segfault) in torch 2.13.
    """
    skips = [s.contiguous() for s in io.skips_in]
    n = len(skips)
    h = student.run_stage(stage, io.h_in.contiguous(), skips, trace.emb, trace.context, trace.mask,
                          trace.frames, layouts)
    return skips[n:] if stage.kind == "down" else [h]


def distill_loss(outputs: list[Tensor], targets: list[Tensor]) -> Tensor:
    """Mean squared error averaged over a stage's output tensors (float32 scalar)."""
    return torch.stack([F.mse_loss(o.float(), t.float()) for o, t in zip(outputs, targets)]
                       ).mean()


def trace_distill_loss(student: Trace, teacher: Trace) -> Tensor:
    """Mean over stages of :func:`distill_loss` between two full-forward traces."""
    return torch.stack([distill_loss(s.outputs, t.outputs)
                        for s, t in zip(student.stages, teacher.stages)]).mean()
