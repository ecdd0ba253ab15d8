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

