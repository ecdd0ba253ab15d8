"""File helpers shared by model folders and training checkpoints: atomic folders and files,
safetensors writes with a digest and reads that verify it, strict state-dict matching, file
identities (sha256), and the one rule for output folders (:func:`check_output`).

Digests (issue 28): every weight file sned writes has its digest recorded in the JSON beside it
(``state.json`` of a checkpoint, ``config.json`` of a model / autoencoder folder, under
``"digests"``); every load verifies it, and a mismatch is a :class:`CheckpointError` naming the
file. The digest is sha256 over 64 MiB chunks hashed on several threads, then sha256 of the
chunk digests (:func:`digest_bytes`) — ``benchmarks/bench_digest.py`` measured it against one
sha256 stream, blake2b and crc32 (docs/benchmarks.md, "Weight digests")."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save


class CheckpointError(RuntimeError):
    """A model folder or checkpoint is missing, corrupt or for another model."""


@contextmanager
def atomic_folder(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling folder ``.tmp-<name>-<pid>``; on success it replaces ``final``
    (one rename: everything written into it appears at once), on error it goes. Temporary
    folders of earlier, killed writes of ``final`` (a pid no longer running) are removed."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(final)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)  # the files' bytes are on disk before the rename makes them visible
        if final.is_symlink():
            raise OutputError(f"{final} is a symbolic link (to {os.readlink(final)}); it is "
                              f"never replaced through the link — write to another folder")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def clean_stale_temps(final: Path) -> list[Path]:
    """Remove ``.tmp-<final.name>-<pid>`` siblings whose process is gone (a killed write);
    returns what was removed. A temp folder of a live process is left alone."""
    final = Path(final)
    prefix = f".tmp-{final.name}-"
    gone = []
    if not final.parent.is_dir():
        return gone
    for p in final.parent.iterdir():
        pid = p.name[len(prefix):]
        if not p.name.startswith(prefix) or not pid.isdigit() or _alive(int(pid)):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        gone.append(p)
    return gone


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process starts the write now: an earlier one of ours is stale
    return pid_alive(pid)


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (one of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_tree(folder: Path) -> None:
    for root, _, files in os.walk(folder):
        for name in files:
            p = Path(root) / name
            if not p.is_symlink():
                with open(p, "rb") as f:
                    os.fsync(f.fileno())


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a directory
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------- atomic files
def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: a temporary sibling, fsync, one rename (a crash
    leaves the old file or the new one, never a torn one)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, data, indent: int = 1) -> Path:
    """Write ``data`` as JSON to ``path`` atomically (:func:`atomic_write_bytes`)."""
    return atomic_write_text(path, json.dumps(data, indent=indent))


def read_json(path: str | os.PathLike, what: str = "JSON file"):
    """The JSON value in ``path``; a missing, unreadable or torn file is a CheckpointError
    naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing ({what})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON (a torn or edited {what}?): "
                              f"{e}") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read {what}: {e.strerror or e}") from None


# --------------------------------------------------------------------------------- digests
DIGEST_CHUNK = 64 << 20
DIGEST_PREFIX = "sha256x64m:"
"""The digest's name: sha256 of the sha256 digests of 64 MiB chunks (and the length)."""


def _combine(size: int, read_chunk: Callable[[int], bytes | memoryview],
             threads: int | None) -> str:
    starts = list(range(0, size, DIGEST_CHUNK)) or [0]
    threads = min(threads or min(8, os.cpu_count() or 1), len(starts))

    def one(start: int) -> bytes:
        return hashlib.sha256(read_chunk(start)).digest()  # hashlib releases the GIL
    if threads > 1:
        with ThreadPoolExecutor(threads) as pool:
            parts = list(pool.map(one, starts))
    else:
        parts = [one(s) for s in starts]
    top = hashlib.sha256(size.to_bytes(8, "little"))
    for part in parts:
        top.update(part)
    return DIGEST_PREFIX + top.hexdigest()


