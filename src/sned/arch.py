"""Architectures: a JSON-serialisable value naming one subnet of a supernet.

An :class:`Arch` holds, per diffusion block, the kept components and a channel ratio for each of
the block's elastic layers, plus the resolution it runs at. :func:`unet_blocks` lists the blocks
of a config (the one description of the UNet's structure, used by the model, the cost model and
the search space) and :func:`resolve` turns an arch into the active widths of every block.

Elastic layers of a block (``slot`` names):

* ``resblock``      — ResBlock hidden width (conv1 out / norm2 / conv2 in)
* ``temporal_attn`` / ``cross_attn`` / ``spatial_attn`` — number of attention heads
* ``ff``            — feed-forward hidden width (present when the block has any attention)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from .config import ATTENTIONS, COMPONENTS, ModelConfig


FULL_KERNEL = 3
"""Kernel size of the ResBlock convs at full size; smaller odd kernels are centre slices."""
KERNELS = (3, 1)
"""Legal ResBlock kernel sizes of a block (3×3 and its 1×1 centre)."""


class ArchError(ValueError):
    """An arch does not fit its config. The message names the field and value."""


class ResolutionError(ArchError):
    """A model is asked for a resolution its config does not serve."""


def check_resolution(cfg: ModelConfig, resolution: int, source: str | None = None) -> int:
    """The one "is this resolution served" check: return ``resolution`` when ``cfg`` serves it.

    A config serves the resolutions it was trained at (``cfg.resolutions``); a subnet extracted
    from it serves the same ones. Raises :class:`ResolutionError` naming the value, the model
    (``source``, default the config's name) and the served resolutions.
    """
    if isinstance(resolution, bool) or not isinstance(resolution, int) \
            or resolution not in cfg.resolutions:
        who = f"{source} ({cfg.name})" if source else f"config {cfg.name!r}"
        raise ResolutionError(f"resolution {resolution} is not served by {who}; it serves "
                              f"{list(cfg.resolutions)}")
    return resolution


# --------------------------------------------------------------------------------- structure
@dataclass(frozen=True)
class BlockSpec:
    """One diffusion block of the supernet at full width.

    Attributes:
        name: ``down.{level}.{i}``, ``mid.{i}`` or ``up.{level}.{i}``.
        level: UNet level (spatial downsampling ``2**level``).
        in_ch / out_ch: residual widths entering / leaving (fixed: not elastic).
        components: components this block has (subset of COMPONENTS, in forward order: the
            ResBlock, then the attentions in ``config.attention_order``).
        heads: attention heads at full width.
        resblock_hidden: full ResBlock hidden width.
        ff_hidden: full feed-forward hidden width (0 when the block has no attention or the
            config has ``ff_mult: 0``).
    """

    name: str
    level: int
    in_ch: int
    out_ch: int
    components: tuple[str, ...]
    heads: int
    resblock_hidden: int
    ff_hidden: int

    @property
    def slots(self) -> tuple[str, ...]:
        """Elastic layers of this block, in order."""
        return tuple(self.components) + (("ff",) if self.ff_hidden else ())

    @property
    def attentions(self) -> tuple[str, ...]:
        return tuple(c for c in self.components if c in ATTENTIONS)


def unet_blocks(cfg: ModelConfig) -> list[BlockSpec]:
    """All diffusion blocks in forward order: encoder, middle, decoder (ADM-style skips)."""
    blocks: list[BlockSpec] = []

    def add(name: str, level: int, cin: int, cout: int, comps: Iterable[str]) -> None:
        order = ("resblock", *cfg.attention_order)
        comps = tuple(c for c in order if c in tuple(comps))
        has_attn = any(c in ATTENTIONS for c in comps)
        blocks.append(BlockSpec(name, level, cin, cout, comps, cfg.heads[level],
                                cfg.resblock_mult * cout, cfg.ff_mult * cout if has_attn else 0))

    skips = [cfg.model_channels]
    ch = cfg.model_channels
    n_levels = len(cfg.levels)
    for lvl, lv in enumerate(cfg.levels):
        w = cfg.level_width(lvl)
        for i in range(lv.blocks):
            add(f"down.{lvl}.{i}", lvl, ch, w, lv.components)
            ch = w
            skips.append(ch)
        if lvl < n_levels - 1:
            skips.append(ch)  # downsample output
    for i in range(2):
        add(f"mid.{i}", n_levels - 1, ch, ch, cfg.mid_block_components(i))
    for lvl in reversed(range(n_levels)):
        lv = cfg.levels[lvl]
        w = cfg.level_width(lvl)
        for i in range(lv.blocks + 1):
            add(f"up.{lvl}.{i}", lvl, ch + skips.pop(), w, lv.components)
            ch = w
    assert not skips
    return blocks


# --------------------------------------------------------------------------------- the value
@dataclass(frozen=True)
class BlockArch:
    """Choices for one diffusion block: kept components, a ratio per elastic layer and the
    ResBlock conv kernel size (3 = full; 1 = its centre, DiffNAS). JSON omits the default 3, so
    archs without kernel choices read and write exactly as before."""

    keep: tuple[str, ...]
    ratios: tuple[tuple[str, float], ...]
    kernel: int = 3

    def ratio(self, slot: str) -> float:
        return dict(self.ratios)[slot]

    def to_dict(self) -> dict[str, Any]:
        d = {"keep": list(self.keep), "ratios": dict(self.ratios)}
        if self.kernel != FULL_KERNEL:
            d["kernel"] = self.kernel
        return d


@dataclass(frozen=True)
class Arch:
    """One subnet: per-block choices plus the resolution. Immutable and hashable.

    Build with :meth:`from_dict`/:meth:`load` (validated against a config by
    :meth:`SearchSpace.validate`) or get one from a :class:`~sned.space.SearchSpace`.
    """

    resolution: int
    blocks: tuple[BlockArch, ...]
    config: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config, "resolution": self.resolution,
                "blocks": [b.to_dict() for b in self.blocks]}

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), **kw)

    def at(self, resolution: int) -> "Arch":
        """The same subnet at another resolution (super-position: one arch, many sizes)."""
        if resolution == self.resolution:
            return self
        return Arch(int(resolution), self.blocks, self.config)

    def without(self, component: str) -> Arch:
        """The same subnet with ``component`` dropped in every block (ratios kept): e.g.
        ``without("temporal_attn")`` is how joint image-video training runs images. A block
        left with no attention drops its feed-forward too (the block rule)."""
        blocks = tuple(BlockArch(tuple(c for c in b.keep if c != component), b.ratios, b.kernel)
                       for b in self.blocks)
        return Arch(self.resolution, blocks, self.config)

    def save(self, path: str | Path) -> None:
        from .store.files import atomic_write_text

        atomic_write_text(path, self.to_json(indent=1) + "\n")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Arch":
        if not isinstance(d, Mapping):
            raise ArchError(f"arch must be a JSON object, got {type(d).__name__}")
        unknown = sorted(set(d) - {"config", "resolution", "blocks"})
        if unknown:
            raise ArchError(f"arch: unknown field {unknown[0]!r}")
        res = d.get("resolution")
        if not isinstance(res, int) or isinstance(res, bool):
            raise ArchError(f"arch field 'resolution' must be an integer (got {res!r})")
        raw_blocks = d.get("blocks")
        if not isinstance(raw_blocks, list):
            raise ArchError(f"arch field 'blocks' must be a list (got {type(raw_blocks).__name__})")
        blocks = []
        for i, b in enumerate(raw_blocks):
            if (not isinstance(b, Mapping) or not {"keep", "ratios"} <= set(b)
                    or set(b) - {"keep", "ratios", "kernel"}):
                raise ArchError(f"arch blocks[{i}] must be an object with 'keep' and 'ratios' "
                                f"(and optionally 'kernel') (got {b!r})")
            kernel = b.get("kernel", FULL_KERNEL)
            if isinstance(kernel, bool) or not isinstance(kernel, int):
                raise ArchError(f"arch blocks[{i}].kernel must be an integer (got {kernel!r})")
            if not isinstance(b["ratios"], Mapping):
                raise ArchError(f"arch blocks[{i}].ratios must be an object (got {b['ratios']!r})")
            ratios = []
            for k, v in b["ratios"].items():
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise ArchError(f"arch blocks[{i}].ratios.{k} must be a number (got {v!r})")
                ratios.append((str(k), float(v)))
            blocks.append(BlockArch(tuple(b["keep"]), tuple(ratios), kernel))
        return cls(res, tuple(blocks), d.get("config"))

    @classmethod
    def load(cls, path: str | Path) -> "Arch":
        p = Path(path)
        try:
            d = json.loads(p.read_text())
        except FileNotFoundError:
            raise ArchError(f"arch file {str(p)!r} does not exist") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ArchError(f"arch file {str(p)!r} is not valid JSON: {e}") from None
        try:
            return cls.from_dict(d)
        except ArchError as e:
            raise ArchError(f"{p}: {e}") from None


# --------------------------------------------------------------------------------- widths
def quantize(full: int, ratio: float, quantum: int) -> int:
    """Active width for ``ratio`` of ``full``: the smallest multiple of ``quantum`` that is at
    least ``ratio × full`` (so the active fraction never falls below the ratio — a 40 % floor
    keeps 3 of 6 heads, not 2), within [quantum, full]."""
    w = math.ceil(full * ratio / quantum - 1e-9) * quantum
    return max(quantum, min(full, w))


@dataclass(frozen=True)
class BlockLayout:
    """Active sizes of one block: kept components, ResBlock hidden, heads per attention, FF
    hidden (0 = dropped), ResBlock conv kernel. What both the supernet's forward and extraction
    consume."""

    keep: frozenset[str]
    resblock_hidden: int
    heads: tuple[tuple[str, int], ...]
    ff_hidden: int
    kernel: int = FULL_KERNEL

    def heads_of(self, attn: str) -> int:
        return dict(self.heads)[attn]


def slot_width(cfg: ModelConfig, spec: BlockSpec, slot: str, ratio: float) -> int:
    """Active size of one elastic layer at ``ratio``: heads for attentions (quantum 1), else
    channels (quantum: the GroupNorm group size), rounded up by :func:`quantize`. The one width
    rule: the supernet's forward, extraction, the cost model and the search space all use it."""
    if slot in ATTENTIONS:
        return quantize(spec.heads, ratio, 1)
    if slot == "resblock":  # the hidden GroupNorm's group size
        return quantize(spec.resblock_hidden, ratio, cfg.group_size(spec.resblock_hidden))
    return quantize(spec.ff_hidden, ratio, cfg.norm_group_size)


def block_layout(spec: BlockSpec, choice: BlockArch, cfg: ModelConfig) -> BlockLayout:
    """Active widths of ``spec`` under ``choice`` (assumed validated)."""
    keep = frozenset(choice.keep)
    ratios = dict(choice.ratios)
    rb = slot_width(cfg, spec, "resblock", ratios["resblock"]) if "resblock" in keep else 0
    heads = tuple((a, slot_width(cfg, spec, a, ratios[a])) for a in spec.attentions if a in keep)
    ff = slot_width(cfg, spec, "ff", ratios["ff"]) if heads and spec.ff_hidden else 0
    return BlockLayout(keep, rb, heads, ff, choice.kernel)


def full_layout(spec: BlockSpec) -> BlockLayout:
    return BlockLayout(frozenset(spec.components), spec.resblock_hidden,
                       tuple((a, spec.heads) for a in spec.attentions), spec.ff_hidden)


def resolve(cfg: ModelConfig, arch: Arch, specs: list[BlockSpec] | None = None
            ) -> list[BlockLayout]:
    """Per-block active layout of ``arch`` (validated first)."""
    specs = specs if specs is not None else unet_blocks(cfg)
    validate(cfg, arch, specs)
    return [block_layout(s, b, cfg) for s, b in zip(specs, arch.blocks)]


def validate(cfg: ModelConfig, arch: Arch, specs: list[BlockSpec] | None = None,
             with_resolution: bool = True) -> None:
    """Raise :class:`ArchError` naming the first field of ``arch`` that ``cfg`` does not allow."""
    specs = specs if specs is not None else unet_blocks(cfg)
    if not isinstance(arch, Arch):
        raise ArchError(f"expected an Arch, got {type(arch).__name__}")
    if arch.config is not None and arch.config != cfg.name:
        raise ArchError(f"arch is for config {arch.config!r}, but the model is {cfg.name!r}")
    if with_resolution:
        check_resolution(cfg, arch.resolution)
    if len(arch.blocks) != len(specs):
        raise ArchError(f"arch has {len(arch.blocks)} blocks but config {cfg.name!r} has "
                        f"{len(specs)}")
    allowed = set(cfg.ratios)
    for spec, b in zip(specs, arch.blocks):
        for c in b.keep:
            if c not in COMPONENTS:
                raise ArchError(f"block {spec.name}: unknown component {c!r}; components are "
                                f"{list(COMPONENTS)}")
            if c not in spec.components:
                raise ArchError(f"block {spec.name}: component {c!r} does not exist in this "
                                f"block (it has {list(spec.components)})")
        if len(set(b.keep)) != len(b.keep):
            raise ArchError(f"block {spec.name}: duplicate component in keep {list(b.keep)}")
        if b.kernel not in KERNELS:
            raise ArchError(f"block {spec.name}: kernel {b.kernel!r} is not one of "
                            f"{list(KERNELS)}")
        names = [k for k, _ in b.ratios]
        if set(names) != set(spec.slots) or len(names) != len(spec.slots):
            raise ArchError(f"block {spec.name}: ratios must name exactly {list(spec.slots)} "
                            f"(got {names})")
        for k, r in b.ratios:
            if not any(abs(r - a) < 1e-9 for a in allowed):
                raise ArchError(f"block {spec.name}: ratio {k}={r} is not one of "
                                f"{sorted(allowed, reverse=True)}")
