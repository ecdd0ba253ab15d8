"""The search space of a supernet config: legal archs, sampling, presets and costs (SNED §3.2).

* Dynamic channels: every elastic layer picks a ratio from ``config.ratios`` independently.
* Fine-grained dynamic blocks: every diffusion block keeps any subset of its components; the
  feed-forward goes when all of the block's attentions go.
* Super-position (§3.3): the resolution is part of the arch; ``config.max_cost`` caps the cost
  allowed at a resolution. Sampling picks the resolution first, then re-draws archs (never the
  resolution) until one is under that resolution's cap.
* Floors: what training samples once its warm-up is over — every ratio ≥ ``min_ratio`` and every
  block keeping ≥ ⌈``min_keep`` × n⌉ of its n components. Presets lie inside these floors;
  :meth:`SearchSpace.for_run` raises them to a run's ``train.final_min_*`` so a trained run's
  presets, searches and arch checks stay inside what it trained.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from .arch import (Arch, ArchError, BlockArch, BlockSpec, block_layout, check_resolution,
                   slot_width, unet_blocks, validate)
from .config import ATTENTIONS, ModelConfig, load_config
from .cost import (Cost, attention_cost, block_cost, ff_cost, model_cost, resblock_cost,
                   stem_cost)

PRESETS = {"S": 0.4, "M": 0.6, "L": 0.8, "B": 1.0}
"""Named presets: fraction of the supernet's parameters."""

MIN_KEEP = 0.4
"""Final kept-fraction floor of training (the paper's 40 %; ``TrainConfig.final_min_keep``)."""


def parse_preset(value: str | float) -> tuple[str, float]:
    """The one parser of preset names: ``"S"``/``"M"``/``"L"``/``"B"``, or a fraction F in
    (0, 1] of the supernet's parameters given as a float or a string (``"0.75"``).

    Returns:
        ``(label, fraction)``: the name for S/M/L/B, else the fraction written shortest
        (``"0.75"``, ``"1"``) — the label used in output names and tables.
    Raises:
        ArchError naming the value.
    """
    if isinstance(value, str) and value.strip() in PRESETS:
        return value.strip(), PRESETS[value.strip()]
    f = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        f = float(value)
    elif isinstance(value, str):
        try:
            f = float(value.strip())
        except ValueError:
            f = None
    if f is None or not (0.0 < f <= 1.0):  # also refuses nan
        raise ArchError(f"unknown preset {value!r}; presets are {', '.join(PRESETS)} or a "
                        f"fraction in (0, 1] of the supernet's parameters (e.g. 0.75)")
    return f"{f:g}", f


def active_slots(spec: BlockSpec, keep: tuple[str, ...]) -> set[str]:
    """Slots of a block whose ratio matters: its kept components, plus ``ff`` when an
    attention is kept."""
    active = set(keep)
    if spec.ff_hidden and any(c in ATTENTIONS for c in keep):
        active.add("ff")
    return active


@dataclass(frozen=True)
class ElasticLayer:
    block: str
    slot: str
    full_width: int
    choices: tuple[int, ...]  # active widths (heads for attention) per ratio choice


