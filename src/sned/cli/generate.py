"""``sned extract`` and ``sned sample``: parse, check, call :mod:`sned.extract`,
:mod:`sned.loading` and :mod:`sned.generation`.

Both read a training checkpoint's EMA weights when it has them and its raw weights otherwise;
``--raw`` / ``--ema`` insist on one.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

from ..device import resolve_device
from ..extract import extract, read_model_meta, refuse_existing
from ..pipelines.compiled import CompileUnavailable, check_compilable, compile_model
from ..pipelines.export import export_subnet
from ..pipelines.generation import FORMATS, generate_videos
from ..pipelines.loading import load_cascade, load_denoiser
from ..schedule.folder import ScheduledSubnets, export_schedule
from ..store.files import SAMPLES, check_output
from . import args as check
from .args import add_weights_args


# --------------------------------------------------------------------------------- extract
def extract_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="training run dir or checkpoint folder")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--preset", help="S, M, L, B or a fraction of the supernet's params (0.75)")
    g.add_argument("--arch", help="arch JSON file (e.g. from sned search)")
    g.add_argument("--schedule", help="sampling schedule (S:0-400,B:400-1000 or a JSON file): "
                                      "one folder holding its distinct subnets")
    add_weights_args(p)
    p.add_argument("--resolution", type=int, help="resolution in pixels the subnet is for "
                                                  "(default: the config's first; latent models: "
                                                  "the video's, not the latent's)")
    p.add_argument("--out", required=True, help="output model folder (new, or empty)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the model folder an earlier `sned extract` wrote at --out "
                        "(nothing else is ever removed)")
    p.add_argument("--ssr", help="an SSR run / checkpoint / model folder: its subnet "
                                 "(--ssr-preset, default --preset's) becomes the pipeline's "
                                 "ssr_unet, one folder for the whole cascade")
    p.add_argument("--ssr-preset", help="preset of a supernet --ssr (default: --preset, else B)")
    p.add_argument("--legacy", action="store_true",
                   help="write the 0.1 layout (config.json + model.safetensors) instead of the "
                        "diffusers pipeline folder (model_index.json, unet/, scheduler/)")


def run_extract(args: argparse.Namespace) -> int:

    inputs = [args.checkpoint, args.arch, args.ssr, _schedule_file(args.schedule)]
    refuse_existing(args.out, args.overwrite, inputs)  # before anything is loaded
    if args.ssr_preset is not None and args.ssr is None:
        raise ValueError("--ssr-preset needs --ssr")
    if args.schedule is not None and (args.ssr is not None or args.legacy):
        raise ValueError(f"--schedule {args.schedule}: a schedule folder holds one base "
                         f"supernet's subnets (no --{'ssr' if args.ssr else 'legacy'})")
    den = load_denoiser(args.checkpoint, preset=args.preset, arch=args.arch, ema=args.ema,
                        resolution=args.resolution, schedule=args.schedule)
    if den.schedule is not None:
        folder = export_schedule(den, den.schedule, args.out, overwrite=args.overwrite,
                                 inputs=inputs)
    else:
        ssr = None
        if args.ssr is not None:
            ssr = load_denoiser(args.ssr, ema=args.ema,
                                preset=_ssr_preset(args.ssr, args.ssr_preset or args.preset))
        folder = export_subnet(den, args.out, overwrite=args.overwrite, inputs=inputs,
                               legacy=args.legacy, ssr=ssr)
    print(json.dumps({"out": str(folder), **read_model_meta(folder)["card"]}))
    return 0


def _ssr_preset(path, preset: str | None) -> str | None:
    """The preset for an SSR source: None for a model folder (its own arch), else ``preset``."""
    from ..extract import is_model_folder

    return None if is_model_folder(path) else preset


# --------------------------------------------------------------------------------- sample
def sample_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="base model: training run dir / checkpoint, or model folder")
    p.add_argument("--ssr", help="SSR model (run dir / checkpoint / model folder) for the "
                                 "cascade")
    p.add_argument("--prompt", action="append", default=[], help="caption (repeat for a batch)")
    p.add_argument("--num", type=int, help="videos of an unconditional model (default 1)")
    p.add_argument("--preset", help="preset for every stage, or one per stage: S,M,B (base, "
                                    "SSR 1, SSR 2); default B (supernet checkpoints only)")
    p.add_argument("--arch", help="arch file for the base supernet (instead of --preset)")
    p.add_argument("--schedule", action="append", default=[],
                   help="a subnet per denoising step instead of a preset: NAME:START-END,... in "
                        "training timesteps (S:0-400,B:400-1000; NAME a preset or an arch "
                        "file) or a schedule JSON file; repeat for the SSR stages (base first)")
    p.add_argument("--resolution", type=int, help="final resolution (default: the largest the "
                                                  "cascade reaches)")
    p.add_argument("--frames", type=int, help="video frames (latent models: a multiple of the "
                                              "autoencoder's temporal factor)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--scheduler", default="ddim", choices=["ddim", "dpm", "ddpm"])
    p.add_argument("--cfg", type=float, default=5.0, help="classifier-free guidance scale")
    p.add_argument("--dynamic-threshold", type=float, help="percentile, e.g. 0.995 (Imagen)")
    p.add_argument("--aug-level", type=float, default=0.2, help="SSR noise-augmentation level "
                                                                "in [0, 1]")
    p.add_argument("--seed", type=int, default=0)
    add_weights_args(p)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                   help="autocast of the denoiser: auto = bf16 on CUDA, fp32 on CPU")
    p.add_argument("--bf16", action="store_true", help="same as --precision bf16")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the denoisers (a supernet's arch is extracted first; "
                        "CUDA graphs on CUDA); the first denoising step compiles")
    p.add_argument("--formats", default="mp4,gif,png", help="any of mp4,gif,png")
    p.add_argument("--fps", type=float, default=8)
    p.add_argument("--out", required=True, help="output folder")


def check_sample_args(args: argparse.Namespace) -> list[str]:
    """Every cheap check of ``sned sample``'s values; returns the formats."""
    for text in args.prompt:
        if not text.strip():
            raise ValueError(f"--prompt {text!r}: empty caption")
    formats = check.names("--formats", args.formats)
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"--formats {args.formats!r}: choose from {', '.join(FORMATS)}")
    check.at_least("--frames", args.frames, 1)
    check.at_least("--num", args.num, 1)
    check.at_least("--steps", args.steps, 1)
    check.at_least("--cfg", args.cfg, 0)
    check.within("--aug-level", args.aug_level, 0, 1)
    if args.dynamic_threshold is not None:
        check.above("--dynamic-threshold", args.dynamic_threshold, 0)
        check.within("--dynamic-threshold", args.dynamic_threshold, 0, 1)
    check.above("--fps", args.fps, 0)
    if args.preset is not None:
        check.names("--preset", args.preset)
    if args.schedule and args.arch is not None:
        raise ValueError(f"--schedule {args.schedule[0]}: excludes --arch")
    if len(args.schedule) > 3:
        raise ValueError(f"--schedule given {len(args.schedule)} times: one per cascade stage "
                         f"(base, SSR 1, SSR 2)")
    return formats


