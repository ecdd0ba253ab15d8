"""The cost model: parameters and multiply-accumulates of one denoiser forward.

Analytic, allocation-free (a 1.6 B supernet is costed in microseconds) and the only source of
cost numbers in sned: the search space, presets, CLI, training caps and reports all call it.
Tests check it against real parameter counts and ``torch.utils.flop_counter`` on real forwards.

MACs count convolutions, linear layers and the two attention matmuls (QKᵀ and AV) — what
``FlopCounterMode`` counts (FLOPs = 2 × MACs) — for batch 1. Norms, activations and resizing are
not counted.
"""

from __future__ import annotations

from dataclasses import dataclass

from .arch import Arch, BlockLayout, BlockSpec, full_layout, resolve, unet_blocks
from .config import ModelConfig
from .models.autoencoder import load_autoencoder_config
from .nn.text_pool import attention_pool_cost


@dataclass(frozen=True)
class Cost:
    params: int
    macs: int

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.params + other.params, self.macs + other.macs)

    def __mul__(self, k: int) -> "Cost":
        return Cost(self.params * k, self.macs * k)


ZERO = Cost(0, 0)


def _linear(n_in: int, n_out: int, tokens: int, bias: bool = True) -> Cost:
    return Cost(n_in * n_out + (n_out if bias else 0), tokens * n_in * n_out)


def _conv3x3(n_in: int, n_out: int, positions: int, kernel: int = 3) -> Cost:
    """A same-padded ``kernel``×``kernel`` conv (3×3 by default) with bias."""
    k2 = kernel * kernel
    return Cost(k2 * n_in * n_out + n_out, positions * k2 * n_in * n_out)


def resblock_cost(cfg: ModelConfig, spec: BlockSpec, hidden: int, positions: int,
                  kernel: int = 3) -> Cost:
    """ResBlock residual branch at ``hidden`` width and conv ``kernel`` (the skip path is
    costed separately)."""
    norms = Cost(2 * spec.in_ch + 2 * hidden, 0)
    emb = _linear(cfg.time_embed_dim, hidden, 1) * (1 if cfg.time_embedding == "add" else 2)
    return (norms + _conv3x3(spec.in_ch, hidden, positions, kernel) + emb
            + _conv3x3(hidden, spec.out_ch, positions, kernel))


def attention_cost(cfg: ModelConfig, spec: BlockSpec, attn: str, heads: int, frames: int,
                   hw: int) -> Cost:
    """Pre-norm attention with ``heads`` heads over a (frames × hw) grid of tokens."""
    dim, inner, n = spec.out_ch, heads * cfg.head_dim, frames * hw
    bias = cfg.attention_bias
    cost = Cost(2 * dim, 0) + _linear(dim, inner, n, bias=bias) + _linear(inner, dim, n)
    if attn == "cross_attn":
        ctx = cfg.text_len + 1  # + the null token
        cost += _linear(cfg.text_dim, inner, ctx, bias=bias) * 2
        scores = n * ctx
    else:
        cost += _linear(dim, inner, n, bias=bias) * 2
        scores = frames * hw * hw if attn == "spatial_attn" else hw * frames * frames
    return cost + Cost(0, 2 * scores * inner)


def ff_cost(spec: BlockSpec, hidden: int, positions: int) -> Cost:
    dim = spec.out_ch
    return Cost(2 * dim, 0) + _linear(dim, hidden, positions) + _linear(hidden, dim, positions)


def block_cost(cfg: ModelConfig, spec: BlockSpec, layout: BlockLayout, resolution: int,
               frames: int) -> Cost:
    side = resolution // 2 ** spec.level
    hw = side * side
    n = frames * hw
    cost = _linear(spec.in_ch, spec.out_ch, n) if spec.in_ch != spec.out_ch else ZERO
    if "resblock" in layout.keep:
        cost += resblock_cost(cfg, spec, layout.resblock_hidden, n, layout.kernel)
    for attn, heads in layout.heads:
        cost += attention_cost(cfg, spec, attn, heads, frames, hw)
    if layout.ff_hidden:
        cost += ff_cost(spec, layout.ff_hidden, n)
    return cost