class SearchSpace:
    """Legal archs of one supernet config.

    Args:
        config: a ModelConfig, built-in name or YAML path.
        min_ratio / min_keep: the floors of what training samples after warm-up (default: the
            config's ``min_ratio`` and :data:`MIN_KEEP`); sampling defaults and presets use
            them.
    """

    @classmethod
    def for_run(cls, config: ModelConfig | str, train=None) -> "SearchSpace":
        """The space of a supernet trained with ``train`` — a :class:`~sned.train.config.
        TrainConfig`, or the ``train`` dict a checkpoint records (None: the defaults).

        Its floors are the higher of the config's (``min_ratio``, :data:`MIN_KEEP`) and the
        run's ``final_min_ratio`` (snapped up to a ratio choice, as the warm-up does) /
        ``final_min_keep``: what training drew after its warm-up.
        """
        cfg = load_config(config)
        get = train.get if isinstance(train, dict) else (lambda k, d: getattr(train, k, d))
        ratio = float(get("final_min_ratio", cfg.min_ratio) or 0.0)
        keep = float(get("final_min_keep", MIN_KEEP) or 0.0)
        ratio = min((r for r in cfg.ratios if r >= ratio - 1e-9), default=ratio)
        return cls(cfg, max(cfg.min_ratio, ratio), max(MIN_KEEP, keep))

    def __init__(self, config: ModelConfig | str, min_ratio: float | None = None,
                 min_keep: float = MIN_KEEP) -> None:
        self.config = load_config(config)
        self.specs: list[BlockSpec] = unet_blocks(self.config)
        self.ratios = tuple(sorted(self.config.ratios, reverse=True))
        self.min_ratio = self.config.min_ratio if min_ratio is None else float(min_ratio)
        self.min_keep = float(min_keep)
        if not 0.0 <= self.min_keep <= 1.0:
            raise ValueError(f"min_keep must be in [0, 1] (got {min_keep})")
        if not any(r >= self.min_ratio - 1e-9 for r in self.ratios):
            raise ValueError(f"min_ratio {min_ratio} is above every ratio choice {self.ratios}")
        self._full_params = self.cost(self.largest()).params
        self._family: tuple[np.ndarray, list[Arch]] | None = None
        self._top_cache: dict[int, Arch] = {}

    # ----------------------------------------------------------------------------- structure
    @property
    def full_params(self) -> int:
        """Parameters of the whole supernet."""
        return self._full_params

    @property
    def elastic_layers(self) -> list[ElasticLayer]:
        cfg = self.config
        return [ElasticLayer(s.name, slot, slot_width(cfg, s, slot, 1.0),
                             tuple(slot_width(cfg, s, slot, r) for r in self.ratios))
                for s in self.specs for slot in s.slots]

    def log10_size(self) -> float:
        """log10 of the number of distinct subnets (dropped layers' ratios do not count)."""
        n_ratio = len(self.ratios)
        total = math.log10(len(self.config.resolutions))
        for s in self.specs:
            count = 0
            comps = s.components
            for k in range(len(comps) + 1):
                for kept in combinations(comps, k):
                    has_attn = bool(s.ff_hidden) and any(c in ATTENTIONS for c in kept)
                    count += n_ratio ** (len(kept) + has_attn)
            total += math.log10(count)
        return total

    # ----------------------------------------------------------------------------- archs
    def _block(self, spec: BlockSpec, ratios: dict[str, float], keep) -> BlockArch:
        return BlockArch(tuple(c for c in spec.components if c in keep),
                         tuple((slot, float(ratios[slot])) for slot in spec.slots))

    def uniform(self, ratio: float = 1.0, resolution: int | None = None) -> Arch:
        """Every layer at ``ratio``, every component kept."""
        res = self.config.resolutions[0] if resolution is None else resolution
        return Arch(res, tuple(self._block(s, {k: ratio for k in s.slots}, s.components)
                               for s in self.specs), self.config.name)

    def largest(self, resolution: int | None = None) -> Arch:
        return self.uniform(1.0, resolution)

    def smallest(self, resolution: int | None = None, min_ratio: float | None = None,
                 min_keep: float = 0.0) -> Arch:
        """All layers at the minimum ratio, each block keeping only ``ceil(min_keep × n)``
        components (ResBlock first, then attentions in forward order)."""
        r = self.min_ratio if min_ratio is None else min_ratio
        arch = self.uniform(r, resolution)
        blocks = []
        for s, b in zip(self.specs, arch.blocks):
            n_keep = math.ceil(min_keep * len(s.components) - 1e-9)
            blocks.append(BlockArch(s.components[:n_keep], b.ratios))
        return Arch(arch.resolution, tuple(blocks), arch.config)

    def sample(self, rng: np.random.Generator | int, min_ratio: float | None = None,
               min_keep: float | None = None, resolution: int | None = None,
               max_tries: int = 1000) -> Arch:
        """Draw an arch uniformly subject to floors and the resolution's cost cap.

        Args:
            rng: numpy Generator (or seed). Same rng state → same arch (DDP ranks rely on it).
            min_ratio: smallest channel ratio allowed (warm-up floor); default the space's.
            min_keep: smallest kept fraction of each block's components (warm-up floor);
                default the space's (0.4, as at the end of the paper's warm-up).
            resolution: fixed resolution, or None to draw one uniformly from the config's —
                once: archs over the cap are re-drawn at the same resolution.
        Raises:
            ArchError when no draw is under the cap after ``max_tries``.
        """
        rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
        floor = self.min_ratio if min_ratio is None else float(min_ratio)
        keep_floor = self.min_keep if min_keep is None else float(min_keep)
        if not 0.0 <= keep_floor <= 1.0:
            raise ValueError(f"min_keep must be in [0, 1] (got {min_keep})")
        choices = [r for r in self.ratios if r >= floor - 1e-9]
        if not choices:
            raise ValueError(f"min_ratio {min_ratio} is above every ratio choice {self.ratios}")
        if resolution is not None:
            check_resolution(self.config, resolution)
        res = resolution if resolution is not None else int(rng.choice(self.config.resolutions))
        for _ in range(max_tries):
            blocks = []
            for s in self.specs:
                n = len(s.components)
                lo = math.ceil(keep_floor * n - 1e-9)
                k = int(rng.integers(lo, n + 1))
                kept = set(rng.choice(n, size=k, replace=False).tolist())
                ratios = {slot: choices[int(rng.integers(len(choices)))] for slot in s.slots}
                blocks.append(self._block(s, ratios, [s.components[i] for i in sorted(kept)]))
            arch = Arch(res, tuple(blocks), self.config.name)
            if self.within_cap(arch):
                return arch
        raise ArchError(f"no arch under the cost cap {self.config.max_cost.get(res)} at "
                        f"resolution {res} after {max_tries} draws; raise the cap or min ratios")

    def check_floors(self, arch: Arch, source: str = "arch") -> Arch:
        """Raise ArchError when ``arch`` lies outside the floors (a ratio below ``min_ratio``
        or a block keeping fewer than ⌈``min_keep`` × n⌉ components), naming the block, the
        value and the floor; return ``arch`` otherwise."""
        for s, b in zip(self.specs, arch.blocks):
            active = active_slots(s, b.keep)
            for slot, r in b.ratios:
                if slot in active and r < self.min_ratio - 1e-9:
                    raise ArchError(f"{source}: block {s.name!r} {slot} ratio {r:g} is below the "
                                    f"floor {self.min_ratio:g} the supernet was trained to "
                                    f"(train.final_min_ratio)")
            need = math.ceil(self.min_keep * len(s.components) - 1e-9)
            if len(b.keep) < need:
                raise ArchError(f"{source}: block {s.name!r} keeps {len(b.keep)} of "
                                f"{len(s.components)} components, below the floor {need} "
                                f"(⌈{self.min_keep:g} × {len(s.components)}⌉) the supernet was "
                                f"trained to (train.final_min_keep)")
        return arch

    # ----------------------------------------------------------------------------- costs
    def cost(self, arch: Arch, resolution: int | None = None, frames: int | None = None
             ) -> Cost:
        return model_cost(self.config, arch, resolution, frames)

    def within_cap(self, arch: Arch) -> bool:
        cap = self.config.max_cost.get(arch.resolution)
        if not cap:
            return True
        c = self.cost(arch)
        return all(getattr(c, k) <= v for k, v in cap.items())

    def validate(self, arch: Arch, check_cap: bool = True, source: str | None = None) -> Arch:
        """Raise ArchError naming the offending field (and ``source``, the arch's file, when
        given); return ``arch`` when legal."""
        if source is not None:
            try:
                return self.validate(arch, check_cap)
            except ArchError as e:
                raise ArchError(f"{source}: {e}") from None
        validate(self.config, arch, self.specs)
        if check_cap and not self.within_cap(arch):
            c = self.cost(arch)
            raise ArchError(f"arch costs params={c.params:,} macs={c.macs:,} at resolution "
                            f"{arch.resolution}, over the cap {self.config.max_cost[arch.resolution]}"
                            f" of config {self.config.name!r}")
        return arch

    # ----------------------------------------------------------------------------- presets
    def preset(self, name: str | float, resolution: int | None = None) -> Arch:
        """Preset ``name`` at ``resolution`` (default the config's first): S/M/L/B = 40/60/80/
        100 % of the supernet's parameters, or a fraction F in (0, 1] (float or ``"0.75"``, see
        :func:`parse_preset`).

        Deterministic: the arch on :meth:`descent` whose parameter count is closest to
        F × :attr:`full_params` (ties: the larger). It lies inside the space's floors, i.e.
        inside what training samples. Raises ArchError when it is over ``resolution``'s cap.
        """
        _, frac = parse_preset(name)
        res = self.config.resolutions[0] if resolution is None else resolution
        return self.validate(self.family_arch(frac, res))

    # ----------------------------------------------------------------------------- the family
    def family(self) -> tuple[np.ndarray, list[Arch]]:
        """The served family: every arch of :meth:`descent` (at the config's first
        resolution) with its parameter count, params non-increasing — the one definition
        presets (:meth:`preset`), search seeds and the training sampler's draws
        (:class:`~sned.train.arch_sampler.ArchSampler`) use. Computed once per space."""
        if self._family is None:
            archs, params = [], []
            for arch, cost in self._walk():
                archs.append(arch)
                params.append(cost.params)
            self._family = (np.asarray(params, dtype=np.int64), archs)
        return self._family

    def family_arch(self, fraction: float, resolution: int | None = None,
                    fit_cap: bool = False) -> Arch:
        """The served family's arch at ``fraction`` of the supernet's parameters: the arch on
        :meth:`descent` whose parameter count is closest to ``fraction`` × :attr:`full_params`
        (ties: the larger, i.e. the first on the path). With ``fit_cap``, the first arch at or
        after it on the path that is under ``resolution``'s cost cap (ArchError when none is).

        Returns:
            Arch at ``resolution`` (default the config's first); not validated against the cap
            unless ``fit_cap``.
        """
        params, archs = self.family()
        target = float(fraction) * self._full_params
        j = int(np.searchsorted(-params, -target, side="left"))  # first with params <= target
        if j >= len(params):
            i = len(params) - 1
        elif j == 0:
            i = 0
        else:  # the first arch holding the params of arch j-1 (ties: the first on the path)
            k = int(np.searchsorted(-params, -params[j - 1], side="left"))
            i = k if abs(params[k] - target) <= abs(params[j] - target) else j
        i = int(np.searchsorted(-params, -params[i], side="left"))
        res = self.config.resolutions[0] if resolution is None else resolution
        if not fit_cap:
            return archs[i].at(res)
        for arch in archs[i:]:
            if self.within_cap(arch.at(res)):
                return arch.at(res)
        raise ArchError(f"no arch of the served family at or below {fraction:.3g} of the params "
                        f"is under the cost cap {self.config.max_cost.get(res)} at resolution "
                        f"{res} of config {self.config.name!r}")

    def largest_under_cap(self, resolution: int | None = None) -> Arch:
        """The largest arch training runs at ``resolution``: the full supernet when it is under
        the resolution's cap (or there is none), else the first arch of :meth:`descent` that is
        — the distillation teacher of the sandwich sampler and the warm-up's stand-in for the
        full arch. Deterministic; raises ArchError when nothing inside the floors fits."""
        res = self.config.resolutions[0] if resolution is None else resolution
        if res not in self._top_cache:
            check_resolution(self.config, res)
            cap = self.config.max_cost.get(res) or {}
            for arch, cost in self._walk(res, self.config.frames):
                if all(getattr(cost, k) <= v for k, v in cap.items()):
                    self._top_cache[res] = self.validate(arch)
                    break
            else:
                raise ArchError(f"no arch with ratios >= {self.min_ratio} and kept fraction >= "
                                f"{self.min_keep} is under the cost cap {cap} at resolution "
                                f"{res} of config {self.config.name!r}; raise the cap")
        return self._top_cache[res]

    def descent(self, resolution: int | None = None):
        """The deterministic path presets and caps are fitted on, from the full supernet down:
        channel ratios step down one ratio choice at a time, one layer at a time (layers with
        the most parameters first), to the space's ``min_ratio``; then attention components
        are dropped (largest first) while each block keeps ≥ ⌈``min_keep`` × n⌉ components.
        Every arch on it lies inside the floors.

        Yields:
            Arch at ``resolution`` (default the config's first); params never increase.
        """
        for arch, _ in self._walk(resolution):
            yield arch

    def _walk(self, resolution: int | None = None, frames: int = 1):
        """(Arch, Cost at resolution × frames) along :meth:`descent`, costed incrementally
        (one block per step) with the one cost model's block and stem costs."""
        cfg = self.config
        res = cfg.resolutions[0] if resolution is None else resolution
        ratios = [dict(b.ratios) for b in self.largest().blocks]
        keeps = [list(s.components) for s in self.specs]

        def block(i: int) -> Cost:
            s = self.specs[i]
            return block_cost(cfg, s, block_layout(s, self._block(s, ratios[i], keeps[i]), cfg),
                              res, frames)

        fixed = stem_cost(cfg, res, frames)
        per = [block(i) for i in range(len(self.specs))]

        def state():
            arch = Arch(res, tuple(self._block(s, r, k) for s, r, k in
                                   zip(self.specs, ratios, keeps)), cfg.name)
            return arch, sum(per, fixed)

        yield state()
        order = sorted(((i, slot) for i, s in enumerate(self.specs) for slot in s.slots),
                       key=lambda k: (-self._slot_params(k[0], k[1], 1.0), k))
        for r in (r for r in self.ratios[1:] if r >= self.min_ratio - 1e-9):
            for i, slot in order:
                ratios[i][slot] = r
                per[i] = block(i)
                yield state()
        floor_ratio = min(r for r in self.ratios if r >= self.min_ratio - 1e-9)
        drops = sorted(((i, a) for i, s in enumerate(self.specs) for a in s.attentions),
                       key=lambda k: (-self._slot_params(k[0], k[1], floor_ratio), k))
        for i, a in drops:
            n = len(self.specs[i].components)
            if len(keeps[i]) - 1 < math.ceil(self.min_keep * n - 1e-9):
                continue
            keeps[i].remove(a)
            per[i] = block(i)
            yield state()

    def _slot_params(self, s_i: int, slot: str, ratio: float) -> int:
        """Parameters one elastic layer holds at ``ratio``."""
        cfg, s = self.config, self.specs[s_i]
        w = slot_width(cfg, s, slot, ratio)
        if slot == "resblock":
            return resblock_cost(cfg, s, w, 0).params
        if slot == "ff":
            return ff_cost(s, w, 0).params
        return attention_cost(cfg, s, slot, w, 1, 1).params

    def describe(self) -> dict:
        """Summary for ``sned space``: layers, choices, log10 size and presets."""
        presets = {}
        for name in PRESETS:
            a = self.preset(name)
            c = self.cost(a)
            presets[name] = {"params": c.params, "macs": c.macs, "resolution": a.resolution,
                             "frames": self.config.frames,
                             "fraction": round(c.params / self._full_params, 4)}
        layers = self.elastic_layers
        return {
            "config": self.config.name,
            "kind": self.config.kind,
            "supernet_params": self._full_params,
            "ratios": list(self.ratios),
            "resolutions": list(self.config.resolutions),
            "max_cost": {str(k): v for k, v in self.config.max_cost.items()},
            "blocks": [{"name": s.name, "components": list(s.components), "in": s.in_ch,
                        "out": s.out_ch} for s in self.specs],
            "elastic_layers": [{"name": f"{l.block}.{l.slot}", "full": l.full_width,
                                "choices": list(l.choices)} for l in layers],
            "num_elastic_layers": len(layers),
            "log10_size": round(self.log10_size(), 2),
            "presets": presets,
        }



def search_space(config: ModelConfig | str) -> SearchSpace:
    """The :class:`SearchSpace` of a config (name, YAML path or ModelConfig)."""
    return SearchSpace(config)
