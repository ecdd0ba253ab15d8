"""Options shared by several sub-commands, and checks of command-line values run before any
expensive work: each check raises ValueError with one line naming the option and the value (the
CLI turns it into exit status 2)."""

from __future__ import annotations

import argparse
import math


def add_weights_args(p: argparse.ArgumentParser) -> None:
    """``--ema`` / ``--raw``: the one weights choice of every command that loads a checkpoint
    (default: EMA when the checkpoint has EMA weights, raw otherwise)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--ema", dest="ema", action="store_const", const=True, default=None,
                   help="EMA weights of a training checkpoint (the default when it has them)")
    g.add_argument("--raw", dest="ema", action="store_const", const=False,
                   help="raw (non-EMA) weights of a training checkpoint")


def at_least(option: str, value: float | None, low: float) -> None:
    """``value`` (when given) must be a finite number >= ``low``."""
    if value is not None and not (math.isfinite(value) and value >= low):
        raise ValueError(f"{option} {value:g}: must be >= {low:g}")


def above(option: str, value: float | None, low: float) -> None:
    """``value`` (when given) must be a finite number > ``low``."""
    if value is not None and not (math.isfinite(value) and value > low):
        raise ValueError(f"{option} {value:g}: must be > {low:g}")


def within(option: str, value: float | None, low: float, high: float) -> None:
    """``value`` (when given) must lie in [``low``, ``high``]."""
    if value is not None and not (low <= value <= high):
        raise ValueError(f"{option} {value:g}: must be in [{low:g}, {high:g}]")


def names(option: str, text: str) -> list[str]:
    """A comma-separated list of non-empty names."""
    items = [t.strip() for t in text.split(",")]
    if not text.strip() or any(not t for t in items):
        raise ValueError(f"{option} {text!r}: expected a comma-separated list of names")
    return items
