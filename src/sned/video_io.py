"""Video files: float videos → uint8 frames, mp4/gif writing, PNG frame grids, decoding.

* :func:`to_uint8` — model output (C, T, H, W) or (B, C, T, H, W) in [-1, 1] → uint8
  (T, H, W, 3) / (B, T, H, W, 3).
* :func:`write_video` — ``.mp4`` (H.264 via PyAV/libx264, yuv420p, CRF 18 by default) or ``.gif``
  (PyAV's GIF encoder with an exact palette when the video has ≤ 256 colours, otherwise a
  Pillow median-cut palette per frame; loops forever). Every input frame becomes one output frame
  (identical consecutive frames are not merged).
* :func:`write_frame_grid` — a PNG with one row per video and one column per frame.
* :func:`read_video` — decode any container PyAV reads (mp4, gif, webm, ...) → uint8 (T, H, W, 3).

Writes are atomic: the file is written to a hidden temporary file in the destination folder and
moved over ``path`` with :func:`os.replace`, so a crash never leaves a partial file under the
final name. An unwritable destination raises :class:`VideoWriteError` (an ``OSError``) naming
the path.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

__all__ = ["VideoWriteError", "read_video", "to_uint8", "write_frame_grid", "write_video"]

VIDEO_SUFFIXES = (".mp4", ".gif")


class VideoWriteError(OSError):
    """A video or image could not be written to the given path."""


# --------------------------------------------------------------------------------- conversion
def to_uint8(video) -> np.ndarray:
    """Float video(s) in [-1, 1] → uint8 frames, channels last.

    Args:
        video: torch tensor or numpy array, (C, T, H, W) or (B, C, T, H, W) with C = 3 (RGB) or
            C = 1 (grey, repeated to RGB). Values outside [-1, 1] are clipped.
    Returns:
        numpy uint8 (T, H, W, 3) or (B, T, H, W, 3): ``round((x + 1) / 2 * 255)``.
    """
    try:  # torch tensors (any device / dtype) → float32 numpy
        import torch
        if isinstance(video, torch.Tensor):
            video = video.detach().to("cpu", torch.float32).numpy()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    arr = np.asarray(video, dtype=np.float32)
    if arr.ndim not in (4, 5):
        raise ValueError(f"video must be (C, T, H, W) or (B, C, T, H, W); got shape {arr.shape}")
    c_axis = arr.ndim - 4
    if arr.shape[c_axis] == 1:
        arr = np.repeat(arr, 3, axis=c_axis)
    if arr.shape[c_axis] != 3:
        raise ValueError(f"video must have 1 or 3 channels on axis {c_axis}; got shape "
                         f"{arr.shape}")
    out = np.rint((np.clip(np.nan_to_num(arr), -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
    return np.ascontiguousarray(np.moveaxis(out, c_axis, -1))


def _check_frames(frames, name: str = "frames") -> np.ndarray:
    arr = np.asarray(frames)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"{name} must be uint8 (T, H, W, 3); got {arr.dtype} {arr.shape} "
                         f"(convert model output with sned.video_io.to_uint8)")
    if min(arr.shape[:3]) < 1:
        raise ValueError(f"{name} is empty: shape {arr.shape}")
    return np.ascontiguousarray(arr)


# --------------------------------------------------------------------------------- atomic write
def _write_error(dest: Path, e: OSError) -> VideoWriteError:
    msg = f"cannot write {str(dest)!r}: {e.strerror or e}"
    return VideoWriteError(e.errno, msg) if e.errno is not None else VideoWriteError(msg)


def _file_mode() -> int:
    """Permissions a plain ``open(path, "w")`` would give (mkstemp files are 0600)."""
    old = os.umask(0o022)
    os.umask(old)
    return 0o666 & ~old


@contextmanager
def _atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary file name next to ``path``; on success move it over ``path``."""
    dest = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part",
                                   dir=str(dest.parent))
        os.close(fd)
    except OSError as e:
        raise _write_error(dest, e) from e
    try:
        yield tmp
        os.chmod(tmp, _file_mode())
        os.replace(tmp, dest)
    except OSError as e:
        raise _write_error(dest, e) from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# --------------------------------------------------------------------------------- writers
def write_video(path: str | os.PathLike, frames, fps: float = 8, *, crf: int = 18,
                preset: str = "medium") -> Path:
    """Write uint8 frames (T, H, W, 3) to ``path``; the suffix picks the format.

    Args:
        path: ``*.mp4`` (H.264, yuv420p — odd heights/widths are padded by one replicated
            row/column because 4:2:0 chroma needs even sizes) or ``*.gif`` (loops forever, frame
            duration ``1/fps`` in GIF's 10 ms units).
        frames: numpy uint8 (T, H, W, 3), RGB.
        fps: frames per second.
        crf: H.264 constant rate factor (0 = lossless luma, 18 ≈ visually lossless, 23 default
            of x264). Ignored for GIF.
        preset: x264 speed preset. Ignored for GIF.
    Returns:
        ``Path(path)``.
    """
    dest = Path(path)
    suffix = dest.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise ValueError(f"cannot write {str(dest)!r}: unsupported suffix {suffix!r}; use one of "
                         f"{list(VIDEO_SUFFIXES)}")
    arr = _check_frames(frames)
    if not fps > 0:
        raise ValueError(f"fps must be > 0 (got {fps})")
    writer: Callable[[str, np.ndarray, float], None]
    if suffix == ".mp4":
        def writer(tmp, a, f):
            _write_mp4(tmp, a, f, crf, preset)
    else:
        writer = _write_gif
    with _atomic_path(dest) as tmp:
        writer(tmp, arr, fps)
    return dest