def digest_bytes(data: bytes | memoryview, threads: int | None = None) -> str:
    """The digest of ``data``: each 64 MiB chunk hashed with sha256 on ``threads`` threads
    (default: up to 8 cores), then sha256 of the length and the chunk digests. Returns
    ``"sha256x64m:<hex>"``."""
    view = memoryview(data).cast("B")
    return _combine(len(view), lambda s: view[s:s + DIGEST_CHUNK], threads)


def file_digest(path: str | os.PathLike, threads: int | None = None) -> str:
    """:func:`digest_bytes` of a file's bytes, read chunk by chunk (positional reads on the
    hashing threads: the file is never held in memory whole)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        return _combine(size, lambda s: os.pread(fd, DIGEST_CHUNK, s), threads)
    finally:
        os.close(fd)


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike) -> str:
    """Write ``tensors`` (moved to CPU, contiguous) as a safetensors file atomically; returns
    the digest of the bytes written (to record beside the file)."""
    data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()},
                metadata={"format": "pt"})
    atomic_write_bytes(path, data)
    return digest_bytes(data)


_NOTED: set[str] = set()


def note_once(message: str) -> None:
    """Print ``sned: note: message`` to stderr once per process."""
    if message not in _NOTED:
        _NOTED.add(message)
        print(f"sned: note: {message}", file=sys.stderr, flush=True)


def expected_digest(path: Path, digests: dict | None, record: Path) -> str | None:
    """The digest ``record`` (a JSON file) lists for ``path``; None with a note when the
    record has no ``digests`` (a folder written before sned recorded them); a record with
    digests that omits the file is a CheckpointError."""
    if digests is None:
        note_once(f"{record} records no weight digests (written by an older sned): "
                  f"{record.parent} is loaded unverified")
        return None
    if not isinstance(digests, dict) or not isinstance(digests.get(path.name), str):
        raise CheckpointError(f"{record} records no digest for {path.name}; the folder is not "
                              f"one sned wrote whole — it is not loaded")
    return digests[path.name]


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 hex digest of a file's bytes (the identity of an input's weights)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_safetensors(path: Path, device: str | torch.device = "cpu", digest: str | None = None,
                     finite: bool = True) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file. ``digest`` (recorded when it was written): the
    file's bytes must have it. ``finite``: a floating tensor holding NaN or ±inf is an error
    naming it (safetensors checks the header, not the data). Errors are CheckpointErrors
    naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    try:
        if digest is not None:
            found = file_digest(path)
            if found != digest:
                raise CheckpointError(
                    f"{path} is corrupt or truncated (or was changed): its bytes do not match "
                    f"the digest recorded when it was written ({digest[:24]}…, now "
                    f"{found[:24]}…) — it is not loaded")
        tensors = load_file(path, device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is corrupt or truncated: {e}") from None
    if finite:
        for name, t in tensors.items():
            if not all_finite(t):
                raise CheckpointError(f"{path}: tensor {name} holds non-finite values (NaN or "
                                      f"inf); the file is corrupt — it is not loaded")
    return tensors


def all_finite(t: torch.Tensor) -> bool:
    """Whether a tensor holds no NaN / inf (True for non-float tensors). Its min and max are
    finite exactly then (both propagate NaN): one fused reduction, ~14× faster than
    ``isfinite(t).all()`` on a CPU thread (benchmarks/bench_digest.py)."""
    if not t.is_floating_point() or t.numel() == 0:
        return True
    lo, hi = torch.aminmax(t.detach())
    return bool(torch.isfinite(lo) & torch.isfinite(hi))


def check_state_dict(expected: dict, state: dict, source: str, target: str) -> None:
    """Raise CheckpointError listing the first missing / unexpected / mis-shaped keys."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state
             and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        raise CheckpointError(f"{source} does not match {target}: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}, wrong shape {wrong[:5]}")


def read_format_json(path: Path, fmt: str, what: str) -> dict:
    """Read a JSON file whose ``"format"`` must be ``fmt``; errors name the file."""
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: not a {what}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise CheckpointError(f"{path}: not a {what} (missing \"format\": \"{fmt}\")")
    return data


# --------------------------------------------------------------------------------- output folders
class OutputError(CheckpointError):
    """An output folder the command may not write into or remove; the message names the path
    and why (the CLI exits with status 2, nothing touched)."""