def _schedule_file(spec: str | None) -> str | None:
    """The file a --schedule value reads (None for a spec string)."""
    return spec if spec and spec.endswith(".json") and ":" not in spec else None


def run_sample(args: argparse.Namespace) -> int:

    formats = check_sample_args(args)
    check_output(args.out, SAMPLES, [args.model, args.ssr, args.arch,
                                     *map(_schedule_file, args.schedule)], reuse=True)
    device = resolve_device(args.device)
    if args.compile:
        try:  # before anything loads: a missing compiler is one line, not a traceback
            check_compilable(device)
        except CompileUnavailable as e:
            raise ValueError(str(e)) from None
    presets = check.names("--preset", args.preset) if args.preset else [None]
    base, ssr = load_cascade(args.model, args.ssr, presets, args.arch, args.resolution,
                             ema=args.ema, device=device, schedules=args.schedule)
    if args.compile:
        base, ssr = compile_cascade(base, ssr)
    files = generate_videos(base, ssr, args.prompt, args.out, resolution=args.resolution,
                            frames=args.frames, steps=args.steps, scheduler=args.scheduler,
                            cfg=args.cfg, dynamic_threshold=args.dynamic_threshold,
                            aug_level=args.aug_level, seed=args.seed,
                            dtype="bf16" if args.bf16 else args.precision, formats=formats,
                            fps=args.fps,
                            num=args.num)
    print(json.dumps({"files": [str(f) for f in files]}, indent=1))
    return 0


def compile_cascade(base, ssr: list) -> tuple:
    """Every stage compiled once (:meth:`sned.loading.Denoiser.compiled`); an extracted SSR
    that serves several steps is one model, compiled once. A stage with a sampling schedule
    compiles each of its distinct subnets (a supernet's extracted first)."""
    done: dict[int, object] = {}

    def one(den):
        key = id(den)
        if key not in done:
            done[key] = den.compiled() if den.schedule is None else _compiled_schedule(den)
        return done[key]
    return one(base), [one(s) for s in ssr]


def _compiled_schedule(den):
    """A scheduled stage with each distinct subnet extracted (from a supernet) and compiled."""
    if isinstance(den.model, ScheduledSubnets):
        subnets = list(den.model.subnets)
    else:
        subnets = [extract(den.model, a) for a in den.schedule.archs()]
    return replace(den, model=ScheduledSubnets(den.config, [compile_model(m) for m in subnets]))
