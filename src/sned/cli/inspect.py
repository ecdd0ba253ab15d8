"""``sned space``, ``sned cost`` and ``sned memory``: inspect a config's search space, one arch's
cost, and one GPU's peak training memory."""

from __future__ import annotations

import argparse
import json

import torch

from ..arch import Arch, ArchError, check_resolution
from ..config import load_config
from ..cost import decoder_cost
from ..models.codec import to_latent
from ..space import SearchSpace
from ..train.config import load_run_config
from ..train.memory import GIB, device_memory, estimate, fits, levels, plan_checkpointing
from .args import above, at_least


def space_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="built-in config name or YAML file")
    p.add_argument("--json", action="store_true", help="print the full description as JSON")
    p.add_argument("overrides", nargs="*", help="config overrides key=value")


def run_space(args: argparse.Namespace) -> int:

    space = SearchSpace(load_config(args.config, args.overrides))
    d = space.describe()
    if args.json:
        print(json.dumps(d, indent=1))
        return 0
    print(f"config {d['config']} ({d['kind']}): supernet {d['supernet_params'] / 1e6:.2f} M params")
    print(f"  resolutions {d['resolutions']}  caps {d['max_cost'] or 'none'}")
    print(f"  channel ratios {d['ratios']}")
    print(f"  {len(d['blocks'])} diffusion blocks, {d['num_elastic_layers']} elastic layers, "
          f"search space 10^{d['log10_size']:.1f} subnets")
    for layer in d["elastic_layers"]:
        print(f"    {layer['name']:<28} full {layer['full']:>5}  choices {layer['choices']}")
    print("  presets (at the first resolution, default frames):")
    for name, p in d["presets"].items():
        print(f"    {name}: {p['params'] / 1e6:10.2f} M params ({p['fraction']:.1%})  "
              f"{p['macs'] / 1e9:10.2f} GMACs")
    return 0


def cost_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="built-in config name or YAML file")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--preset", help="S, M, L, B or a fraction of the supernet's params (0.75)")
    g.add_argument("--arch", help="arch JSON file")
    p.add_argument("--resolution", type=int, help="spatial size (default: the config's first)")
    p.add_argument("--frames", type=int, help="frames (default: the config's)")
    p.add_argument("--json", action="store_true", help="(output is always JSON)")
    p.add_argument("overrides", nargs="*", help="config overrides key=value")


def run_cost(args: argparse.Namespace) -> int:

    space = SearchSpace(load_config(args.config, args.overrides))
    cfg = space.config
    res, frames = args.resolution, args.frames
    if cfg.autoencoder is not None:  # latent model: --resolution / --frames are video units

        res, frames = to_latent(cfg, res, frames)
    if res is not None:
        check_resolution(cfg, res)
    if frames is not None and frames < 1:
        raise ArchError(f"--frames must be >= 1 (got {frames})")
    if args.arch:
        arch = Arch.load(args.arch)
        if res is not None:
            arch = arch.at(res)
        space.validate(arch, source=args.arch)
        name = args.arch
    else:
        name = args.preset or "B"
        arch = space.preset(name, res)
    c = space.cost(arch, frames=frames)
    row = {"config": cfg.name, "arch": name, "params": c.params, "macs": c.macs,
           "resolution": arch.resolution, "frames": cfg.frames if frames is None else frames}
    if cfg.autoencoder is not None:  # UNet on latents + the decoder, at the video's size

        dec, pix_frames, pix_res = decoder_cost(cfg, arch.resolution, row["frames"])
        row.update(latent_resolution=row["resolution"], latent_frames=row["frames"],
                   resolution=pix_res, frames=pix_frames, decoder_params=dec.params,
                   decoder_macs=dec.macs)
    print(json.dumps(row))
    return 0


