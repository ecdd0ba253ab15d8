"""sned.video_io: uint8 conversion, mp4/gif round trips, PNG grids, atomic writes, errors."""

from __future__ import annotations

import os

import av
import numpy as np
import pytest
import torch
from PIL import Image

from sned import video_io
from sned.video_io import VideoWriteError, read_video, to_uint8, write_frame_grid, write_video


def smooth_video(t: int = 8, h: int = 32, w: int = 32) -> np.ndarray:
    """A slowly varying colour video, uint8 (T, H, W, 3) — easy for H.264."""
    tt, yy, xx = np.meshgrid(np.arange(t), np.arange(h) / h, np.arange(w) / w, indexing="ij")
    rgb = [128 + 80 * np.sin(2 * np.pi * xx + tt / 4), 128 + 80 * np.cos(2 * np.pi * yy + tt / 5),
           128 + 60 * np.sin(np.pi * (xx + yy) + 0 * tt)]
    return np.stack(rgb, -1).round().astype(np.uint8)


def palette_video(t: int = 6, h: int = 12, w: int = 20, colours: int = 12) -> np.ndarray:
    rng = np.random.default_rng(0)
    pal = rng.integers(0, 256, (colours, 3), dtype=np.uint8)
    vid = pal[rng.integers(0, colours, (t, h, w))]
    vid[3] = vid[2]  # identical consecutive frames must stay two frames
    return vid


def test_to_uint8_values_and_shapes():
    x = torch.tensor([-1.0, 0.0, 1.0, 2.0, -3.0, 0.5]).reshape(1, 1, 1, 6).expand(3, 1, 1, 6)
    u = to_uint8(x)
    assert u.shape == (1, 1, 6, 3) and u.dtype == np.uint8
    assert u[0, 0, :, 0].tolist() == [0, 128, 255, 255, 0, 191]
    batch = to_uint8(np.zeros((2, 3, 4, 5, 6), np.float32))
    assert batch.shape == (2, 4, 5, 6, 3) and (batch == 128).all()
    grey = to_uint8(torch.linspace(-1, 1, 10).reshape(1, 1, 2, 5))
    assert grey.shape == (1, 2, 5, 3) and (grey[..., 0] == grey[..., 2]).all()
    # channel order: channel c of the input is the last axis c of the output
    rgb = to_uint8(torch.tensor([-1.0, 0.0, 1.0]).reshape(3, 1, 1, 1))
    assert rgb.reshape(3).tolist() == [0, 128, 255]
    with pytest.raises(ValueError, match="channels"):
        to_uint8(np.zeros((2, 4, 5, 6)))
    with pytest.raises(ValueError, match="shape"):
        to_uint8(np.zeros((3, 5, 6)))


def test_mp4_round_trip(tmp_path):
    vid = smooth_video()
    path = write_video(tmp_path / "v.mp4", vid, fps=8)
    assert path == tmp_path / "v.mp4" and path.stat().st_size > 0
    back = read_video(path)
    assert back.shape == vid.shape and back.dtype == np.uint8
    assert np.abs(back.astype(int) - vid).mean() < 6.0  # H.264 + 4:2:0 are lossy, but close
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and s.codec_context.pix_fmt == "yuv420p"
        assert float(s.average_rate) == pytest.approx(8.0)
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]  # no temp files left


def test_mp4_odd_size_is_padded(tmp_path):
    vid = smooth_video(4, 17, 23)
    back = read_video(write_video(tmp_path / "odd.mp4", vid))
    assert back.shape == (4, 18, 24, 3)
    assert np.abs(back[:, :17, :23].astype(int) - vid).mean() < 8.0


def test_gif_round_trip_exact_and_loops(tmp_path):
    vid = palette_video()
    path = write_video(tmp_path / "v.gif", vid, fps=10)
    back = read_video(path)
    assert back.shape == vid.shape
    np.testing.assert_array_equal(back, vid)
    with Image.open(path) as im:
        assert im.n_frames == len(vid)
        assert im.info.get("loop") == 0  # forever
        assert im.info.get("duration") == 100


def test_gif_many_colours_is_close(tmp_path):
    vid = smooth_video(3, 24, 24)
    back = read_video(write_video(tmp_path / "many.gif", vid, fps=8))
    assert back.shape == vid.shape
    assert np.abs(back.astype(int) - vid).mean() < 8.0


def test_frame_grid_size_and_tiles(tmp_path):
    vids = np.stack([smooth_video(5, 8, 10), palette_video(5, 8, 10)])
    path = write_frame_grid(tmp_path / "grid.png", vids, max_frames=3)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (3 * 10, 2 * 8)
        grid = np.asarray(im.convert("RGB"))
    # columns are frames 0, 2, 4 (evenly spaced), rows are videos
    np.testing.assert_array_equal(grid[8:16, 10:20], vids[1, 2])
    np.testing.assert_array_equal(grid[0:8, 20:30], vids[0, 4])
    path = write_frame_grid(tmp_path / "one.png", vids[0], max_frames=8, pad=2)
    with Image.open(path) as im:
        assert im.size == (5 * 10 + 4 * 2, 8)


def test_read_equals_pyav_decode(tmp_path):
    for name, vid in [("a.mp4", smooth_video(5, 16, 16)), ("b.gif", palette_video())]:
        path = write_video(tmp_path / name, vid)
        with av.open(str(path)) as c:
            ref = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
        np.testing.assert_array_equal(read_video(path), ref)


def test_unwritable_path_errors(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    vid = palette_video()
    for target in [blocker / "v.mp4", blocker / "v.gif", tmp_path / "missing" / "v.mp4"]:
        with pytest.raises(OSError, match="cannot write") as info:
            write_video(target, vid)
        assert isinstance(info.value, VideoWriteError) and str(target) in str(info.value)
    with pytest.raises(VideoWriteError, match="grid.png"):
        write_frame_grid(blocker / "grid.png", vid[None])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_failed_write_keeps_old_file(tmp_path, monkeypatch):
    path = write_video(tmp_path / "v.gif", palette_video())
    before = path.read_bytes()

    def broken(tmp, frames, fps):
        with open(tmp, "wb") as f:
            f.write(b"partial")
        raise RuntimeError("encoder died")
    monkeypatch.setattr(video_io, "_write_gif", broken)
    with pytest.raises(RuntimeError, match="encoder died"):
        write_video(path, palette_video())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["v.gif"]


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="suffix"):
        write_video(tmp_path / "v.avi", palette_video())
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "v.mp4", palette_video().astype(np.float32))
    with pytest.raises(FileNotFoundError):
        read_video(tmp_path / "nothing.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    with pytest.raises(ValueError, match="junk.mp4"):
        read_video(tmp_path / "junk.mp4")
    assert os.listdir(tmp_path) == ["junk.mp4"]
