"""Bad input from the command line: one line naming the bad value, exit status 2, no traceback,
nothing written, moved or deleted.

The table grows by appending :class:`Case` rows. ``argv`` and ``names`` may use ``{run}`` (a
finished two-step tiny-base run, shared by all rows) and ``{tmp}`` (the row's own empty
folder, where ``setup`` may put files first). Both folders are hashed before and after the
command: names, bytes and symlink targets must be unchanged. Rows run in-process through
``sned.cli.main`` (fast); ``subprocess=True`` runs a fresh ``python -m sned.cli`` instead, for
what only a real process shows (the exit status and stderr of the interpreter itself).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import torch

from sned.cli import main

FAST = ["model.frames=2", "data.num_videos=8", "train.batch_size=2", "train.warmup_steps=2",
        "train.warmup_stages=2", "train.ema_decay=0.99", "--no-progress", "--steps", "2"]
"""Tiny, short runs: a row that wrongly trains (as it did before the fixes) ends in seconds."""


@dataclass
class Case:
    """One bad command line.

    Attributes:
        id: test id.
        argv: arguments after ``sned`` (placeholders ``{run}``, ``{tmp}``).
        names: substrings the error must contain (the bad value / key / file).
        setup: ``setup(run, tmp)`` prepares files in ``tmp`` before the hash is taken.
        subprocess: run in a fresh interpreter instead of in-process.
        code: expected exit status.
        skip: reason to skip the row on this machine (None = run it).
    """

    id: str
    argv: list[str]
    names: list[str]
    setup: Callable[[Path, Path], None] | None = None
    subprocess: bool = False
    code: int = 2
    skip: str | None = field(default=None)


# ------------------------------------------------------------------------------ setups
def _write(name: str, data: bytes | str) -> Callable[[Path, Path], None]:
    def setup(run: Path, tmp: Path) -> None:
        path = tmp / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return setup


def _copy_run(mutate: Callable[[Path], None]) -> Callable[[Path, Path], None]:
    """Copy the shared run to ``tmp/run`` (symlinks kept) and damage the copy."""
    def setup(run: Path, tmp: Path) -> None:
        shutil.copytree(run, tmp / "run", symlinks=True)
        mutate(tmp / "run")
    return setup


def _dangle_latest(run: Path) -> None:
    latest = run / "checkpoints" / "latest"
    shutil.rmtree(latest.resolve())


def _corrupt_first_metrics_row(run: Path) -> None:
    path = run / "metrics.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(["{not json", *lines[1:]]) + "\n")


def _mkdir(name: str) -> Callable[[Path, Path], None]:
    return lambda run, tmp: (tmp / name).mkdir()


NO_GPU = "a CUDA device is available" if torch.cuda.is_available() else None

# ------------------------------------------------------------------------------ the table
def train(config: str, out: str, *extra: str) -> list[str]:
    """argv of a short tiny ``sned train`` (extra arguments last, so they win)."""
    return ["train", config, "--out", out, *FAST, *extra]


TABLE: list[Case] = [
    # sned train: the run folder
    Case("train-into-existing-run", train("tiny-base", "{run}"),
         ["{run}", "--resume", "--overwrite"]),
    Case("train-resume-missing-folder", train("tiny-base", "{tmp}/nope", "--resume"),
         ["{tmp}/nope", "does not exist"]),
    Case("train-resume-empty-folder", train("tiny-base", "{tmp}/empty", "--resume"),
         ["{tmp}/empty", "no complete"], setup=_mkdir("empty")),
    Case("train-resume-changed-model", train("tiny-base", "{run}", "--resume", "model.frames=4"),
         ["model.frames", "4"]),
    Case("train-resume-and-overwrite", train("tiny-base", "{run}", "--resume", "--overwrite"),
         ["--overwrite"]),
    Case("train-resume-corrupt-metrics-row", train("tiny-base", "{tmp}/run", "--resume"),
         ["metrics.jsonl", "line 1", "{not json"], setup=_copy_run(_corrupt_first_metrics_row)),
    # sned train: configs and overrides
    Case("train-override-not-yaml", train("tiny-base", "{tmp}/r", "frames=[1"), ["frames=[1"]),
    Case("train-override-not-an-int", train("tiny-base", "{tmp}/r", "train.batch_size=abc"),
         ["train.batch_size", "'abc'"]),
    Case("train-override-bare-key-not-a-number", train("tiny-base", "{tmp}/r", "lr=fast"),
         ["train.lr", "'fast'"]),
    Case("train-override-model-not-a-number", train("tiny-base", "{tmp}/r", "model.dropout=x"),
         ["dropout", "'x'"]),
    Case("train-override-unknown-key", train("tiny-base", "{tmp}/r", "train.nope=1"), ["nope"]),
    Case("train-override-no-key", train("tiny-base", "{tmp}/r", "=3"), ["'=3'"]),
    Case("train-override-past-list-end", train("tiny-base", "{tmp}/r", "model.levels.7.mult=2"),
         ["model.levels.7.mult", "7"]),
    Case("train-override-into-scalar", train("tiny-base", "{tmp}/r", "model.frames.x=1"),
         ["model.frames.x", "'x'"]),
    Case("train-yaml-syntax-error", train("{tmp}/bad.yaml", "{tmp}/r"),
         ["{tmp}/bad.yaml", "line 3"],
         setup=_write("bad.yaml", "model: tiny-base\ntrain: {lr: 1e-4\n")),
    Case("train-yaml-syntax-error-subprocess", train("{tmp}/bad.yaml", "{tmp}/r"),
         ["{tmp}/bad.yaml"], setup=_write("bad.yaml", "model: tiny-base\ntrain: [\n"),
         subprocess=True),
    Case("train-yaml-value-not-a-number", train("{tmp}/run.yaml", "{tmp}/r"),
         ["train.lr", "'fast'"], setup=_write("run.yaml", "model: tiny-base\ntrain: {lr: fast}\n")),
    Case("train-yaml-section-not-a-mapping", train("{tmp}/run.yaml", "{tmp}/r"),
         ["'train'", "[1, 2]"], setup=_write("run.yaml", "model: tiny-base\ntrain: [1, 2]\n")),
    Case("train-yaml-binary-file", train("{tmp}/bin.yaml", "{tmp}/r"), ["{tmp}/bin.yaml"],
         setup=_write("bin.yaml", bytes(range(128, 256)) * 4)),
    Case("train-device-cuda-without-gpu", train("tiny-base", "{tmp}/r", "train.device=cuda"),
         ["train.device", "cuda"], skip=NO_GPU),
    # sned cost
    Case("cost-arch-binary-file", ["cost", "tiny-base", "--arch", "{tmp}/arch.json"],
         ["{tmp}/arch.json"], setup=_write("arch.json", bytes(range(128, 256)) * 4)),
    Case("cost-override-not-yaml", ["cost", "tiny-base", "frames=[1"], ["frames=[1"]),
    # loading a run whose checkpoints/latest dangles
    Case("extract-latest-dangling", ["extract", "{tmp}/run", "--preset", "S", "--out",
                                     "{tmp}/model"], ["latest", "step-0000002", "newest"],
         setup=_copy_run(_dangle_latest)),
]


# ------------------------------------------------------------------------------ the test
def tree_hash(root: Path) -> str:
    """Hash of every name, file content and symlink target under ``root``."""
    h = hashlib.sha256()
    if not root.exists():
        return "absent"
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            h.update(str(p.relative_to(root)).encode() + b"\0")
            if p.is_symlink():
                h.update(b"link:" + os.readlink(p).encode())
            elif p.is_file():
                h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A two-step tiny-base run with checkpoints at steps 1 and 2."""
    run = tmp_path_factory.mktemp("bad-inputs") / "run"
    assert main(["train", "tiny-base", "--out", str(run), *FAST, "train.checkpoint_every=1"]) == 0
    return run


def _run_cli(argv: list[str], in_subprocess: bool, capsys) -> tuple[int, str]:
    if in_subprocess:
        proc = subprocess.run([sys.executable, "-m", "sned.cli", *argv], capture_output=True,
                              text=True, timeout=300)
        return proc.returncode, proc.stderr
    try:
        code = main(argv)
    except SystemExit as e:  # argparse errors
        code = e.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", TABLE, ids=[c.id for c in TABLE])
def test_bad_input(case: Case, finished_run: Path, tmp_path: Path, capsys):
    if case.skip:
        pytest.skip(case.skip)
    if case.setup is not None:
        case.setup(finished_run, tmp_path)
    def fill(text: str) -> str:
        return text.replace("{run}", str(finished_run)).replace("{tmp}", str(tmp_path))

    argv = [fill(a) for a in case.argv]
    before = tree_hash(finished_run), tree_hash(tmp_path)
    capsys.readouterr()
    code, err = _run_cli(argv, case.subprocess, capsys)
    assert code == case.code, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) >= 1 and "error" in lines[-1], err
    for name in case.names:
        assert fill(name) in lines[-1], f"{name!r} not named in: {lines[-1]}"
    assert (tree_hash(finished_run), tree_hash(tmp_path)) == before, "files were changed"