def stem_cost(cfg: ModelConfig, resolution: int, frames: int) -> Cost:
    """Everything outside the diffusion blocks: embeddings, conv in/out, down/upsamplers."""
    c0, e = cfg.model_channels, cfg.time_embed_dim
    embed = _linear(c0, e, 1) + _linear(e, e, 1)
    null_token = Cost(cfg.text_dim, 0) if cfg.conditional else ZERO
    pooled = _linear(cfg.text_dim, e, 1) if cfg.pooled_text else ZERO
    if cfg.pooled_text and cfg.text_pool == "attention":
        pooled += Cost(*attention_pool_cost(cfg.text_dim, cfg.text_len + 1))  # + null token
    cost = embed + (embed if cfg.kind == "ssr" else ZERO) + null_token + pooled
    n0 = frames * resolution * resolution
    cost += _conv3x3(cfg.in_channels + cfg.conditioning_channels, c0, n0)
    cost += Cost(2 * c0, 0) + _conv3x3(c0, cfg.out_channels, n0)
    for lvl in range(len(cfg.levels) - 1):
        w = cfg.level_width(lvl)
        below = frames * (resolution // 2 ** (lvl + 1)) ** 2
        cost += _conv3x3(w, w, below)  # stride-2 downsample
        w_up = cfg.level_width(lvl + 1)
        here = frames * (resolution // 2 ** lvl) ** 2
        cost += _conv3x3(w_up, w_up, here)  # upsample conv at the higher resolution
    return cost


def model_cost(cfg: ModelConfig, arch: Arch | list[BlockLayout] | None = None,
               resolution: int | None = None, frames: int | None = None) -> Cost:
    """Params and MACs (batch 1) of ``cfg``'s subnet ``arch`` (None = full supernet).

    ``resolution`` defaults to the arch's, else the config's first; ``frames`` to the config's.
    Pass a list of layouts to cost an already-resolved arch.
    """
    specs = unet_blocks(cfg)
    if arch is None:
        layouts = [full_layout(s) for s in specs]
    elif isinstance(arch, Arch):
        layouts = resolve(cfg, arch, specs)
        resolution = arch.resolution if resolution is None else resolution
    else:
        layouts = arch
    resolution = cfg.resolutions[0] if resolution is None else resolution
    frames = cfg.frames if frames is None else frames
    if frames < 1:
        raise ValueError(f"frames must be >= 1 (got {frames})")
    if resolution < 1 or resolution % cfg.downsample_factor:
        raise ValueError(f"resolution {resolution} is not a positive multiple of config "
                         f"{cfg.name!r}'s downsampling factor {cfg.downsample_factor}")
    cost = stem_cost(cfg, resolution, frames)
    for spec, layout in zip(specs, layouts):
        cost += block_cost(cfg, spec, layout, resolution, frames)
    return cost



# --------------------------------------------------------------------------------- autoencoder
def _conv3d(n_in: int, n_out: int, k: int, positions: int) -> Cost:
    return Cost(k ** 3 * n_in * n_out + n_out, positions * k ** 3 * n_in * n_out)


def autoencoder_cost(cfg, part: str, frames: int, resolution: int) -> Cost:
    """Params and MACs (batch 1) of an :class:`~sned.models.autoencoder.AutoencoderConfig`'s
    ``"encoder"`` (on a ``frames`` × ``resolution``² clip) or ``"decoder"`` (producing one).

    A transposed conv is counted on its (replicate-padded) input positions, as
    ``FlopCounterMode`` does.
    """
    if part not in ("encoder", "decoder"):
        raise ValueError(f"part must be 'encoder' or 'decoder' (got {part!r})")
    ft, fs = cfg.temporal_factor, cfg.spatial_factor
    if frames < 1 or frames % ft or resolution < 1 or resolution % fs:
        raise ValueError(f"a {frames} x {resolution}px clip does not fit autoencoder "
                         f"{cfg.name!r} (frames a multiple of {ft}, resolution of {fs})")
    z, g = cfg.latent_channels, cfg.in_channels
    sizes = [(frames, resolution)]  # (T, side) entering each stage, then the latent's
    for st, ss, _ in cfg.stage_strides():
        t, r = sizes[-1]
        sizes.append((t // st, r // ss))

    def pos(i: int) -> int:
        t, r = sizes[i]
        return t * r * r

    def res_block(ch: int, positions: int) -> Cost:
        return Cost(4 * ch, 0) + _conv3d(ch, ch, 3, positions) * 2

    n = cfg.stages
    if part == "encoder":
        cost = _conv3d(g, cfg.hidden, 3, pos(0))
        ch = cfg.hidden
        for i in range(n):
            cost += _conv3d(ch, cfg.width(i), 4, pos(i + 1)) + res_block(cfg.width(i), pos(i + 1))
            ch = cfg.width(i)
        cost += Cost(2 * ch, 0) + _conv3d(ch, 2 * z, 3, pos(n)) + _conv3d(2 * z, 2 * z, 1, pos(n))
        return cost
    cost = _conv3d(z, z, 1, pos(n))
    ch = z
    strides = cfg.stage_strides()
    for i in range(n):
        level = n - 1 - i  # producing sizes[level] from sizes[level + 1]
        out = cfg.width(level)
        (t, r), (st, ss, _) = sizes[level + 1], strides[level]
        padded = (t + 4 - st) * (r + 4 - ss) ** 2
        cost += _conv3d(ch, out, 4, padded) + res_block(out, pos(level)) * 2
        ch = out
    return cost + _conv3d(ch, g, 3, pos(0))


def decoder_cost(cfg: ModelConfig, resolution: int | None = None, frames: int | None = None
                 ) -> tuple[Cost, int, int]:
    """For a latent config: the cost of decoding one sample of ``frames`` × ``resolution``²
    latents (defaults: the config's) with the autoencoder the config names, and the pixel
    (frames, resolution) it produces."""
    if cfg.autoencoder is None:
        raise ValueError(f"config {cfg.name!r} is a pixel model; it has no decoder")
    ae = load_autoencoder_config(cfg.autoencoder)
    res = cfg.resolutions[0] if resolution is None else resolution
    t = cfg.frames if frames is None else frames
    pix_t, pix_r = t * ae.temporal_factor, res * ae.spatial_factor
    return autoencoder_cost(ae, "decoder", pix_t, pix_r), pix_t, pix_r


TRAINING_MACS_PER_FORWARD = 3
"""Training MACs of one sample = 3 × its forward MACs (forward + backward, the backward costing
twice the forward: gradients with respect to activations and to weights)."""


def training_macs(cfg: ModelConfig, archs: list[Arch], samples: int, frames: int | None = None
                  ) -> int:
    """MACs of one training step that runs every arch of ``archs`` on ``samples`` clips each
    (forward + backward, at each arch's resolution and ``frames``, default the config's)."""
    return TRAINING_MACS_PER_FORWARD * samples * sum(model_cost(cfg, a, frames=frames).macs
                                                     for a in archs)
