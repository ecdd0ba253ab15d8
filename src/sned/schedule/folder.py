"""A sampling schedule as one standalone model folder (``sned extract RUN --schedule ...``).

Storage: **shared slices, stored once.** Every subnet of a supernet is a slice of the same
weights (a prefix of channels / heads, the centre of a kernel), so the distinct subnets of a
schedule are all slices of their *union* — per layer the widest any of them uses
(:func:`union_arch`). The folder is the ordinary model folder of that union subnet
(a diffusers model folder written by :func:`sned.extract.save_pretrained`),
plus the schedule (``config.json`` field ``schedule`` and ``schedule.json``). Loading writes
the union back into the views it occupies of an empty supernet and extracts each subnet from
it with :func:`sned.extract.extract` — the one slicing rule of training and extraction, so
each loaded subnet equals ``extract(supernet, arch)`` exactly. The union never holds more
parameters than the subnets stored whole (a layer's union width is the largest of theirs, not
their sum); ``benchmarks/bench_schedules.py`` measures both on disk (``docs/serving.md``).
Loading needs the memory of the whole supernet once, briefly.

:class:`ScheduledSubnets` holds the extracted subnets and runs the one a step's arch names;
:func:`sned.pipelines.sample` drives it with the schedule.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import nn

from ..arch import Arch, BlockArch
from ..extract import (extract, front_matter, load_pretrained, model_card, read_model_meta,
                       refuse_existing, save_pretrained, weight_pairs)
from ..models.unet import VideoUNet
from ..space import SearchSpace, active_slots
from ..store.files import CheckpointError
from . import Schedule, ScheduleError, sampler_timesteps, schedule_from_dict


def union_arch(space: SearchSpace, archs: Sequence[Arch]) -> Arch:
    """The smallest arch every one of ``archs`` is a slice of: per block the union of kept
    components, per elastic layer the largest ratio any arch uses it at, the largest kernel."""
    blocks = []
    for i, spec in enumerate(space.specs):
        keep = {c for a in archs for c in a.blocks[i].keep}
        ratios = {}
        for slot in spec.slots:
            used = [a.blocks[i].ratio(slot) for a in archs
                    if slot in active_slots(spec, a.blocks[i].keep)]
            ratios[slot] = max(used) if used else space.ratios[0]
        blocks.append(BlockArch(tuple(c for c in spec.components if c in keep),
                                tuple((s, ratios[s]) for s in spec.slots),
                                max(a.blocks[i].kernel for a in archs)))
    return Arch(archs[0].resolution, tuple(blocks), archs[0].config)


class ScheduledSubnets(nn.Module):
    """The distinct subnets of a schedule as plain static models; ``forward(..., arch=)`` runs
    the subnet of ``arch`` (at any resolution its config serves).

    Attributes:
        config: the model config all subnets share.
        subnets: one extracted :class:`~sned.models.unet.VideoUNet` per distinct arch.
    """

    is_supernet = False
    arch = None

    def __init__(self, config, subnets: Sequence[VideoUNet]) -> None:
        super().__init__()
        self.config = config
        self.subnets = nn.ModuleList(subnets)
        self._index = {m.arch.blocks: i for i, m in enumerate(subnets)}

    def subnet(self, arch: Arch) -> VideoUNet:
        try:
            return self.subnets[self._index[arch.blocks]]
        except KeyError:
            raise ScheduleError("this schedule folder holds no subnet for the requested arch; "
                                "it serves only its own schedule") from None

    def forward(self, *args, arch: Arch, **kwargs):
        """The inputs of a model forward (see :class:`~sned.models.unet.VideoUNet`)."""
        return self.subnet(arch)(*args, **kwargs)


def is_schedule_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a model folder written by :func:`export_schedule`."""
    p = Path(path)
    if not (p / "config.json").is_file() or (p / "state.json").is_file():
        return False
    try:
        return "schedule" in read_model_meta(p)
    except CheckpointError:
        return False