def _write_mp4(tmp: str, frames: np.ndarray, fps: float, crf: int, preset: str) -> None:
    import av

    t, h, w, _ = frames.shape
    if h % 2 or w % 2:  # yuv420p needs even sizes: replicate the last row / column
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        h, w = frames.shape[1:3]
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(tmp, "w", format="mp4", options={"movflags": "+faststart"}) as out:
        stream = out.add_stream("libx264", rate=rate,
                                options={"crf": str(int(crf)), "preset": preset})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(t):
            frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
            frame.pts = i
            frame.time_base = 1 / rate
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def _palette(frames: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Palette indices (T, H, W) uint8 and per-frame (256, 4) ARGB palettes.

    Exact (one global palette) when the whole video has ≤ 256 colours; otherwise each frame gets
    a Pillow median-cut palette with Floyd–Steinberg dithering.
    """
    t = frames.shape[0]
    flat = frames.reshape(-1, 3)
    packed = (flat[:, 0].astype(np.uint32) << 16) | (flat[:, 1].astype(np.uint32) << 8) | flat[:, 2]
    colors, inverse = np.unique(packed, return_inverse=True)
    if len(colors) <= 256:
        pal = np.zeros((256, 4), np.uint8)
        pal[:, 0] = 255
        pal[:len(colors), 1] = colors >> 16
        pal[:len(colors), 2] = (colors >> 8) & 255
        pal[:len(colors), 3] = colors & 255
        return inverse.reshape(frames.shape[:3]).astype(np.uint8), [pal] * t
    from PIL import Image

    indices, palettes = [], []
    for i in range(t):
        q = Image.fromarray(frames[i], "RGB").quantize(256, method=Image.Quantize.MEDIANCUT,
                                                       dither=Image.Dither.FLOYDSTEINBERG)
        rgb = np.asarray(q.getpalette("RGB"), np.uint8).reshape(-1, 3)[:256]
        pal = np.zeros((256, 4), np.uint8)
        pal[:, 0] = 255
        pal[:len(rgb), 1:] = rgb
        indices.append(np.asarray(q, np.uint8))
        palettes.append(pal)
    return np.stack(indices), palettes


def _write_gif(tmp: str, frames: np.ndarray, fps: float) -> None:
    import av

    t, h, w, _ = frames.shape
    indices, palettes = _palette(frames)
    tb = Fraction(1, 100)  # GIF delays are in centiseconds
    with av.open(tmp, "w", format="gif", options={"loop": "0"}) as out:
        stream = out.add_stream("gif", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w, h, "pal8"
        stream.time_base = tb
        pts = -1
        for i in range(t):
            frame = av.VideoFrame.from_ndarray((indices[i], palettes[i]), format="pal8")
            pts = max(pts + 1, round(i * 100 / fps))  # ≥ 1 cs per frame, even at fps > 100
            frame.pts = pts
            frame.time_base = tb
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def write_frame_grid(path: str | os.PathLike, videos, max_frames: int = 8,
                     pad: int = 0) -> Path:
    """Save a PNG grid: row i = video i, column j = frame j (at most ``max_frames`` frames,
    evenly spaced over the video when it has more).

    Args:
        videos: uint8 (N, T, H, W, 3) or one video (T, H, W, 3).
        pad: pixels of black between tiles.
    Returns:
        ``Path(path)``; the image is ``N*H + (N-1)*pad`` high and ``F*W + (F-1)*pad`` wide,
        F = min(T, max_frames).
    """
    from PIL import Image

    arr = np.asarray(videos)
    if arr.ndim == 4:
        arr = arr[None]
    if arr.ndim != 5 or arr.dtype != np.uint8 or arr.shape[-1] != 3 or min(arr.shape) < 1:
        raise ValueError(f"videos must be uint8 (N, T, H, W, 3); got {arr.dtype} {arr.shape}")
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 (got {max_frames})")
    n, t, h, w, _ = arr.shape
    cols = np.unique(np.linspace(0, t - 1, min(t, max_frames)).round().astype(int))
    f = len(cols)
    grid = np.zeros((n * h + (n - 1) * pad, f * w + (f - 1) * pad, 3), np.uint8)
    for i in range(n):
        for j, k in enumerate(cols):
            y, x = i * (h + pad), j * (w + pad)
            grid[y:y + h, x:x + w] = arr[i, k]
    dest = Path(path)
    with _atomic_path(dest) as tmp:
        Image.fromarray(grid, "RGB").save(tmp, format="PNG")
    return dest


# --------------------------------------------------------------------------------- reading
def read_video(path: str | os.PathLike) -> np.ndarray:
    """Decode every frame of the first video stream of ``path`` → uint8 (T, H, W, 3) RGB."""
    import av

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"video file {str(p)!r} does not exist")
    try:
        with av.open(str(p)) as container:
            if not container.streams.video:
                raise ValueError(f"{str(p)!r} has no video stream")
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except av.FFmpegError as e:
        raise ValueError(f"cannot decode {str(p)!r}: {e}") from e
    if not frames:
        raise ValueError(f"{str(p)!r} contains no decodable frames")
    return np.stack(frames)
