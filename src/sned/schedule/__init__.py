"""Sampling schedules: a subnet per denoising step, drawn from one supernet.

A :class:`Schedule` is a list of segments ``[start, end) → arch`` over the training timesteps
``[0, T)``: the sampler runs, at each of its timesteps ``t``, the arch of the segment holding
``t`` (T-Stitch runs a small model over the first, noisiest steps and the large one after; DDSM
a width per step). Written as a spec string (``S:0-400,B:400-1000``: preset or arch file, then
the range in training timesteps) or as JSON like an arch::

    {"format": "sned-schedule", "config": "tiny-base", "num_train_timesteps": 1000,
     "segments": [{"timesteps": [0, 400], "preset": "S"},
                  {"timesteps": [400, 1000], "arch": {...arch JSON... or "file.json"}}]}

:func:`parse_schedule` reads either into a :class:`ScheduleSpec` (syntax only);
:meth:`ScheduleSpec.resolve` checks it against a run — ranges cover ``[0, T)`` without gap or
overlap, presets are known, every arch lies inside the run's floors
(:meth:`~sned.space.SearchSpace.check_floors`) — and returns the :class:`Schedule`. Every error
is a :class:`ScheduleError` naming the segment. :func:`trajectory_macs` is the sampling cost
(the one cost model, summed over the sampler's steps). :mod:`sned.schedule.folder` stores a
schedule's subnets as one model folder (``sned extract --schedule``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..arch import Arch, ArchError, BlockArch
from ..space import SearchSpace, parse_preset

FORMAT = "sned-schedule"


class ScheduleError(ArchError):
    """A schedule that cannot run: syntax, coverage, unknown preset, arch outside the floors.
    The message names the segment."""


@dataclass(frozen=True)
class SegmentSpec:
    """One unresolved segment: ``[start, end)`` in training timesteps and a preset name or an
    arch (an :class:`Arch`, or a path to an arch file)."""

    start: int
    end: int
    choice: str | Arch
    label: str

    def describe(self, i: int) -> str:
        return f"schedule segment {i + 1} ({self.label}:{self.start}-{self.end})"


@dataclass(frozen=True)
class Segment:
    """One resolved segment: the arch runs at every sampler timestep in ``[start, end)``."""

    start: int
    end: int
    arch: Arch
    label: str

    def to_dict(self) -> dict[str, Any]:
        return {"timesteps": [self.start, self.end], "label": self.label,
                "arch": self.arch.to_dict()}


@dataclass(frozen=True)
class Schedule:
    """Resolved segments, sorted by ``start``, covering ``[0, num_train_timesteps)``."""

    segments: tuple[Segment, ...]
    num_train_timesteps: int
    config: str | None = None

    @property
    def resolution(self) -> int:
        return self.segments[0].arch.resolution

    @property
    def label(self) -> str:
        """File-name-safe name, e.g. ``S@0-400+B@400-1000``."""
        return "+".join(f"{s.label}@{s.start}-{s.end}" for s in self.segments)

    def arch_at(self, t: int) -> Arch:
        """The arch that runs at training timestep ``t``."""
        t = int(t)
        for s in self.segments:
            if s.start <= t < s.end:
                return s.arch
        raise ScheduleError(f"timestep {t} is outside [0, {self.num_train_timesteps})")

    def at(self, resolution: int) -> "Schedule":
        """The same schedule with every arch at ``resolution``."""
        if resolution == self.resolution:
            return self
        return Schedule(tuple(Segment(s.start, s.end, s.arch.at(resolution), s.label)
                              for s in self.segments), self.num_train_timesteps, self.config)

    def archs(self) -> list[Arch]:
        """The distinct archs, in segment order."""
        out: list[Arch] = []
        for s in self.segments:
            if s.arch not in out:
                out.append(s.arch)
        return out

    def steps_per_arch(self, timesteps: Sequence[int]) -> list[tuple[Segment, int]]:
        """(segment, number of ``timesteps`` it serves) for every segment."""
        return [(s, sum(s.start <= int(t) < s.end for t in timesteps)) for s in self.segments]

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "config": self.config,
                "num_train_timesteps": self.num_train_timesteps,
                "segments": [s.to_dict() for s in self.segments]}

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), **kw)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json(indent=1) + "\n")

    @classmethod
    def single(cls, arch: Arch, num_train_timesteps: int, label: str = "arch") -> "Schedule":
        """One arch over every timestep."""
        return cls((Segment(0, num_train_timesteps, arch, label),), num_train_timesteps,
                   arch.config)


@dataclass(frozen=True)
class ScheduleSpec:
    """A parsed, not yet checked schedule (see :func:`parse_schedule`)."""

    segments: tuple[SegmentSpec, ...]
    num_train_timesteps: int | None = None
    config: str | None = None
    source: str = "schedule"

    def resolve(self, space: SearchSpace, num_train_timesteps: int,
                resolution: int | None = None) -> Schedule:
        """The schedule for a run: ``space`` (with the run's floors, :meth:`SearchSpace.
        for_run`), its diffusion's ``num_train_timesteps`` T and the sampling ``resolution``
        (default the config's first). Raises :class:`ScheduleError` naming the segment."""
        T = int(num_train_timesteps)
        if self.num_train_timesteps is not None and self.num_train_timesteps != T:
            raise ScheduleError(f"{self.source}: written for {self.num_train_timesteps} training "
                                f"timesteps, but the model was trained with {T}")
        if self.config is not None and self.config != space.config.name:
            raise ScheduleError(f"{self.source}: schedule is for config {self.config!r}, but the "
                                f"model is {space.config.name!r}")
        res = space.config.resolutions[0] if resolution is None else int(resolution)
        order = sorted(range(len(self.segments)), key=lambda i: self.segments[i].start)
        _check_coverage(self.segments, order, T, self.source)
        out = []
        for i in order:
            seg = self.segments[i]
            where = f"{self.source}: {seg.describe(i)}"
            try:
                if isinstance(seg.choice, Arch):
                    arch = space.check_floors(space.validate(seg.choice.at(res)), "arch")
                elif _is_preset(seg.choice):
                    arch = space.validate(space.preset(parse_preset(seg.choice)[0], res))
                else:
                    arch = space.check_floors(space.validate(Arch.load(seg.choice).at(res)),
                                              "arch")
            except ArchError as e:
                raise ScheduleError(f"{where}: {e}") from None
            out.append(Segment(seg.start, seg.end, _in_space_order(space, arch), seg.label))
        return Schedule(tuple(out), T, space.config.name)


def _in_space_order(space: SearchSpace, arch: Arch) -> Arch:
    """``arch`` (validated) with components and ratios in the space's order, so the same subnet
    is one value however its JSON ordered the keys (a JSON round trip may sort them)."""
    blocks = tuple(BlockArch(tuple(c for c in spec.components if c in b.keep),
                             tuple((slot, b.ratio(slot)) for slot in spec.slots), b.kernel)
                   for spec, b in zip(space.specs, arch.blocks))
    return Arch(arch.resolution, blocks, arch.config)


def _is_preset(choice: str) -> bool:
    try:
        parse_preset(choice)
        return True
    except ArchError:
        return False


def _check_coverage(segs: Sequence[SegmentSpec], order: list[int], T: int, source: str) -> None:
    """Ranges lie in [0, T), are non-empty and cover it without gap or overlap."""
    for i, s in enumerate(segs):
        if not 0 <= s.start < s.end <= T:
            raise ScheduleError(f"{source}: {s.describe(i)}: range must satisfy 0 <= start < end "
                                f"<= {T} (the training timesteps)")
    prev = None
    for i in order:
        s = segs[i]
        if prev is None:
            if s.start != 0:
                raise ScheduleError(f"{source}: {s.describe(i)}: timesteps [0, {s.start}) are "
                                    f"not covered (the first segment must start at 0)")
        else:
            p = segs[prev]
            if s.start > p.end:
                raise ScheduleError(f"{source}: {s.describe(i)}: gap after {p.describe(prev)}: "
                                    f"timesteps [{p.end}, {s.start}) are not covered")
            if s.start < p.end:
                raise ScheduleError(f"{source}: {s.describe(i)} overlaps {p.describe(prev)} on "
                                    f"timesteps {s.start}-{min(p.end, s.end)}")
        prev = i
    last = segs[order[-1]]
    if last.end != T:
        raise ScheduleError(f"{source}: {last.describe(order[-1])}: timesteps [{last.end}, {T}) "
                            f"are not covered (the last segment must end at {T})")


_SPEC_ITEM = re.compile(r"^(?P<name>.+):(?P<start>\d+)-(?P<end>\d+)$")


def parse_spec(text: str) -> ScheduleSpec:
    """``NAME:START-END,...``: NAME a preset (S, M, L, B, 0.75) or an arch JSON file, the range
    in training timesteps (end exclusive)."""
    items = [t.strip() for t in text.split(",")]
    if not text.strip() or any(not t for t in items):
        raise ScheduleError(f"schedule {text!r}: expected NAME:START-END,... (e.g. "
                            f"S:0-400,B:400-1000)")
    segs = []
    for i, item in enumerate(items):
        m = _SPEC_ITEM.match(item)
        if not m:
            raise ScheduleError(f"schedule segment {i + 1} ({item}): expected NAME:START-END "
                                f"with integer timesteps (e.g. S:0-400)")
        name = m["name"].strip()
        if not _is_preset(name) and not name.endswith(".json"):
            raise ScheduleError(f"schedule segment {i + 1} ({item}): unknown preset {name!r}; "
                                f"presets are S, M, L, B or a fraction in (0, 1]; an arch is a "
                                f".json file")
        preset = _is_preset(name)
        label = parse_preset(name)[0] if preset else Path(name).stem
        segs.append(SegmentSpec(int(m["start"]), int(m["end"]), label if preset else name,
                                label))
    return ScheduleSpec(tuple(segs), source=f"schedule {text!r}")


def schedule_from_dict(d: Mapping[str, Any], source: str = "schedule",
                       base: Path | None = None) -> ScheduleSpec:
    """A :class:`ScheduleSpec` from the JSON form (``base``: folder that relative arch file
    paths are read from)."""
    if not isinstance(d, Mapping) or d.get("format", FORMAT) != FORMAT:
        raise ScheduleError(f"{source}: not a schedule (expected a JSON object with "
                            f"\"format\": \"{FORMAT}\" and \"segments\")")
    unknown = sorted(set(d) - {"format", "config", "num_train_timesteps", "segments"})
    if unknown:
        raise ScheduleError(f"{source}: unknown field {unknown[0]!r}")
    raw = d.get("segments")
    if not isinstance(raw, list) or not raw:
        raise ScheduleError(f"{source}: 'segments' must be a non-empty list")
    T = d.get("num_train_timesteps")
    if T is not None and (isinstance(T, bool) or not isinstance(T, int) or T < 1):
        raise ScheduleError(f"{source}: num_train_timesteps must be a positive integer "
                            f"(got {T!r})")
    segs = []
    for i, s in enumerate(raw):
        where = f"{source}: schedule segment {i + 1}"
        if not isinstance(s, Mapping):
            raise ScheduleError(f"{where}: must be an object (got {s!r})")
        bad = sorted(set(s) - {"timesteps", "preset", "arch", "label"})
        if bad:
            raise ScheduleError(f"{where}: unknown field {bad[0]!r}")
        ts = s.get("timesteps")
        if (not isinstance(ts, list) or len(ts) != 2
                or any(isinstance(v, bool) or not isinstance(v, int) for v in ts)):
            raise ScheduleError(f"{where}: 'timesteps' must be [start, end] integers (got {ts!r})")
        if ("preset" in s) == ("arch" in s):
            raise ScheduleError(f"{where}: give exactly one of 'preset' and 'arch'")
        if "preset" in s:
            name = str(s["preset"])
            if not _is_preset(name):
                raise ScheduleError(f"{where} ({name}:{ts[0]}-{ts[1]}): unknown preset "
                                    f"{name!r}; presets are S, M, L, B or a fraction in (0, 1]")
            choice: str | Arch = parse_preset(name)[0]
            label = str(s.get("label", choice))
        elif isinstance(s["arch"], str):
            path = Path(s["arch"])
            choice = str(path if path.is_absolute() or base is None else base / path)
            label = str(s.get("label", path.stem))
        else:
            try:
                choice = Arch.from_dict(s["arch"])
            except ArchError as e:
                raise ScheduleError(f"{where}: {e}") from None
            label = str(s.get("label", "arch"))
        if not re.fullmatch(r"[A-Za-z0-9._-]+", label):
            raise ScheduleError(f"{where}: label {label!r} must be letters, digits, '.', '_' "
                                f"or '-' (it goes into file names)")
        segs.append(SegmentSpec(ts[0], ts[1], choice, label))
    return ScheduleSpec(tuple(segs), T, d.get("config"), source)


def parse_schedule(value: str | Path | Mapping | ScheduleSpec | Schedule) -> ScheduleSpec:
    """A schedule spec from a spec string, a JSON file, a dict or a :class:`Schedule`."""
    if isinstance(value, ScheduleSpec):
        return value
    if isinstance(value, Schedule):
        return ScheduleSpec(tuple(SegmentSpec(s.start, s.end, s.arch, s.label)
                                  for s in value.segments), value.num_train_timesteps,
                            value.config)
    if isinstance(value, Mapping):
        return schedule_from_dict(value)
    text = str(value)
    if text.endswith(".json") and ":" not in Path(text).name:
        p = Path(text)
        try:
            d = json.loads(p.read_text())
        except FileNotFoundError:
            raise ScheduleError(f"schedule file {text!r} does not exist") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ScheduleError(f"schedule file {text!r} is not valid JSON: {e}") from None
        return schedule_from_dict(d, text, p.parent)
    return parse_spec(text)


def resolve_schedule(value, space: SearchSpace, num_train_timesteps: int,
                     resolution: int | None = None) -> Schedule:
    """:func:`parse_schedule` then :meth:`ScheduleSpec.resolve`."""
    return parse_schedule(value).resolve(space, num_train_timesteps, resolution)


def sampler_timesteps(diffusion, scheduler: str, steps: int) -> list[int]:
    """The training timesteps a sampler evaluates the model at, in order (noisiest first)."""
    from ..diffusion import make_scheduler

    sched = make_scheduler(diffusion, scheduler)
    sched.set_timesteps(int(steps))
    return [int(t) for t in sched.timesteps]


def trajectory_macs(schedule: Schedule, space: SearchSpace, timesteps: Sequence[int],
                    frames: int | None = None) -> int:
    """MACs of one video's trajectory (batch 1, one branch: double it for classifier-free
    guidance): the one cost model's per-forward MACs of the arch each timestep runs, summed."""
    per = {a: space.cost(a, a.resolution, frames).macs for a in schedule.archs()}
    return int(sum(per[schedule.arch_at(t)] for t in timesteps))


__all__ = ["FORMAT", "Schedule", "ScheduleError", "ScheduleSpec", "Segment", "SegmentSpec",
           "parse_schedule", "parse_spec", "resolve_schedule", "sampler_timesteps",
           "schedule_from_dict", "trajectory_macs"]
