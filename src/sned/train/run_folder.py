"""A run folder's life cycle: never clobber a run, resume from the right checkpoint, clean up
what a crash left behind.

Layout of a run folder ``OUT``::

    checkpoints/step-NNNNNNN/   checkpoints (see :mod:`sned.train.checkpoint`)
    checkpoints/latest          symlink to the newest
    metrics.jsonl               one JSON row per step
    run_config.json             the run config of the last start
    tensorboard/                event files

Rules (``sned train``):

- a new run (no ``--resume``) refuses a folder that holds any of these, touching nothing,
  unless ``--overwrite`` (then they are removed first);
- ``--resume`` needs a complete checkpoint; a dangling ``latest`` falls back to the newest
  complete ``step-*`` (with a note); the model and diffusion sections must equal the
  checkpoint's (an error names the first key that changed); data/train changes are noted;
- on start, temporary folders of interrupted saves (``.tmp-step-*``) are removed, and on
  resume a torn last row of ``metrics.jsonl`` is dropped, as are rows past the resumed step.

Every method is read-only unless its name says it writes (``clear``, ``clean_temps``,
``trim_metrics``); messages for the user accumulate in :attr:`RunFolder.notes`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..config import ConfigError
from ..store.checkpoint import is_complete, list_checkpoints, newest_complete, read_state
from ..store.files import CheckpointError
from .config import RunConfig, load_run_config

RUN_ENTRIES = ("checkpoints", "metrics.jsonl", "run_config.json", "tensorboard")
FIXED_SECTIONS = ("model", "diffusion")
"""Sections a resumed run may not change: they define the network and its objective."""


class RunFolderError(CheckpointError):
    """The run folder does not allow what was asked (clobbering a run, resuming nothing,
    resuming with another model). The message names the folder and the ways on."""


class RunFolder:
    """The run folder ``out`` of one training run.

    Args:
        out: the run folder (need not exist).
    """

    def __init__(self, out: str | os.PathLike) -> None:
        self.out = Path(out)
        self.checkpoints = self.out / "checkpoints"
        self.notes: list[str] = []

    # ----------------------------------------------------------------------------- new runs
    def existing(self) -> list[str]:
        """The run entries present in the folder (empty for a new or unrelated folder)."""
        found = []
        for name in RUN_ENTRIES:
            p = self.out / name
            if p.is_file() or (p.is_dir() and any(p.iterdir())):
                found.append(name)
        return found

    def refuse_existing(self, overwrite: bool) -> None:
        """Raise RunFolderError if a new run would clobber one (unless ``overwrite``)."""
        found = self.existing()
        if found and not overwrite:
            steps = list_checkpoints(self.checkpoints)
            last = f", last checkpoint {steps[-1].name}" if steps else ""
            raise RunFolderError(
                f"{self.out} already holds a run ({', '.join(found)}{last}); continue it with "
                f"--resume, train into another --out, or pass --overwrite to replace it")

    def clear(self) -> None:
        """Remove the run entries (``--overwrite``); other files in the folder stay."""
        found = self.existing()
        for name in found:
            p = self.out / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        if found:
            self.notes.append(f"--overwrite: removed the previous run in {self.out} "
                              f"({', '.join(found)})")

    # ----------------------------------------------------------------------------- resume
    def resume_checkpoint(self) -> Path:
        """The checkpoint to resume from: ``latest``, or the newest complete ``step-*`` when
        ``latest`` is missing or dangling (noted). RunFolderError when there is none."""
        latest = self.checkpoints / "latest"
        if latest.exists() and is_complete(latest.resolve()):
            return latest.resolve()
        newest = newest_complete(self.checkpoints)
        if newest is None:
            what = "does not exist" if not self.out.exists() else "holds no complete checkpoint"
            raise RunFolderError(f"--resume: {self.out} {what} (nothing under "
                                 f"{self.checkpoints}/step-*); drop --resume to start a new run")
        if not latest.is_symlink():
            why = "is missing"
        else:
            why = f"points to {'incomplete' if latest.exists() else 'missing'} " \
                  f"{os.readlink(latest)!r}"
        self.notes.append(f"--resume: {latest} {why}; resuming from the newest complete "
                          f"checkpoint {newest}")
        return newest

    def check_config(self, checkpoint: Path, run: RunConfig) -> None:
        """Compare ``run`` with the config saved in ``checkpoint``: a changed model or
        diffusion key is a RunFolderError naming it; other changes are noted."""
        saved = read_state(checkpoint).get("run")
        if not isinstance(saved, dict):
            return  # written before configs were saved in checkpoints
        now = json.loads(json.dumps(run.to_dict()))
        changed = [d for d in _diff(_with_defaults(saved), now) if d[0] != "model.name"]
        fixed = [d for d in changed if d[0].split(".", 1)[0] in FIXED_SECTIONS]
        if fixed:
            key, old, new = fixed[0]
            raise RunFolderError(
                f"--resume: {key} is {new!r} but the run in {self.out} was trained with "
                f"{old!r} ({checkpoint.name}); a resumed run keeps its model and diffusion "
                f"settings — drop {key} or train into another --out")
        if changed:
            listed = ", ".join(f"{k} {old!r} -> {new!r}" for k, old, new in changed)
            self.notes.append(f"--resume: settings changed since {checkpoint.name}: {listed}")

    # ----------------------------------------------------------------------------- writes
    def clean_temps(self) -> None:
        """Remove temporary folders/links of interrupted checkpoint saves (any process)."""
        if not self.checkpoints.is_dir():
            return
        stale = sorted(p for p in self.checkpoints.iterdir()
                       if p.name.startswith((".tmp-step-", ".latest-")))
        for p in stale:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        if stale:
            self.notes.append(f"removed {len(stale)} temporary file(s) of interrupted "
                              f"checkpoint saves in {self.checkpoints}: "
                              f"{', '.join(p.name for p in stale)}")

    def trim_metrics(self, step: int) -> None:
        """Keep the rows of ``metrics.jsonl`` up to ``step`` (resumed steps log once).

        A torn last row (a kill during a write) is dropped with a note; an unreadable row
        elsewhere is a RunFolderError naming the file and line."""
        path = self.out / "metrics.jsonl"
        if not path.is_file():
            return
        lines = path.read_bytes().decode("utf-8", errors="replace").splitlines()
        numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
        kept, past = [], 0
        for n, (lineno, line) in enumerate(numbered):
            row = _row(line)
            if row is None:
                if n == len(numbered) - 1:
                    self.notes.append(f"{path}: dropped a torn last line (line {lineno}, "
                                      f"{len(line)} characters; a write was interrupted)")
                    continue
                raise RunFolderError(f"{path}: line {lineno} is not a metrics row: "
                                     f"{line[:80]!r}")
            if row["step"] <= step:
                kept.append(line)
            else:
                past += 1
        if past:
            self.notes.append(f"{path}: dropped {past} row(s) past step {step}, the step "
                              f"resumed from")
        if len(kept) != len(numbered):
            tmp = path.with_name(f".{path.name}-{os.getpid()}")
            tmp.write_text("".join(line + "\n" for line in kept))
            os.replace(tmp, path)


def _row(line: str) -> dict | None:
    """A parsed metrics row, or None when the line is not one."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return None
    ok = isinstance(row, dict) and isinstance(row.get("step"), int)
    return row if ok else None


def _diff(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted.key, old, new)`` for every leaf that differs between two JSON values."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            key = f"{prefix}.{k}" if prefix else str(k)
            out += _diff(old.get(k), new.get(k), key)
        return out
    return [] if old == new else [(prefix, old, new)]


def _with_defaults(saved: dict) -> dict:
    """A saved run config as this version reads it: keys added since it was written take
    their defaults (so a new option, off by default, is not a "change"). A config this version
    cannot read is compared as saved."""
    try:
        return json.loads(json.dumps(load_run_config(saved).to_dict()))
    except (ConfigError, ValueError, TypeError, KeyError):
        return saved
