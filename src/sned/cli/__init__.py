"""The ``sned`` command line: one sub-command per job, each a thin layer over the library.

Every sub-command is one row of :data:`COMMANDS` (name → options, runner, help); the modules of
this package only parse, check values and call the library. Errors that come from bad input
(configs, archs, files) print one line naming the problem and exit with status 2; nothing else is
written.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, NamedTuple

from ..arch import ArchError
from ..config import ConfigError
from ..store.files import CheckpointError
from . import diffnas, evaluate, generate, importing, inspect, quickstart, study, train


class Command(NamedTuple):
    """One sub-command: ``add_args(parser)`` declares its options, ``run(args)`` → exit code."""

    add_args: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    help: str


COMMANDS: dict[str, Command] = {
    "space": Command(inspect.space_args, inspect.run_space,
                     "describe a config's search space: elastic layers, size, presets"),
    "cost": Command(inspect.cost_args, inspect.run_cost,
                    "params and MACs of one denoiser forward (batch 1)"),
    "memory": Command(inspect.memory_args, inspect.run_memory,
                      "estimate one GPU's peak training memory (JSON, GiB)"),
    "train": Command(train.train_args, train.run_train,
                     "train a supernet (SNED Algorithm 1); torchrun for multi-GPU"),
    "extract": Command(generate.extract_args, generate.run_extract,
                       "write a standalone subnet as a diffusers pipeline folder"),
    "import": Command(importing.import_args, importing.run_import,
                      "convert a diffusers UNet2DModel into a sned model folder"),
    "sample": Command(generate.sample_args, generate.run_sample,
                      "generate videos with a base model and optional SSR cascade"),
    "search": Command(evaluate.search_args, evaluate.run_search,
                      "evolutionary search for the best subnet under a budget"),
    "evaluate": Command(evaluate.evaluate_args, evaluate.run_evaluate,
                        "paper-style table: FVD/KVD, caption accuracy, val loss, latency"),
    "quickstart": Command(quickstart.quickstart_args, quickstart.run_quickstart,
                          "train, extract, sample and report on the embedded synthetic data"),
    "diffnas": Command(diffnas.diffnas_args, diffnas.run_diffnas_cmd,
                       "DiffNAS: search and retrain a smaller model from a trained teacher"),
    "study": Command(study.study_args, study.run_study_cli,
                     "supernet vs standalone training and ablations: val loss, caption "
                     "accuracy, compute"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sned", description="Train one video-diffusion supernet, serve many models.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, cmd in COMMANDS.items():
        cmd.add_args(sub.add_parser(name, help=cmd.help, description=cmd.help))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may come anywhere on the line, also after options
    bad = [e for e in extra if "=" not in e or e.startswith("-")]
    if bad or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(bad or extra)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    run = COMMANDS[args.command].run
    try:
        return int(run(args) or 0)
    except (ConfigError, ArchError, CheckpointError, OSError, ValueError) as e:
        print(f"sned {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sned {args.command}: interrupted", file=sys.stderr)
        return 130