def export_schedule(den, schedule: Schedule, out: str | os.PathLike, overwrite: bool = False,
                    inputs: Iterable = (), scheduler: str = "ddim", steps: int = 50) -> Path:
    """Write ``schedule``'s subnets of ``den`` (a :class:`sned.loading.Denoiser` of a supernet)
    to ``out`` as one model folder holding their union once (module docstring), with the
    schedule, ``README.md`` (per subnet params / MACs; the trajectory MACs at ``scheduler`` ×
    ``steps``) and the folder rule of :func:`sned.extract.refuse_existing`."""
    out = refuse_existing(out, overwrite, [den.source, *inputs])
    space = SearchSpace(den.config)
    archs = schedule.archs()
    union = union_arch(space, archs)
    static = extract(den.model, union)
    card, _ = model_card(den.with_arch(union, schedule.label), space.cost(union),
                         space.full_params)
    ts = sampler_timesteps(den.diffusion, scheduler, steps)
    per_arch = {a: space.cost(a) for a in archs}
    traj = sum(per_arch[schedule.arch_at(t)].macs for t in ts)
    card.update(schedule=True, subnets=[{"arch": i, "params": per_arch[a].params,
                                         "macs": per_arch[a].macs} for i, a in enumerate(archs)],
                whole_params=sum(c.params for c in per_arch.values()),
                trajectory_macs={"scheduler": scheduler, "steps": steps, "macs": traj})
    rows = "\n".join(f"| {s.start}-{s.end} | {s.label} | {per_arch[s.arch].params:,} | "
                     f"{per_arch[s.arch].macs:,} |" for s in schedule.segments)
    text = (f"# sned sampling schedule: {den.config.name} / {schedule.label}\n\n"
            f"Extracted from `{den.source}` ({den.weights} weights). One subnet per segment of "
            f"training timesteps; the folder stores their union once ({card['params']:,} "
            f"params; the distinct subnets whole: {card['whole_params']:,}).\n\n"
            f"| timesteps | subnet | params | MACs / forward (batch 1) |\n|---|---|---|---|\n"
            f"{rows}\n\nTrajectory: {traj:,} MACs ({scheduler}, {steps} steps, one branch). "
            f"Sample with `sned sample folder --prompt ...`.\n")
    extra = {"diffusion": den.diffusion.to_dict(), "card": card, "schedule": schedule.to_dict()}
    if den.data is not None:
        extra["data"] = den.data
    files = {"README.md": front_matter(card) + text, "arch.json": union.to_json(indent=1),
             "schedule.json": schedule.to_json(indent=1)}
    return save_pretrained(static, out, extra=extra, files=files)


def load_schedule_folder(folder: str | os.PathLike, device: str | torch.device = "cpu"
                         ) -> tuple[ScheduledSubnets, Schedule, dict]:
    """(subnets, schedule, config.json's fields) of a folder :func:`export_schedule` wrote."""
    folder = Path(folder)
    meta = read_model_meta(folder)
    union = load_pretrained(folder, device=device)
    try:
        spec = schedule_from_dict(meta["schedule"], f"{folder / 'config.json'}")
        schedule = spec.resolve(SearchSpace(union.config), spec.num_train_timesteps,
                                union.arch.resolution)
    except (KeyError, ScheduleError) as e:
        raise CheckpointError(f"{folder / 'config.json'}: {e}") from None
    with torch.device("meta"):
        supernet = VideoUNet(union.config)
    p = next(union.parameters())
    supernet = supernet.to_empty(device=p.device).to(p.dtype)
    with torch.no_grad():
        for t in supernet.parameters():
            t.zero_()
        for view, tensor in weight_pairs(supernet, union):
            view.copy_(tensor)
    subnets = [extract(supernet, a) for a in schedule.archs()]
    del supernet
    return ScheduledSubnets(union.config, subnets).eval(), schedule, meta