def memory_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="built-in config name, YAML file or run YAML")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--preset", help="S, M, L, B or a fraction (default: the largest arch "
                   "training runs)")
    g.add_argument("--arch", help="arch JSON file")
    p.add_argument("--batch", type=int, help="micro-batch per GPU (default: train.batch_size)")
    p.add_argument("--resolution", type=int, help="video size (default: the worst of the "
                   "config's)")
    p.add_argument("--frames", type=int, help="frames (default: the config's)")
    p.add_argument("--checkpointing", choices=("on", "off", "auto"),
                   help="gradient checkpointing (default: train.gradient_checkpointing; "
                   "auto: off when it fits, else the levels and ways with the least "
                   "recompute that fit; on: every level, the way that needs least memory)")
    p.add_argument("--checkpoint-unit", choices=("auto", "block", "layer"),
                   help="what one checkpoint recomputes: a whole diffusion block or one layer "
                   "(default: train.checkpoint_unit)")
    p.add_argument("--checkpoint-policy", choices=("auto", "full", "selective"),
                   help="recompute everything, or keep conv/matmul/attention outputs "
                   "(default: train.checkpoint_policy)")
    p.add_argument("--parallel", choices=("ddp", "fsdp"), default="ddp")
    p.add_argument("--gpus", type=int, default=1, help="devices of the run (default 1)")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="device kind to estimate for (cuda: bf16 autocast by default)")
    p.add_argument("--device-memory", type=float, metavar="GIB",
                   help="memory of one device in GiB (default: this machine's GPU, else "
                   f"{DEFAULT_GPU_GIB:g} GiB — an 80 GB GPU; cpu: this machine's RAM)")
    p.add_argument("overrides", nargs="*", help="run config overrides key=value")


DEFAULT_GPU_GIB = 80e9 / 2 ** 30
"""``sned memory``'s device without a GPU here: an 80 GB card (A100/H100 80 GB), in GiB."""


def run_memory(args: argparse.Namespace) -> int:
    at_least("--batch", args.batch, 1)
    at_least("--gpus", args.gpus, 1)
    at_least("--frames", args.frames, 1)
    above("--device-memory", args.device_memory, 0)
    run = load_run_config(args.config, args.overrides)
    cfg = run.model
    if args.resolution is not None:
        check_resolution(cfg, _model_resolution(cfg, args.resolution))
    arch, label = None, "largest trained"
    if args.arch or args.preset:
        space = SearchSpace.for_run(cfg, run.train)
        arch = Arch.load(args.arch) if args.arch else space.preset(args.preset)
        label = args.arch or args.preset
    if args.device_memory is not None:
        memory = int(args.device_memory * GIB)
    elif args.device == "cuda" and torch.cuda.is_available():
        memory = device_memory(torch.device("cuda"))
    elif args.device == "cuda":
        memory = int(DEFAULT_GPU_GIB * GIB)
    else:
        memory = device_memory(torch.device("cpu"))
    setting = {"on": True, "off": False, "auto": "auto", None:
               run.train.gradient_checkpointing}[args.checkpointing]

    unit = args.checkpoint_unit or run.train.checkpoint_unit
    policy = args.checkpoint_policy or run.train.checkpoint_policy

    def est(plan):
        return estimate(run, arch=arch, batch=args.batch, resolution=args.resolution,
                        frames=args.frames, checkpointing=plan, parallel=args.parallel,
                        gpus=args.gpus, device=args.device)

    _, e = plan_checkpointing(setting, est, levels(cfg), memory, unit, policy)
    row = {"config": cfg.name, "arch": label, "device": args.device,
           "device_memory_gib": round(memory / GIB, 3), "parallel": args.parallel,
           "gpus": args.gpus, "checkpointing_setting": setting, **e.to_dict(),
           "fits": fits(e.total, memory)}
    print(json.dumps(row))
    return 0


def _model_resolution(cfg, resolution: int) -> int:
    if getattr(cfg, "autoencoder", None) is None:
        return resolution
    return to_latent(cfg, resolution)[0]
