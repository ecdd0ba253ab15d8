"""A folder of real videos (files and/or frame-image folders) as clip samples.

Layout: every file under ``root`` (at any depth) with a video extension is one video (decoded
with PyAV); every directory that directly contains image files is one video whose frames are
those images in natural-sort order (Sky-Timelapse layout ``root/<video>/<frames>.jpg``, also
``root/<video>/<clip>/<frames>.jpg``).

Probing happens at construction and is cheap: frame folders are counted by listing them; video
files are opened and only their container header is read (``stream.frames``, or duration ×
average rate when the container stores no count, e.g. WebM/MKV). Unreadable files and videos
with fewer than ``(frames - 1) * stride + 1`` frames are skipped there with one
:class:`SkippedVideoWarning` each and recorded in :attr:`VideoFolderDataset.skipped`. Damage that
only shows when decoding (e.g. a truncated file whose header survived) is found lazily: the item
is skipped the same way (warning + ``skipped``) and the next usable video is returned instead;
the item then carries those files in its ``skipped`` entry, so a process that only sees batches
(DataLoader workers keep their own copy of the dataset) can count them: :class:`SkipTally`.

Held-out split: with ``val_fraction`` > 0 every video belongs to ``"val"`` or ``"train"`` by a
hash of its path relative to the root (:func:`split_of`) — deterministic, and adding files never
moves the existing ones between splits. ``split="all"`` (default) keeps every video.

The object holds only strings and integers (no open files), so it pickles and works with
DataLoader workers. Clip starts are drawn from ``numpy.random.default_rng([seed, epoch, index])``;
call :meth:`VideoFolderDataset.set_epoch` each epoch for fresh clips.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from .transforms import frames_to_video

VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mov", ".mkv")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
SEEK_THRESHOLD = 48  # clips starting at or after this frame index seek instead of decoding


SPLITS = ("all", "train", "val")


def split_of(rel: str, val_fraction: float) -> str:
    """``"val"`` or ``"train"`` for the video at posix path ``rel`` (relative to the root):
    val iff the first 8 bytes of SHA-256(rel), as a fraction of 2^64, are < ``val_fraction``."""
    u = int.from_bytes(hashlib.sha256(rel.encode("utf-8")).digest()[:8], "big") / 2.0 ** 64
    return "val" if u < val_fraction else "train"


class SkippedVideoWarning(UserWarning):
    """A video was unreadable or too short and is skipped."""


class NoVideosError(ValueError):
    """The root holds no usable video."""


class CaptionFileError(ValueError):
    """The caption file is malformed or names videos that are not in the folder."""


@dataclass(frozen=True)
class _Video:
    rel: str                            # posix path relative to root
    num_frames: int
    frame_files: tuple[str, ...] = ()   # image names, for frame folders only

    @property
    def is_folder(self) -> bool:
        return bool(self.frame_files)


def _natural_key(name: str) -> list[Any]:
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", name)]


def _probe_frame_count(path: str) -> int:
    """Number of frames of a video file from its container header (no decoding)."""
    import av

    with av.open(path) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        if stream.frames:
            return int(stream.frames)
        rate = stream.average_rate or stream.guessed_rate
        if rate is None:
            raise ValueError("unknown frame rate and frame count")
        if stream.duration is not None and stream.time_base is not None:
            seconds = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            seconds = container.duration / 1_000_000
        else:
            raise ValueError("unknown duration and frame count")
        return int(round(seconds * float(rate)))


def _decode_clip(path: str, indices: Sequence[int], seek: bool) -> np.ndarray:
    """Decode the frames ``indices`` (increasing) of a video file → (T, H, W, 3) uint8.

    With ``seek`` the decoder first seeks to the keyframe before ``indices[0]`` and identifies
    frames by their timestamps; otherwise it decodes from the start, counting frames.
    Raises EOFError when the video ends before the last index.
    """
    import av

    wanted = {idx: k for k, idx in enumerate(indices)}
    out: list[np.ndarray | None] = [None] * len(indices)
    last = indices[-1]
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate, tb = stream.average_rate or stream.guessed_rate, stream.time_base
        t0 = stream.start_time or 0
        use_pts = bool(seek and rate and tb)
        if use_pts:
            target = t0 + int(Fraction(indices[0]) / Fraction(rate) / Fraction(tb))
            container.seek(target, stream=stream, backward=True, any_frame=False)
        count = 0
        for frame in container.decode(stream):
            if use_pts:
                if frame.pts is None:
                    raise ValueError("frame without timestamp after seeking")
                idx = int(round(float((frame.pts - t0) * tb * rate)))
                if count == 0 and idx > indices[0]:
                    raise ValueError("seek overshot the clip start")
            else:
                idx = count
            count += 1
            if idx in wanted and out[wanted[idx]] is None:
                out[wanted[idx]] = frame.to_ndarray(format="rgb24")
            if idx >= last:
                break
    if any(f is None for f in out):
        raise EOFError(f"video ended before frame {last} ({count} frames decoded)")
    return np.stack(out)  # type: ignore[arg-type]


def _read_images(folder: str, names: Sequence[str]) -> np.ndarray:
    """Load image files → (T, H, W, 3) uint8 (all frames must share a size)."""
    from PIL import Image

    frames = []
    for name in names:
        with Image.open(os.path.join(folder, name)) as img:
            frames.append(np.asarray(img.convert("RGB")))
    if len({f.shape for f in frames}) != 1:
        raise ValueError("frames have different sizes")
    return np.stack(frames)


def _normalise_key(value: str) -> str:
    key = str(value).strip().replace("\\", "/")
    while key.startswith("./"):
        key = key[2:]
    return key.rstrip("/")


def _read_caption_rows(path: Path) -> list[tuple[str, str, str]]:
    """Rows (where, video, caption) of a CSV (header ``video,caption``) or JSONL file."""
    if not path.is_file():
        raise FileNotFoundError(f"caption file not found: {path}")
    rows: list[tuple[str, str, str]] = []
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            fields = reader.fieldnames or []
            if "video" not in fields or "caption" not in fields:
                raise CaptionFileError(f"caption file {path}: expected CSV columns 'video' and "
                                       f"'caption', found {fields}")
            for lineno, row in enumerate(reader, start=2):
                if row.get("video") is None or row.get("caption") is None:
                    raise CaptionFileError(f"caption file {path}, line {lineno}: missing "
                                           f"'video' or 'caption' value: {row}")
                rows.append((f"line {lineno}", row["video"], row["caption"]))
    elif suffix in (".jsonl", ".ndjson"):
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as err:
                    raise CaptionFileError(f"caption file {path}, line {lineno}: invalid JSON "
                                           f"({err.msg})") from None
                if not isinstance(obj, dict) or not isinstance(obj.get("video"), str) \
                        or not isinstance(obj.get("caption"), str):
                    raise CaptionFileError(f"caption file {path}, line {lineno}: expected an "
                                           f"object with string 'video' and 'caption', got "
                                           f"{line.strip()[:200]}")
                rows.append((f"line {lineno}", obj["video"], obj["caption"]))
    else:
        raise CaptionFileError(f"caption file {path}: unsupported format {suffix!r} "
                               "(use .csv with columns video,caption or .jsonl)")
    return rows


class VideoFolderDataset(Dataset):
    """Random clips from a folder of videos.

    Args:
        root: folder to scan recursively.
        frames: frames per clip T.
        resolution: output side; frames are resized (short side, antialiased bilinear) and
            center-cropped to resolution × resolution.
        stride: take every ``stride``-th frame.
        captions: None (unconditional: every caption is ""), a path to a ``.csv`` (columns
            ``video,caption``) or ``.jsonl`` (``{"video": ..., "caption": ...}`` per line) file,
            or a mapping video key → caption. A key matches a video by relative path (with or
            without extension), file name or stem. Several rows for one video give it several
            captions (one is drawn per sample); videos without a row get "".
        seed: sampling seed.
        split: ``"all"``, or the ``"train"`` / ``"val"`` part of the hash split (:func:`split_of`).
        val_fraction: fraction of videos (by path hash) in the ``"val"`` split.
        extensions: video file extensions to accept.
        image_extensions: frame image extensions to accept.

    Items: ``video`` (3, T, resolution, resolution) float32 in [-1, 1], ``caption`` str,
    ``path`` (absolute path of the file or frame folder), ``skipped`` (tuple of ``(path,
    reason)`` of videos found undecodable while producing this item; usually empty).

    Raises:
        FileNotFoundError: ``root`` (or the caption file) does not exist.
        NoVideosError: no usable video under ``root``.
        CaptionFileError: malformed caption file, a row naming no video, or an ambiguous key.
    """

    def __init__(self, root: str | os.PathLike, frames: int, resolution: int, stride: int = 1,
                 captions: str | os.PathLike | Mapping[str, str] | None = None, seed: int = 0,
                 split: str = "all", val_fraction: float = 0.0,
                 extensions: Sequence[str] = VIDEO_EXTENSIONS,
                 image_extensions: Sequence[str] = IMAGE_EXTENSIONS) -> None:
        if frames < 1 or stride < 1 or resolution < 1:
            raise ValueError(f"frames, stride and resolution must be >= 1, got frames={frames},"
                             f" stride={stride}, resolution={resolution}")
        self.root = Path(root).expanduser().resolve()
        if not self.root.exists():
            raise FileNotFoundError(f"video root not found: {self.root}")
        if not self.root.is_dir():
            raise NotADirectoryError(f"video root is not a directory: {self.root}")
        if split not in SPLITS or not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"split must be one of {SPLITS} and 0 <= val_fraction < 1, got "
                             f"split={split!r}, val_fraction={val_fraction}")
        if split == "val" and val_fraction == 0.0:
            raise ValueError(f"split='val' of {self.root} needs val_fraction > 0 "
                             "(data.val_fraction)")
        self.frames, self.resolution, self.stride, self.seed = frames, resolution, stride, seed
        self.split, self.val_fraction = split, float(val_fraction)
        self.epoch = 0
        self.span = (frames - 1) * stride + 1
        self.skipped: list[tuple[str, str]] = []
        self._warned: set[str] = set()
        self._bad: set[int] = set()  # indices whose decoding failed (found lazily)
        exts = tuple(e.lower() for e in extensions)
        img_exts = tuple(e.lower() for e in image_extensions)

        found = self._scan(exts, img_exts)
        if not found:
            raise NoVideosError(f"no videos ({', '.join(exts)}) or frame folders "
                                f"({', '.join(img_exts)}) found under {self.root}")
        mine = found if split == "all" else [f for f in found
                                             if split_of(f[0], self.val_fraction) == split]
        if not mine:
            raise NoVideosError(f"the {split!r} split (val_fraction={val_fraction}) of the "
                                f"{len(found)} videos under {self.root} is empty; change "
                                "data.val_fraction")
        self.videos: list[_Video] = []
        for rel, names in mine:
            try:
                n = len(names) if names else _probe_frame_count(str(self.root / rel))
            except Exception as err:  # noqa: BLE001 - any unreadable file is skipped
                self._skip(rel, f"unreadable ({type(err).__name__}: {err})")
                continue
            if n < self.span:
                self._skip(rel, f"too short ({n} frames < {self.span} needed for "
                                f"frames={frames}, stride={stride})")
                continue
            self.videos.append(_Video(rel, n, tuple(names)))
        if not self.videos:
            raise NoVideosError(f"no usable videos under {self.root}: all {len(mine)} "
                                f"candidates were skipped ({self.skipped[0][1]}, ...)")
        self.captions: list[tuple[str, ...]] = [()] * len(self.videos)
        if captions is not None:
            self._attach_captions(captions, [rel for rel, _ in found])

    # ------------------------------------------------------------------ construction helpers
    def _scan(self, exts: tuple[str, ...], img_exts: tuple[str, ...]
              ) -> list[tuple[str, list[str]]]:
        """(relative path, frame image names or []) of every candidate video, sorted."""
        found: list[tuple[str, list[str]]] = []
        seen: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=True):
            real = os.path.realpath(dirpath)
            if real in seen:            # a symlink cycle (or a second link to a folder)
                dirnames[:] = []
                continue
            seen.add(real)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel_dir = PurePosixPath(Path(dirpath).relative_to(self.root).as_posix())
            images = sorted((f for f in filenames if f.lower().endswith(img_exts)
                             and not f.startswith(".")), key=_natural_key)
            if images and str(rel_dir) != ".":
                found.append((str(rel_dir), images))
            for f in sorted(filenames):
                if f.lower().endswith(exts) and not f.startswith("."):
                    found.append((str(rel_dir / f) if str(rel_dir) != "." else f, []))
        return sorted(found, key=lambda item: _natural_key(item[0]))

    def _skip(self, rel: str, reason: str) -> None:
        path = str(self.root / rel)
        self.skipped.append((path, reason))
        if path not in self._warned:
            self._warned.add(path)
            warnings.warn(f"skipping video {path}: {reason}", SkippedVideoWarning, stacklevel=3)

    def _attach_captions(self, captions: str | os.PathLike | Mapping[str, str],
                         all_rels: list[str]) -> None:
        if isinstance(captions, Mapping):
            rows = [(f"key {k!r}", k, v) for k, v in captions.items()]
            source = "captions mapping"
        else:
            path = Path(captions).expanduser().resolve()
            rows, source = _read_caption_rows(path), f"caption file {path}"
        # every key form of every discovered video (skipped ones too: their rows are valid)
        index: dict[str, set[str]] = {}
        for rel in all_rels:
            p = PurePosixPath(rel)
            for key in {rel, str(p.with_suffix("")) if p.suffix else rel, p.name, p.stem}:
                index.setdefault(key, set()).add(rel)
        usable = {v.rel: i for i, v in enumerate(self.videos)}
        per_video: dict[int, list[str]] = {}
        for where, key, caption in rows:
            matches = index.get(_normalise_key(key), set())
            if not matches:
                raise CaptionFileError(f"{source}, {where}: video {key!r} matches no video "
                                       f"under {self.root}")
            if len(matches) > 1:
                raise CaptionFileError(f"{source}, {where}: video {key!r} is ambiguous, it "
                                       f"matches {sorted(matches)}; use the relative path")
            rel = next(iter(matches))
            if rel in usable:
                per_video.setdefault(usable[rel], []).append(str(caption))
        self.captions = [tuple(per_video.get(i, ())) for i in range(len(self.videos))]
        missing = sum(1 for c in self.captions if not c)
        if missing:
            warnings.warn(f"{missing} of {len(self.videos)} videos under {self.root} have no "
                          f"caption in the {source}; they get the empty caption",
                          stacklevel=3)

    def caption_set(self) -> list[str]:
        """The distinct captions items can carry (``""`` for videos without one), sorted."""
        found = {c for caps in self.captions for c in caps}
        return sorted(found | ({""} if any(not caps for caps in self.captions) else set()))

    # ---------------------------------------------------------------------------- sampling
    def set_epoch(self, epoch: int) -> None:
        """Select the clip starts (and caption choices) of another epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.videos)

    def draw(self, index: int) -> tuple[int, str]:
        """(clip start, caption) of item ``index`` in the current epoch — no decoding."""
        rng = np.random.default_rng([self.seed, self.epoch, index])
        start = int(rng.integers(0, self.videos[index].num_frames - self.span + 1))
        caps = self.captions[index]
        caption = caps[int(rng.integers(len(caps)))] if len(caps) > 1 else (caps[0] if caps
                                                                             else "")
        return start, caption

    def _load(self, index: int) -> dict[str, Any]:
        video = self.videos[index]
        start, caption = self.draw(index)
        path = str(self.root / video.rel)
        indices = list(range(start, start + self.span, self.stride))
        if video.is_folder:
            frames = _read_images(path, [video.frame_files[i] for i in indices])
        else:
            try:
                frames = _decode_clip(path, indices, seek=start >= SEEK_THRESHOLD)
            except (EOFError, ValueError):
                # header counts can be estimates (or seeking unreliable): decode from the start
                # and, if the video is shorter than its header said, take its last valid clip.
                frames = self._decode_fallback(path, indices)
        return {"video": frames_to_video(frames, self.resolution), "caption": caption,
                "path": path}

    def _decode_fallback(self, path: str, indices: list[int]) -> np.ndarray:
        try:
            return _decode_clip(path, indices, seek=False)
        except EOFError:
            n = _count_decodable(path)
            if n < self.span:
                raise
            shift = indices[0] - (n - self.span)
            return _decode_clip(path, [i - shift for i in indices], seek=False)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} videos")
        index %= len(self)
        first_skip = len(self.skipped)
        for attempt in range(len(self)):
            i = (index + attempt) % len(self)
            if i in self._bad:
                continue
            try:
                item = self._load(i)
            except Exception as err:  # noqa: BLE001 - damaged files must not crash training
                self._bad.add(i)
                self._skip(self.videos[i].rel, f"failed to decode ({type(err).__name__}: {err})")
                continue
            item["skipped"] = tuple(self.skipped[first_skip:])
            return item
        raise NoVideosError(f"no video under {self.root} could be decoded")


def _count_decodable(path: str) -> int:
    """Frames that actually decode from a video file (decodes everything; fallback only)."""
    import av

    with av.open(path) as container:
        return sum(1 for _ in container.decode(container.streams.video[0]))


class SkipTally:
    """Every file a dataset skipped, including those found inside DataLoader workers.

    Starts from ``dataset.skipped`` (probe-time skips, found in this process) and adds the
    ``skipped`` entries of the batches it is shown (:meth:`add`); a path counts once however
    many workers found it. ``paths``: path → reason.
    """

    def __init__(self, dataset: Any) -> None:
        self.paths: dict[str, str] = dict(getattr(dataset, "skipped", ()))

    def add(self, batch: Mapping[str, Any]) -> None:
        """Record the ``skipped`` entries of a collated batch (a list of per-item tuples)."""
        for per_item in batch.get("skipped", ()):
            for path, reason in per_item:
                self.paths.setdefault(path, reason)

    def __len__(self) -> int:
        return len(self.paths)

    def record(self, limit: int = 50) -> dict[str, Any]:
        """JSON-able ``{"count", "files": [[path, reason], …] (first ``limit``)}``."""
        return {"count": len(self.paths), "files": [list(kv) for kv in
                                                    list(self.paths.items())[:limit]]}
