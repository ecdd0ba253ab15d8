"""``sned extract`` and ``sned sample``: standalone subnets and video generation."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from .cli import command


# --------------------------------------------------------------------------------- extract
def _extract_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="training run dir or checkpoint folder")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--preset", help="S, M, L or B")
    g.add_argument("--arch", help="arch JSON file (e.g. from sned search)")
    p.add_argument("--ema", action="store_true", help="extract the EMA weights")
    p.add_argument("--resolution", type=int, help="resolution the subnet is for (default: the "
                                                  "config's first)")
    p.add_argument("--out", required=True, help="output model folder")


@command("extract", "write a standalone subnet folder (config.json + model.safetensors)")(
    _extract_args)
def run_extract(args: argparse.Namespace) -> int:
    from .loading import load_denoiser

    den = load_denoiser(args.checkpoint, preset=args.preset, arch=args.arch, ema=args.ema,
                        resolution=args.resolution)
    folder = export_subnet(den, args.out, ema=args.ema)
    print(json.dumps({"out": str(folder), **json.loads((folder / "config.json").read_text())
                      ["card"]}))
    return 0


def export_subnet(den, out: str | Path, ema: bool) -> Path:
    """Extract ``den``'s arch and save it with its arch file and a short model card."""
    from .extract import extract, save_pretrained
    from .space import SearchSpace

    space = SearchSpace(den.config)
    static = extract(den.model, den.arch)
    cost = space.cost(den.arch)
    card = {"config": den.config.name, "kind": den.config.kind, "subnet": den.label,
            "resolution": den.arch.resolution, "frames": den.config.frames,
            "params": cost.params, "macs": cost.macs,
            "supernet_params": space.cost(space.largest()).params,
            "weights": "ema" if ema else "raw", "source": den.source}
    text = (f"# sned subnet: {den.config.name} / {den.label}\n\n"
            f"Extracted from `{den.source}` ({card['weights']} weights).\n\n"
            f"| kind | resolution | frames | params | MACs / forward (batch 1) | of supernet |\n"
            f"|---|---|---|---|---|---|\n"
            f"| {den.config.kind} | {card['resolution']} | {card['frames']} | "
            f"{cost.params:,} | {cost.macs:,} | {cost.params / card['supernet_params']:.1%} |\n\n"
            f"Load with `sned.load_pretrained(folder)`; sample with `sned sample folder "
            f"--prompt ...`.\n")
    return save_pretrained(static, out, extra={"diffusion": den.diffusion.to_dict(), "card": card},
                           files={"README.md": text, "arch.json": den.arch.to_json(indent=1)})


def slug(text: str, limit: int = 40) -> str:
    s = re.sub(r"[^a-zA-Z0-9]+", "-", text.strip().lower()).strip("-")
    return s[:limit] or "empty"



# --------------------------------------------------------------------------------- sample
def _sample_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="base model: training run dir / checkpoint, or model folder")
    p.add_argument("--ssr", help="SSR model (run dir / checkpoint / model folder) for the "
                                 "cascade")
    p.add_argument("--prompt", action="append", default=[], help="caption (repeat for a batch)")
    p.add_argument("--preset", help="preset for every stage, or one per stage: S,M,B (base, "
                                    "SSR 1, SSR 2); default B (supernet checkpoints only)")
    p.add_argument("--arch", help="arch file for the base supernet (instead of --preset)")
    p.add_argument("--resolution", type=int, help="final resolution (default: the largest the "
                                                  "cascade reaches)")
    p.add_argument("--frames", type=int)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--scheduler", default="ddim", choices=["ddim", "dpm", "ddpm"])
    p.add_argument("--cfg", type=float, default=5.0, help="classifier-free guidance scale")
    p.add_argument("--dynamic-threshold", type=float, help="e.g. 0.995 (Imagen)")
    p.add_argument("--aug-level", type=float, default=0.2, help="SSR noise-augmentation level")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ema", action=argparse.BooleanOptionalAction, default=True,
                   help="EMA weights of training checkpoints (default on)")
    p.add_argument("--device", default="auto")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA)")
    p.add_argument("--formats", default="mp4,gif,png", help="any of mp4,gif,png")
    p.add_argument("--fps", type=float, default=8)
    p.add_argument("--out", required=True, help="output folder")


@command("sample", "generate videos with a base model and optional SSR cascade")(_sample_args)
def run_sample(args: argparse.Namespace) -> int:
    import torch

    prompts = [p for p in args.prompt]
    if not prompts:
        raise ValueError("no prompts: pass --prompt TEXT (repeat for several)")
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    bad = [f for f in formats if f not in ("mp4", "gif", "png")]
    if bad or not formats:
        raise ValueError(f"--formats {args.formats!r}: choose from mp4, gif, png")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" \
        else args.device
    presets = [p.strip() for p in args.preset.split(",")] if args.preset else [None]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = generate_videos(args.model, args.ssr, prompts, presets, out, arch=args.arch,
                            resolution=args.resolution, frames=args.frames, steps=args.steps,
                            scheduler=args.scheduler, cfg=args.cfg,
                            dynamic_threshold=args.dynamic_threshold, aug_level=args.aug_level,
                            seed=args.seed, ema=args.ema, device=device,
                            dtype="bf16" if args.bf16 else None, formats=formats, fps=args.fps)
    print(json.dumps({"files": [str(f) for f in files]}, indent=1))
    return 0


