"""Options shared by several sub-commands, and checks of command-line values run before any
expensive work: each check raises ValueError with one line naming the option and the value (the
CLI turns it into exit status 2)."""

from __future__ import annotations

import argparse
import math

from ..config_parsing import MAX_INT


def add_weights_args(p: argparse.ArgumentParser) -> None:
    """``--ema`` / ``--raw``: the one weights choice of every command that loads a checkpoint
    (default: EMA when the checkpoint has EMA weights, raw otherwise)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--ema", dest="ema", action="store_const", const=True, default=None,
                   help="EMA weights of a training checkpoint (the default when it has them)")
    g.add_argument("--raw", dest="ema", action="store_const", const=False,
                   help="raw (non-EMA) weights of a training checkpoint")


def at_least(option: str, value: float | None, low: float) -> None:
    """``value`` (when given) must be a finite number >= ``low`` (and at most
    :data:`sned.config_parsing.MAX_INT`)."""
    if value is not None and not (_finite(value) and value >= low):
        raise ValueError(f"{option} {_show(value)}: must be {_kind(value)}>= {low:g}")


def above(option: str, value: float | None, low: float) -> None:
    """``value`` (when given) must be a finite number > ``low`` (and at most
    :data:`sned.config_parsing.MAX_INT`)."""
    if value is not None and not (_finite(value) and value > low):
        raise ValueError(f"{option} {_show(value)}: must be {_kind(value)}> {low:g}")


def _finite(value: float) -> bool:
    """Finite and not beyond int64 (a larger count overflows torch and numpy)."""
    try:
        return math.isfinite(value) and abs(value) <= MAX_INT
    except OverflowError:  # an int too large for a float
        return False


def _kind(value: float) -> str:
    if isinstance(value, int):
        return "" if abs(value) <= MAX_INT else f"at most {MAX_INT} and "
    return "" if math.isfinite(value) else "a finite number "


def _show(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


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
