"""VideoFolderDataset on real (tiny) video files and frame folders written by the test."""

import json
import pickle
import shutil
import warnings
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from sned.data import (CaptionFileError, NoVideosError, SkippedVideoWarning, VideoFolderDataset,
                       collate, resize_center_crop)
from sned.data.folder import _decode_clip, _Video


def level(k: int) -> int:
    """Grey level of frame k: frames are identifiable after lossy coding and resizing."""
    return 8 + 3 * k


def write_video(path: Path, n: int, codec: str = "libx264", size=(40, 48),
                options: dict | None = None, gop: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = size
    with av.open(str(path), "w", options=options or {}) as container:
        stream = container.add_stream(codec, rate=8)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.bit_rate = 5_000_000  # near-lossless, so grey levels survive (mpeg4)
        if gop:
            stream.codec_context.gop_size = gop
        for k in range(n):
            img = np.full((h, w, 3), level(k), np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_frames(folder: Path, n: int, ext: str, size=(36, 30)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):  # unpadded numbers: needs natural sorting (frame_2 < frame_10)
        Image.fromarray(np.full((*size, 3), level(k), np.uint8)).save(folder / f"frame_{k}{ext}")
    return folder


def levels_of(video: torch.Tensor) -> list[int]:
    """(3, T, H, W) in [-1, 1] → the frame indices encoded in the grey levels."""
    means = ((video + 1) * 127.5).mean(dim=(0, 2, 3))
    return [round((float(m) - 8) / 3) for m in means]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    r = tmp_path_factory.mktemp("videos")
    write_video(r / "a.mp4", 20)
    write_video(r / "sub" / "b.avi", 16, codec="mpeg4")
    write_video(r / "c.mkv", 12, codec="mpeg4")               # no frame count in the header
    write_video(r / "long.mp4", 80, gop=10)
    write_frames(r / "frames" / "skyA", 14, ".png")
    write_frames(r / "nested" / "skyB" / "clip1", 12, ".jpg")  # Sky-Timelapse nesting
    write_video(r / "short.mp4", 3)                            # too short
    (r / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    data = write_video(r / "tmp_full.mp4", 12).read_bytes()    # moov at the end: unreadable
    (r / "trunc.mp4").write_bytes(data[: len(data) // 2])
    (r / "tmp_full.mp4").unlink()
    fast = write_video(r / "tmp_fast.mp4", 12, options={"movflags": "faststart"}).read_bytes()
    (r / "trunc_fast.mp4").write_bytes(fast[: len(fast) // 2])  # header ok, frames missing
    (r / "tmp_fast.mp4").unlink()
    (r / "notes.txt").write_text("not a video")
    return r


USABLE = {"a.mp4", "sub/b.avi", "c.mkv", "long.mp4", "frames/skyA", "nested/skyB/clip1",
          "trunc_fast.mp4"}
SKIPPED = {"short.mp4", "corrupt.mp4", "trunc.mp4"}


def make(root, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = VideoFolderDataset(root, **{"frames": 4, "resolution": 16, "stride": 2, **kw})
    return ds, caught


def test_discovery_and_skipping_with_one_warning_each(root):
    ds, caught = make(root)
    assert {v.rel for v in ds.videos} == USABLE
    assert {Path(p).relative_to(root).as_posix() for p, _ in ds.skipped} == SKIPPED
    skip_warnings = [w for w in caught if issubclass(w.category, SkippedVideoWarning)]
    assert len(skip_warnings) == len(SKIPPED)
    messages = " ".join(str(w.message) for w in skip_warnings)
    for name in SKIPPED:
        assert str(root / name) in messages
    reasons = dict((Path(p).name, r) for p, r in ds.skipped)
    assert "too short (3 frames < 7" in reasons["short.mp4"]
    assert "unreadable" in reasons["corrupt.mp4"] and "unreadable" in reasons["trunc.mp4"]
    counts = {v.rel: v.num_frames for v in ds.videos}
    assert counts["a.mp4"] == 20 and counts["c.mkv"] == 12 and counts["frames/skyA"] == 14


def test_clip_shape_range_stride_and_order(root):
    ds, _ = make(root, resolution=24)
    for i, v in enumerate(ds.videos):
        if v.rel == "trunc_fast.mp4":
            continue
        item = ds[i]
        assert item["video"].shape == (3, 4, 24, 24) and item["video"].dtype == torch.float32
        assert float(item["video"].min()) >= -1 and float(item["video"].max()) <= 1
        assert item["caption"] == "" and item["path"] == str(root / v.rel)
        idx = levels_of(item["video"])
        assert np.diff(idx).tolist() == [2, 2, 2], (v.rel, idx)       # stride 2, in order
        assert 0 <= idx[0] and idx[-1] < v.num_frames


def test_determinism_epochs_and_seeds(root):
    ds, _ = make(root)
    long_i = next(i for i, v in enumerate(ds.videos) if v.rel == "long.mp4")
    first = ds[long_i]["video"]
    assert torch.equal(first, make(root)[0][long_i]["video"])
    starts = set()
    for epoch in range(12):
        ds.set_epoch(epoch)
        idx = levels_of(ds[long_i]["video"])
        assert np.diff(idx).tolist() == [2, 2, 2]   # also covers the seeking path (start ≥ 48)
        starts.add(idx[0])
    assert len(starts) > 5 and max(starts) >= 48
    # another seed draws other clips (same epoch)
    ds.set_epoch(0)
    other, _ = make(root, seed=1)
    good = [i for i, v in enumerate(ds.videos) if v.rel != "trunc_fast.mp4"]
    assert any(levels_of(other[i]["video"]) != levels_of(ds[i]["video"]) for i in good)


def test_seek_matches_sequential_decoding(root):
    path = str(root / "long.mp4")
    seq = _decode_clip(path, [57, 60, 63], seek=False)
    sought = _decode_clip(path, [57, 60, 63], seek=True)
    assert seq.shape == (3, 40, 48, 3)
    np.testing.assert_array_equal(seq, sought)
    assert [round((float(f.mean()) - 8) / 3) for f in seq] == [57, 60, 63]


def test_lazily_found_damage_is_skipped_once(root):
    ds, _ = make(root)
    bad = next(i for i, v in enumerate(ds.videos) if v.rel == "trunc_fast.mp4")
    n_skipped = len(ds.skipped)
    with pytest.warns(SkippedVideoWarning, match="trunc_fast.mp4"):
        item = ds[bad]
    assert item["path"] != str(root / "trunc_fast.mp4")     # another video is returned
    assert item["video"].shape == (3, 4, 16, 16)
    assert len(ds.skipped) == n_skipped + 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds[bad]                                             # no second warning, no retry
    assert len(ds.skipped) == n_skipped + 1


def test_overestimated_frame_count_falls_back_to_last_clip(root):
    ds, _ = make(root)
    i = next(i for i, v in enumerate(ds.videos) if v.rel == "c.mkv")
    ds.videos[i] = _Video("c.mkv", 40)   # as if the header estimate were far too high
    ds.set_epoch(3)
    idx = levels_of(ds[i]["video"])
    assert np.diff(idx).tolist() == [2, 2, 2] and idx[-1] <= 11
    assert not any("c.mkv" in p for p, _ in ds.skipped)


def test_captions_csv_name_stem_relpath_and_multiple(root, tmp_path):
    csv_path = tmp_path / "caps.csv"
    csv_path.write_text('video,caption\na.mp4,"a grey, flat video"\nsub/b,bee\nskyA,sky one\n'
                        "clip1,sky two\nclip1,sky two again\ncorrupt.mp4,ignored\n")
    ds, caught = make(root, captions=csv_path)
    by_rel = {v.rel: ds.captions[i] for i, v in enumerate(ds.videos)}
    assert by_rel["a.mp4"] == ("a grey, flat video",)
    assert by_rel["sub/b.avi"] == ("bee",) and by_rel["frames/skyA"] == ("sky one",)
    assert by_rel["nested/skyB/clip1"] == ("sky two", "sky two again")
    assert by_rel["long.mp4"] == ()
    assert any("have no caption" in str(w.message) for w in caught)
    a = next(i for i, v in enumerate(ds.videos) if v.rel == "a.mp4")
    assert ds[a]["caption"] == "a grey, flat video"
    c = next(i for i, v in enumerate(ds.videos) if v.rel == "nested/skyB/clip1")
    seen = set()
    for epoch in range(10):
        ds.set_epoch(epoch)
        seen.add(ds[c]["caption"])
    assert seen == {"sky two", "sky two again"}


def test_captions_jsonl_and_mapping(root, tmp_path):
    jl = tmp_path / "caps.jsonl"
    jl.write_text(json.dumps({"video": "long", "caption": "long one"}) + "\n\n"
                  + json.dumps({"video": "./sub/b.avi", "caption": "bee"}) + "\n")
    ds, _ = make(root, captions=jl)
    by_rel = {v.rel: ds.captions[i] for i, v in enumerate(ds.videos)}
    assert by_rel["long.mp4"] == ("long one",) and by_rel["sub/b.avi"] == ("bee",)
    ds2, _ = make(root, captions={"a": "from a mapping"})
    assert {v.rel: ds2.captions[i] for i, v in enumerate(ds2.videos)}["a.mp4"] == (
        "from a mapping",)


def test_caption_file_errors(root, tmp_path):
    bad_row = tmp_path / "bad_row.csv"
    bad_row.write_text("video,caption\na.mp4,ok\nmissing_video.mp4,nope\n")
    with pytest.raises(CaptionFileError, match=r"line 3.*'missing_video.mp4' matches no video"):
        make(root, captions=bad_row)
    no_cols = tmp_path / "cols.csv"
    no_cols.write_text("file,text\na.mp4,x\n")
    with pytest.raises(CaptionFileError, match=r"cols.csv.*'video' and 'caption'.*\['file'"):
        make(root, captions=no_cols)
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"video": "a.mp4", "caption": "x"}\n{"video": oops}\n')
    with pytest.raises(CaptionFileError, match=r"bad.jsonl, line 2: invalid JSON"):
        make(root, captions=bad_json)
    wrong_type = tmp_path / "wrong.jsonl"
    wrong_type.write_text('{"video": "a.mp4"}\n')
    with pytest.raises(CaptionFileError, match=r"line 1: expected an object"):
        make(root, captions=wrong_type)
    with pytest.raises(CaptionFileError, match="unsupported format"):
        (tmp_path / "caps.txt").write_text("a.mp4 hello")
        make(root, captions=tmp_path / "caps.txt")
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        make(root, captions=tmp_path / "nope.csv")
    assert issubclass(CaptionFileError, ValueError)


def test_ambiguous_caption_key(root, tmp_path):
    r = tmp_path / "dups"
    (r / "x").mkdir(parents=True)
    (r / "y").mkdir()
    shutil.copy(root / "a.mp4", r / "x" / "a.mp4")
    shutil.copy(root / "a.mp4", r / "y" / "a.mp4")
    with pytest.raises(CaptionFileError, match="ambiguous"):
        make(r, captions={"a.mp4": "which?"})
    ds, _ = make(r, captions={"x/a.mp4": "this one"})
    assert ds.captions == [("this one",), ()]


def test_root_errors(tmp_path, root):
    with pytest.raises(FileNotFoundError, match="does_not_exist"):
        VideoFolderDataset(tmp_path / "does_not_exist", 4, 16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(NoVideosError, match="empty"):
        VideoFolderDataset(tmp_path / "empty", 4, 16)
    junk = tmp_path / "junk"
    junk.mkdir()
    shutil.copy(root / "corrupt.mp4", junk / "x.mp4")
    shutil.copy(root / "short.mp4", junk / "y.mp4")
    with pytest.warns(SkippedVideoWarning), pytest.raises(NoVideosError, match="no usable"):
        VideoFolderDataset(junk, 4, 16)
    assert issubclass(NoVideosError, ValueError)


def test_picklable_and_dataloader_workers(root):
    ds, _ = make(root)
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[0]["video"], ds[0]["video"])
    good = [i for i, v in enumerate(ds.videos) if v.rel != "trunc_fast.mp4"]
    subset = torch.utils.data.Subset(ds, good)
    loader = DataLoader(subset, batch_size=3, num_workers=2, collate_fn=collate)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batches = list(loader)
    videos = torch.cat([b["video"] for b in batches])
    assert videos.shape == (len(good), 3, 4, 16, 16)
    assert torch.equal(videos[0], ds[good[0]]["video"])
    assert sum(len(b["path"]) for b in batches) == len(good)


def test_resize_center_crop_keeps_the_centre():
    img = torch.zeros(1, 3, 40, 80)
    img[..., 20:60] = 1.0                       # bright centre square, dark sides
    out = resize_center_crop(img, 20)
    assert out.shape == (1, 3, 20, 20)
    # only the centre survives the crop (the outermost columns see a little of the dark
    # sides through the antialiasing filter)
    assert float(out[..., 1:-1].min()) > 0.99 and float(out.min()) > 0.8
    tall = resize_center_crop(torch.rand(2, 3, 50, 30), 12)
    assert tall.shape == (2, 3, 12, 12)