@dataclass(frozen=True)
class OutputKind:
    """What one command writes into its output folder.

    Attributes:
        what: words for messages ("a training run").
        entries: the top-level names the command writes (and may remove with ``--overwrite``).
        marker: recognises a folder of this kind (default: any of ``entries`` present). Every
            kind with a marker is registered: a folder another kind recognises is never
            written into nor removed by this one.
        whole: the folder is the command's alone and is replaced as a unit (``sned extract``):
            a folder holding anything else is not of this kind.
    """

    what: str
    entries: tuple[str, ...]
    marker: Callable[[Path], bool] | None = None
    whole: bool = False

    def __post_init__(self) -> None:
        KINDS.append(self)

    def own(self, folder: Path) -> list[str]:
        """The entries of this kind present in ``folder`` (empty folders do not count)."""
        found = []
        for name in self.entries:
            p = folder / name
            if p.is_symlink() or p.is_file() or (p.is_dir() and any(p.iterdir())):
                found.append(name)
        return found

    def recognises(self, folder: Path) -> bool:
        if not folder.is_dir():
            return False
        if self.marker is not None:
            return bool(self.marker(folder))
        return bool(self.own(folder))


KINDS: list[OutputKind] = []
"""Every output kind defined (each command's module defines its own)."""


def has_format(name: str, *formats: str) -> Callable[[Path], bool]:
    """A marker: ``folder/name`` is a JSON object whose ``"format"`` is one of ``formats``."""
    def marker(folder: Path) -> bool:
        try:
            data = json.loads((folder / name).read_text())
        except (OSError, ValueError):
            return False
        return isinstance(data, dict) and data.get("format") in formats
    return marker


def _resolved(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(Path(path).expanduser())).resolve()


def check_output(out: str | os.PathLike, kind: OutputKind, inputs: Iterable = (), *,
                 overwrite: bool = False, reuse: bool = False, option: str = "--out",
                 hint: str | None = None) -> list[str]:
    """The one rule for every command's output folder; read-only. Returns the entries of
    ``kind`` the command will remove first (``overwrite``), else ``[]``.

    Refused (OutputError naming the path and why):

    - ``out`` is an existing file, or is, contains or lies inside one of ``inputs`` (the files
      and folders the command reads: a run, a model folder, an arch file, a data root);
    - ``out`` is a folder of another registered kind (a training run, a model folder, a DiffNAS
      run, ...), or — for a ``whole`` kind — holds files that are not the kind's;
    - ``out`` already holds this kind's entries and neither ``overwrite`` nor ``reuse`` is
      given (``reuse``: commands that resume or update their own files in place);
    - ``overwrite`` would remove something, or the kind is ``whole``, and ``out`` is ``.`` or
      a parent of the working directory.
    """
    path = Path(out)
    if kind.whole and path.is_symlink():
        raise OutputError(f"{option} {path} is a symbolic link (to {os.readlink(path)}); "
                          f"{kind.what} is written as a folder of its own, never through a "
                          f"link — choose a new {option}")
    if path.exists() and not path.is_dir():
        raise OutputError(f"{option} {path} is an existing file, not a folder; choose a new "
                          f"{option}")
    where = _resolved(path)
    for item in inputs:
        if item is None:
            continue
        src = _resolved(item)
        if where == src or src in where.parents or where in src.parents:
            how = ("is" if where == src else "lies inside" if src in where.parents
                   else "contains")
            raise OutputError(f"{option} {path} {how} the input {item}; a command never writes "
                              f"into its own inputs — choose another {option}")
    cwd = _resolved(".")
    at_cwd = where == cwd or where in cwd.parents
    if kind.whole and at_cwd:
        raise OutputError(f"{option} {path} is the working directory or a parent of it; "
                          f"{kind.what} is written as a folder of its own — choose a new "
                          f"{option}")
    if not path.is_dir() or not any(path.iterdir()):
        return []
    mine = kind.recognises(path)
    if not mine:
        other = next((k for k in KINDS if k is not kind and k.recognises(path)), None)
        if other is not None:
            raise OutputError(f"{option} {path} holds {other.what}, not {kind.what}; it is "
                              f"left alone — choose another {option}")
    if kind.whole:
        foreign = sorted(p.name for p in path.iterdir()
                         if p.name not in kind.entries and not p.name.startswith(".tmp-"))
        if foreign or not mine:
            listed = ", ".join(foreign[:5]) or "no marker"
            raise OutputError(f"{option} {path} already holds files that are not {kind.what} "
                              f"({listed}); it is left alone — choose a new {option}")
    found = kind.own(path)
    if not found or reuse:
        return []
    if not overwrite:
        raise OutputError(hint or f"{option} {path} already holds {kind.what} "
                                  f"({', '.join(found)}); choose a new {option} or pass "
                                  f"--overwrite to replace it")
    if not mine:
        raise OutputError(f"--overwrite: {option} {path} holds {', '.join(found)} but is not "
                          f"{kind.what} (not written by this command); nothing is removed — "
                          f"choose another {option}")
    if at_cwd:
        raise OutputError(f"--overwrite: {option} {path} is the working directory or a parent "
                          f"of it; refusing to remove anything there — choose a sub-folder")
    return found


