"""The search space of a supernet config: legal archs, sampling, presets and costs (SNED §3.2).

* Dynamic channels: every elastic layer picks a ratio from ``config.ratios`` independently.
* Fine-grained dynamic blocks: every diffusion block keeps any subset of its components; the
  feed-forward goes when all of the block's attentions go.
* Super-position (§3.3): the resolution is part of the arch; ``config.max_cost`` caps the cost
  allowed at a resolution, and sampling re-draws archs over the cap.
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
    """

    def __init__(self, config: ModelConfig | str) -> None:
        self.config = load_config(config)
        self.specs: list[BlockSpec] = unet_blocks(self.config)
        self.ratios = tuple(sorted(self.config.ratios, reverse=True))
        self._full_params = self.cost(self.largest()).params
        self._preset_cache: dict[str, Arch] = {}

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
                    has_attn = any(c in ATTENTIONS for c in kept)
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
        r = self.config.min_ratio if min_ratio is None else min_ratio
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
            min_ratio: smallest channel ratio allowed (warm-up floor); default config.min_ratio.
            min_keep: smallest kept fraction of each block's components (warm-up floor;
                default 0.4, as at the end of the paper's warm-up).
            resolution: fixed resolution, or None to draw one uniformly from the config's.
        """
        rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
        floor = self.config.min_ratio if min_ratio is None else float(min_ratio)
        keep_floor = 0.4 if min_keep is None else float(min_keep)
        if not 0.0 <= keep_floor <= 1.0:
            raise ValueError(f"min_keep must be in [0, 1] (got {min_keep})")
        choices = [r for r in self.ratios if r >= floor - 1e-9]
        if not choices:
            raise ValueError(f"min_ratio {min_ratio} is above every ratio choice {self.ratios}")
        if resolution is not None:
            check_resolution(self.config, resolution)
        for _ in range(max_tries):
            res = resolution if resolution is not None else int(
                rng.choice(self.config.resolutions))
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

    def validate(self, arch: Arch, check_cap: bool = True) -> Arch:
        """Raise ArchError naming the offending field; return ``arch`` when legal."""
        validate(self.config, arch, self.specs)
        if check_cap and not self.within_cap(arch):
            c = self.cost(arch)
            raise ArchError(f"arch costs params={c.params:,} macs={c.macs:,} at resolution "
                            f"{arch.resolution}, over the cap {self.config.max_cost[arch.resolution]}"
                            f" of config {self.config.name!r}")
        return arch

    # ----------------------------------------------------------------------------- presets
    def preset(self, name: str, resolution: int | None = None) -> Arch:
        """Named preset S/M/L/B ≈ 40/60/80/100 % of the supernet's parameters.

        Deterministic: ratios step down uniformly, one layer at a time (largest layers first),
        until the parameter target is met; if every layer is already at the minimum ratio,
        attention components are dropped (largest first) until it is.
        """
        if name not in PRESETS:
            raise ArchError(f"unknown preset {name!r}; presets are {list(PRESETS)}")
        if name not in self._preset_cache:
            self._preset_cache[name] = self._fit_params(PRESETS[name] * self._full_params)
        arch = self._preset_cache[name]
        res = self.config.resolutions[0] if resolution is None else resolution
        return self.validate(arch.at(res))

    def _fit_params(self, target: float) -> Arch:
        cfg = self.config
        ratios = [dict(b.ratios) for b in self.largest().blocks]
        keeps = [list(s.components) for s in self.specs]
        params = self._params_fn()
        if params(ratios, keeps) <= target:
            return self._arch(ratios, keeps)
        # Layers ordered by their full parameter count (largest first), ties by position.
        order = sorted(((s_i, slot) for s_i, s in enumerate(self.specs) for slot in s.slots),
                       key=lambda k: (-self._slot_params(k[0], k[1], 1.0), k))
        for r in self.ratios[1:]:
            for s_i, slot in order:
                ratios[s_i][slot] = r
                if params(ratios, keeps) <= target:
                    return self._arch(ratios, keeps)
        drops = sorted(((s_i, a) for s_i, s in enumerate(self.specs) for a in s.attentions),
                       key=lambda k: (-self._slot_params(k[0], k[1], cfg.min_ratio), k))
        for s_i, a in drops:
            keeps[s_i].remove(a)
            if params(ratios, keeps) <= target:
                break
        return self._arch(ratios, keeps)

    def _arch(self, ratios: list[dict[str, float]], keeps: list[list[str]]) -> Arch:
        return Arch(self.config.resolutions[0],
                    tuple(self._block(s, r, k) for s, r, k in zip(self.specs, ratios, keeps)),
                    self.config.name)

    def _params_fn(self):
        cfg, res = self.config, self.config.resolutions[0]
        fixed = stem_cost(cfg, res, 1).params

        def params(ratios, keeps) -> int:
            total = fixed
            for s, r, k in zip(self.specs, ratios, keeps):
                total += block_cost(cfg, s, block_layout(s, self._block(s, r, k), cfg),
                                    res, 1).params
            return total
        return params

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
