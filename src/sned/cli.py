"""The ``sned`` command line: one sub-command per job, each a thin layer over the library.

Errors that come from bad input (configs, archs, files) print one line naming the problem and
exit with status 2; nothing else is written.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

from .arch import Arch, ArchError, check_resolution
from .config import ConfigError
from .files import CheckpointError

COMMANDS: dict[str, tuple[Callable, Callable, str]] = {}


def command(name: str, help: str):
    """Register ``fn(args)`` as sub-command ``name``; the decorated function adds its options."""
    def wrap(add_args):
        def deco(run):
            COMMANDS[name] = (add_args, run, help)
            return run
        return deco
    return wrap


# --------------------------------------------------------------------------------- space / cost
def _space_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="built-in config name or YAML file")
    p.add_argument("--json", action="store_true", help="print the full description as JSON")
    p.add_argument("overrides", nargs="*", help="config overrides key=value")


@command("space", "describe a config's search space: elastic layers, size, presets")(_space_args)
def run_space(args: argparse.Namespace) -> int:
    from .config import load_config
    from .space import SearchSpace

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


def _cost_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="built-in config name or YAML file")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--preset", help="S, M, L, B or a fraction of the supernet's params (0.75)")
    g.add_argument("--arch", help="arch JSON file")
    p.add_argument("--resolution", type=int, help="spatial size (default: the config's first)")
    p.add_argument("--frames", type=int, help="frames (default: the config's)")
    p.add_argument("--json", action="store_true", help="(output is always JSON)")
    p.add_argument("overrides", nargs="*", help="config overrides key=value")


@command("cost", "params and MACs of one denoiser forward (batch 1)")(_cost_args)
def run_cost(args: argparse.Namespace) -> int:
    from .config import load_config
    from .space import SearchSpace

    space = SearchSpace(load_config(args.config, args.overrides))
    cfg = space.config
    res, frames = args.resolution, args.frames
    if cfg.autoencoder is not None:  # latent model: --resolution / --frames are video units
        from .latent import to_latent

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
        from .cost import decoder_cost

        dec, pix_frames, pix_res = decoder_cost(cfg, arch.resolution, row["frames"])
        row.update(latent_resolution=row["resolution"], latent_frames=row["frames"],
                   resolution=pix_res, frames=pix_frames, decoder_params=dec.params,
                   decoder_macs=dec.macs)
    print(json.dumps(row))
    return 0


# --------------------------------------------------------------------------------- entry point
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sned", description="Train one video-diffusion supernet, serve many models.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add_args, _run, help_text) in COMMANDS.items():
        add_args(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def _register_all() -> None:
    """Import the modules whose sub-commands live elsewhere (kept lazy: heavy imports)."""
    for mod in ("sned.cli_train", "sned.cli_generate", "sned.cli_evaluate",
                "sned.cli_quickstart", "sned.cli_diffnas", "sned.cli_study"):
        try:
            __import__(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise


def main(argv: list[str] | None = None) -> int:
    _register_all()
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may come anywhere on the line, also after options
    bad = [e for e in extra if "=" not in e or e.startswith("-")]
    if bad or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(bad or extra)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    _add, run, _help = COMMANDS[args.command]
    try:
        return int(run(args) or 0)
    except (ConfigError, ArchError, CheckpointError, OSError, ValueError) as e:
        print(f"sned {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sned {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # `python -m sned.cli` (torchrun) runs this file as __main__; the sub-command modules
    # register on the importable `sned.cli`, so dispatch through that one
    from sned.cli import main as _main

    sys.exit(_main())