def remove_entries(folder: Path, names: Iterable[str]) -> None:
    """Remove the named top-level entries of ``folder`` (the ones :func:`check_output`
    returned); a symlink is unlinked, never followed."""
    for name in names:
        p = Path(folder) / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


# the output kinds of every command (one table: each recognises its own folders by its markers)
RUN = OutputKind("a training run", ("checkpoints", "metrics.jsonl", "run_config.json",
                                    "tensorboard", "eval.jsonl", "autoencoder"),
                 marker=lambda f: any((f / n).exists() for n in
                                      ("checkpoints", "metrics.jsonl", "run_config.json")))
def _is_sned_model(folder: Path) -> bool:
    """A model folder of any layout sned writes: 0.1 (``"format": "sned-model"``), a diffusers
    VideoUNet folder, or a pipeline folder whose ``model_index.json`` names library ``sned``."""
    if has_format("config.json", "sned-model")(folder):
        return True
    for name, ok in (("config.json", lambda d: d.get("_class_name") == "VideoUNet"),
                     ("model_index.json", lambda d: (d.get("unet") or [None])[0] == "sned")):
        try:
            data = json.loads((folder / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and ok(data):
            return True
    return False


MODEL = OutputKind("a model folder", ("config.json", "model.safetensors", "README.md",
                                      "arch.json", "autoencoder",
                                      "diffusion_pytorch_model.safetensors", "model_index.json",
                                      "unet", "scheduler", "vae", "ssr_unet", "text_encoder",
                                      "tokenizer", "video.yaml"),
                   marker=_is_sned_model, whole=True)
AUTOENCODER = OutputKind("an autoencoder folder", ("config.json", "model.safetensors"),
                         marker=has_format("config.json", "sned-autoencoder"), whole=True)
DIFFNAS = OutputKind("a DiffNAS run", ("state.json", "work", "search.json", "model", "retrain",
                                       "uniform", "uniform-retrain", "compare", "scores.json",
                                       "report.md"),
                     marker=has_format("state.json", "sned-diffnas"))
STUDY = OutputKind("a study", ("study.json", "runs", "results.json", "results.md", "cache"),
                   marker=lambda f: (f / "study.json").is_file())
QUICKSTART = OutputKind("a quickstart", ("runs", "models", "videos"),
                        marker=lambda f: (f / "runs" / "base").is_dir()
                        or (f / "models").is_dir() and (f / "videos").is_dir())
EVALUATION = OutputKind("an evaluation", ("table.json", "report.md", "report.html", "cache"),
                        marker=lambda f: (f / "table.json").is_file())
SEARCH = OutputKind("a search", ("pareto.json", "pareto_random.json", "pareto.png",
                                 "latency_table.json"),
                    marker=lambda f: (f / "pareto.json").is_file())
SAMPLES = OutputKind("generated videos", (), marker=lambda f: False)
