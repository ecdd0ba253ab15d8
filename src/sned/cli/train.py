"""``sned train``: supernet training from the command line (DDP under torchrun)."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from ..train.config import load_run_config
from ..train.trainer import Trainer, TrainingError


def train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="model config name / YAML, or a run YAML with model/diffusion/"
                                  "data/train sections")
    p.add_argument("--out", required=True, help="run folder (checkpoints, metrics.jsonl, "
                                                "tensorboard/)")
    p.add_argument("--steps", type=int, help="total optimizer steps (a resumed run stops here)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--resume", action="store_true",
                     help="continue the run in OUT from checkpoints/latest (or the newest "
                          "complete checkpoint); an error if OUT holds none")
    how.add_argument("--overwrite", action="store_true",
                     help="replace a run already in OUT (without it, training into a folder "
                          "that holds a run is refused)")
    p.add_argument("--init-from", metavar="SOURCE",
                   help="start the supernet from a trained model: a training run, checkpoint or "
                        "model folder (supernet or extracted) of a config with the same spatial "
                        "structure — an image model (e.g. a `sned train tiny-image` run for "
                        "tiny-base) or a video model of the family (e.g. a "
                        "train.fixed_arch=B run) (= train.init_from; step 0 only)")
    p.add_argument("--allow-world-size-change", action="store_true",
                   help="--resume under another number of ranks than the checkpoint's (the "
                        "global batch changes); recorded in the run (world_changes in "
                        "state.json). Without it such a resume is refused")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*",
                   help="section.key=value overrides, e.g. train.lr=2e-4 data.kind=folder "
                        "data.root=/videos (a bare key means train.key)")


def run_train(args: argparse.Namespace) -> int:

    overrides = list(args.overrides)
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    run = load_run_config(args.config, overrides)
    if args.init_from is not None:  # set after parsing: a path is not a YAML value
        run = dataclasses.replace(run, train=dataclasses.replace(run.train,
                                                                 init_from=args.init_from))
    trainer = Trainer(run, args.out, resume=args.resume, overwrite=args.overwrite,
                      progress=not args.no_progress,
                      allow_world_change=args.allow_world_size_change)
    try:
        trainer.fit()
    except TrainingError as e:
        print(f"sned train: error: {e}", file=sys.stderr)
        return 1
    finally:
        trainer.close()
    where = args.out.rstrip("/") + "/checkpoints/latest"
    if trainer.interrupted:  # every rank: they all stopped at the same step (one checkpoint)
        who = "" if trainer.world == 1 else f"rank {trainer.rank}: "
        saved = f"; saved {where}. Resume with --resume." if trainer.is_main else ""
        print(f"sned train: {who}interrupted at step {trainer.step}{saved}", file=sys.stderr)
        return 130
    if trainer.is_main:
        print(f"sned train: done at step {trainer.step}; checkpoint {where}", file=sys.stderr)
    return 0