def load_stages(model: str, ssr: str | None, presets: list[str], arch: str | None,
                resolution: int | None, ema: bool, device: str):
    """Base and SSR denoisers for a cascade ending at ``resolution``; presets per stage
    (one for all, or base first). A supernet SSR is loaded once and reused with one arch per
    step."""
    from .loading import load_denoiser
    from .pipelines.cascade import CascadeError
    from .space import SearchSpace

    base = load_denoiser(model, preset=None if arch else presets[0], arch=arch, ema=ema,
                         device=device)
    base_res = base.resolution or base.config.resolutions[0]
    if ssr is None:
        if resolution is not None and resolution != base_res:
            raise CascadeError(f"{model} generates {base_res}px; resolution {resolution} needs "
                               f"an SSR model (--ssr)")
        return base, []
    probe = load_denoiser(ssr, ema=ema, device=device)
    final = resolution or max(probe.config.resolutions)
    steps, r = [], base_res
    while r < final:
        r *= 2
        steps.append(r)
    if r != final or not steps:
        raise CascadeError(f"resolution {final} is not {base_res} x 2^k (k >= 1): the cascade "
                           f"from {base_res}px reaches {[base_res * 2 ** k for k in (1, 2, 3)]}")
    per_stage = presets[1:] if len(presets) > 1 else presets
    per_stage = (per_stage + [per_stage[-1]] * len(steps))[:len(steps)]
    if not probe.model.is_supernet:
        return base, [probe] * len(steps)
    space = SearchSpace(probe.config)
    stages = []
    for step_res, preset in zip(steps, per_stage):
        if step_res not in probe.config.resolutions:
            raise CascadeError(f"the SSR model {ssr} cannot produce {step_res}px; it serves "
                               f"{list(probe.config.resolutions)}")
        stages.append(probe.with_arch(space.preset(preset or "B", step_res), preset or "B"))
    return base, stages


def generate_videos(model, ssr, prompts, presets, out: Path, *, arch=None, resolution=None,
                    frames=None, steps=50, scheduler="ddim", cfg=5.0, dynamic_threshold=None,
                    aug_level=0.2, seed=0, ema=True, device="cpu", dtype=None,
                    formats=("mp4", "gif", "png"), fps=8, progress=True) -> list[Path]:
    """Sample ``prompts`` through the cascade and write one file per prompt and format."""
    from .pipelines.cascade import Stage, generate
    from .text import TextEncoder
    from .video_io import to_uint8, write_frame_grid, write_video

    base, ssr_stages = load_stages(model, ssr, presets, arch, resolution, ema, device)
    text = TextEncoder(max_length=base.config.text_len, device=device)
    emb, mask = text.encode(prompts)
    video = generate(emb, mask, base=Stage.from_denoiser(base),
                     ssr=[Stage.from_denoiser(s) for s in ssr_stages] or None,
                     steps=steps, scheduler=scheduler, guidance_scale=cfg,
                     dynamic_threshold=dynamic_threshold, aug_level=aug_level, seed=seed,
                     frames=frames, progress=progress, dtype=dtype)
    frames_u8 = to_uint8(video)
    res = video.shape[-1]
    tag = "-".join([base.label] + [s.label for s in ssr_stages])
    files = []
    for i, prompt in enumerate(prompts):
        stem = f"{slug(prompt)}_{tag}_{res}px_seed{seed + i}"
        for fmt in formats:
            if fmt in ("mp4", "gif"):
                files.append(write_video(out / f"{stem}.{fmt}", frames_u8[i], fps=fps))
    if "png" in formats:
        files.append(write_frame_grid(out / f"grid_{tag}_{res}px_seed{seed}.png", frames_u8))
    return [Path(f) for f in files]


# --------------------------------------------------------------------------------- quickstart
def _quickstart_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="quickstart", help="output folder (default ./quickstart)")
    p.add_argument("--minutes", type=float, default=8.0,
                   help="wall-time budget; training takes ~75 %% of it")
    p.add_argument("--device", default="auto", help="auto (GPU if present), cpu or cuda")
    p.add_argument("--prompts", type=int, default=4, help="prompts sampled per preset")
    p.add_argument("--sample-steps", type=int, default=20, help="DDIM steps per stage")
    p.add_argument("--max-steps", type=int, help="cap training steps (for smoke tests)")


@command("quickstart", "train, extract, sample and report on the embedded synthetic data")(
    _quickstart_args)
def run_quickstart(args: argparse.Namespace) -> int:
    from .quickstart import quickstart

    report = quickstart(args.out, args.minutes, args.device, args.prompts, args.sample_steps,
                        args.max_steps)
    print(f"report: {report}")
    return 0
