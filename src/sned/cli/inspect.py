"""``sned space`` and ``sned cost``: inspect a config's search space and one arch's cost."""

from __future__ import annotations

import argparse
import json

from ..arch import Arch, ArchError, check_resolution
from ..config import load_config
from ..cost import decoder_cost
from ..models.codec import to_latent
from ..space import SearchSpace


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
        space.validate(arch)
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
