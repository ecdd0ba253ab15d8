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
- nothing the run reads (:func:`run_inputs`: ``data.root``, ``train.autoencoder``,
  ``train.init_from``, ``model.perceptual_weights``) may be, contain or lie inside ``OUT``;
- ``--resume`` needs a complete checkpoint; a dangling ``latest`` falls back to the newest
  complete ``step-*`` (with a note); the model and diffusion sections must equal the
  checkpoint's (an error names the first key that changed); data/train changes are noted;
  the world size (ranks) must equal the checkpoint's — the global batch would change —
  unless the change is allowed explicitly (``--allow-world-size-change``), and then it is
  recorded in the run (``world_changes`` in ``state.json``);
- on start, temporary folders of interrupted saves (``.tmp-step-*``) are removed, and on
  resume a torn last row of ``metrics.jsonl`` is dropped, as are rows past the resumed step.

Every method is read-only unless its name says it writes (``clear``, ``undo_start``,
``clean_temps``, ``trim_metrics``); messages for the user accumulate in :attr:`RunFolder.notes`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterable

from ..config import ConfigError
from ..store.checkpoint import is_complete, list_checkpoints, newest_complete, read_state
from ..store.files import RUN, OutputError, atomic_write_text, check_output, remove_entries
from .config import RunConfig, load_run_config

RUN_ENTRIES = RUN.entries
"""What a run writes at the top of its folder (``--overwrite`` removes these and nothing else;
:data:`sned.store.files.RUN`)."""
FIXED_SECTIONS = ("model", "diffusion")
"""Sections a resumed run may not change: they define the network and its objective."""


class RunFolderError(OutputError):
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
        return RUN.own(self.out) if self.out.is_dir() else []

    def check_output(self, inputs: Iterable = ()) -> None:
        """The output-folder rule (:func:`sned.store.files.check_output`) for continuing a run:
        ``out`` is no file, no input and no folder of another kind."""
        check_output(self.out, RUN, inputs, reuse=True)

    def refuse_existing(self, overwrite: bool, kind: str | None = None,
                        inputs: Iterable = ()) -> None:
        """Raise RunFolderError if a new run would clobber one (unless ``overwrite``), or if
        ``--overwrite`` would remove a run of another task family than ``kind`` (a DiffNAS
        stage is not replaced by a supernet run, nor the other way round)."""
        found = self.existing()
        steps = list_checkpoints(self.checkpoints)
        last = f", last checkpoint {steps[-1].name}" if steps else ""
        hint = (f"{self.out} already holds a run ({', '.join(found)}{last}); continue it with "
                f"--resume, train into another --out, or pass --overwrite to replace it")
        try:
            self._remove = check_output(self.out, RUN, inputs, overwrite=overwrite, hint=hint)
        except RunFolderError:
            raise
        except OutputError as e:
            raise RunFolderError(str(e)) from None
        newest = newest_complete(self.checkpoints)
        if self._remove and newest is not None and kind is not None:
            saved = saved_task(newest)
            if saved is not None and _family(saved) != _family(kind):
                raise RunFolderError(
                    f"--overwrite: {self.out} holds a {saved!r} run ({newest.name}), not one of "
                    f"this command's ({kind!r}); it is left alone — train into another --out")

    def clear(self) -> None:
        """Remove the run entries (``--overwrite``); other files in the folder stay."""
        found = getattr(self, "_remove", None)
        if found is None:
            found = self.existing()
        remove_entries(self.out, found)
        if found:
            self.notes.append(f"--overwrite: removed the previous run in {self.out} "
                              f"({', '.join(found)})")

    def mark_start(self) -> None:
        """Remember what the folder holds as a new run starts: :meth:`undo_start` removes
        only what is written after this."""
        self._start = set(os.listdir(self.out)) if self.out.is_dir() else None

    def undo_start(self) -> None:
        """After a failed start of a new run (:meth:`mark_start` called, no complete checkpoint
        written): remove the run entries written since, and the folder if the start created it
        and it is empty now. A no-op for resumed runs and once a checkpoint exists."""
        if not hasattr(self, "_start") or newest_complete(self.checkpoints) is not None:
            return
        had = self._start or set()
        remove_entries(self.out, [n for n in RUN_ENTRIES if n not in had])
        if self._start is None and self.out.is_dir() and not any(self.out.iterdir()):
            self.out.rmdir()

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

    def check_task(self, checkpoint: Path, kind: str) -> None:
        """A resumed run continues the task its checkpoints were written by: RunFolderError
        when ``checkpoint`` records another (a DiffNAS stage is not a supernet run)."""
        saved = saved_task(checkpoint)
        if saved is not None and saved != kind:
            raise RunFolderError(
                f"--resume: {self.out} holds a {saved!r} run ({checkpoint.name}), not a {kind!r} "
                f"run; resume it with the command that wrote it, or train into another --out")

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

    def check_world(self, checkpoint: Path, world: int, run: RunConfig,
                    allow: bool = False) -> list[dict]:
        """A resumed run keeps its world size (ranks) and so its global batch: RunFolderError
        when ``world`` differs from the one ``checkpoint`` recorded, unless ``allow``; then the
        change is noted and appended to the returned history (``world_changes``, saved with
        every later checkpoint). Checkpoints from before the world size was recorded: None."""
        state = read_state(checkpoint)
        history = list(state.get("world_changes") or [])
        old = state.get("world_size")
        if not isinstance(old, int) or old == world:
            return history
        per_rank = run.train.batch_size * run.train.grad_accum
        was = state.get("global_batch")
        now = per_rank * world
        change = (f"the run in {self.out} was trained on {old} rank(s) (global batch {was}) "
                  f"and is resumed on {world} (global batch {now}) at {checkpoint.name}")
        if not allow:
            raise RunFolderError(f"--resume: {change}; the run would no longer be the run it "
                                 f"was — resume with {old} rank(s), or pass "
                                 f"--allow-world-size-change to continue anyway (recorded in "
                                 f"the run)")
        self.notes.append(f"--allow-world-size-change: {change}; recorded in state.json "
                          f"(world_changes)")
        return history + [{"step": int(state.get("step", 0)), "world_size": [old, world],
                           "global_batch": [was, now]}]

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
            atomic_write_text(path, "".join(line + "\n" for line in kept))


def run_inputs(run: RunConfig) -> list:
    """Everything a training run reads from disk besides its own folder: the output rule
    (:func:`sned.store.files.check_output`) keeps ``--out`` away from each."""
    data, train, model = run.data, run.train, run.model
    return [data.root if data.kind == "folder" else None,
            getattr(train, "autoencoder", None), getattr(train, "init_from", None),
            getattr(model, "perceptual_weights", None)]


def saved_task(checkpoint: Path) -> str | None:
    """The task kind a checkpoint was written by (None when unknown: older checkpoints of
    ``sned train``; DiffNAS retraining checkpoints are recognised by their ``diffnas`` entry)."""
    state = read_state(checkpoint)
    kind = state.get("task")
    if kind is None and "diffnas" in state:
        return "diffnas-retrain"
    return kind if isinstance(kind, str) else None


def _family(kind: str) -> str:
    """The command a task kind belongs to: ``diffnas`` stages, or ``train`` (supernets, AEs)."""
    return "diffnas" if kind.startswith("diffnas") else "train"


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
