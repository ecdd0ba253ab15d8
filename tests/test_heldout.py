"""Held-out real data: the folder hash split, the source record, --data overrides, the FVD
real-statistics cache key (defect: --runs K reused run 0's statistics) and skipped-file counts
across DataLoader workers."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from torch import nn

import i3d_reference_clips as natural
from sned.config import ConfigError
from sned.data import SkipTally, VideoFolderDataset, collate, split_of
from sned.data.heldout import held_out_set, heldout_seed, resolve_data, with_overrides
from sned.metrics.fvd import real_set_stats
from sned.data.config import DataConfig
from sned.train.config import load_run_config
from sned.train.data import build_dataset, make_loader


def write_mp4(path: Path, frames: np.ndarray, rate: int = 8, options=None) -> Path:
    """uint8 (T, H, W, 3) → an H.264 mp4 (PyAV)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", options=options or {}) as c:
        s = c.add_stream("libx264", rate=rate)
        s.height, s.width = frames.shape[1:3]
        s.pix_fmt = "yuv420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), "rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def natural_folder(root: Path, n: int, frames: int = 12, size: int = 32) -> Path:
    """n tiny mp4s of natural-looking moving content (terrain pans / a ball over the sky)."""
    for i in range(n):
        kind = natural.CLIPS[i % 2][0]
        write_mp4(root / f"clip_{i:02d}.mp4", natural.make_clip(kind, frames, size, size, 100 + i))
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return natural_folder(tmp_path_factory.mktemp("natural"), 10)


def test_split_is_a_stable_hash_of_the_relative_path():
    rels = [f"dir{i % 3}/video_{i}.mp4" for i in range(2000)]
    val = {r for r in rels if split_of(r, 0.2) == "val"}
    assert 0.17 < len(val) / len(rels) < 0.23
    more = rels + [f"new/extra_{i}.mp4" for i in range(500)]  # adding files reshuffles nothing
    assert {r for r in more[:2000] if split_of(r, 0.2) == "val"} == val
    assert {r for r in rels if split_of(r, 0.3) == "val"} >= val  # a larger fraction only adds
    assert all(split_of(r, 0.0) == "train" for r in rels)


def test_folder_train_and_val_splits_partition_the_folder(folder):
    kw = dict(frames=4, resolution=16, val_fraction=0.3)
    train = VideoFolderDataset(folder, split="train", **kw)
    val = VideoFolderDataset(folder, split="val", **kw)
    every = VideoFolderDataset(folder, frames=4, resolution=16)
    t, v = {x.rel for x in train.videos}, {x.rel for x in val.videos}
    assert t and v and not t & v and t | v == {x.rel for x in every.videos}
    assert v == {r for r in t | v if split_of(r, 0.3) == "val"}
    # the trainer's dataset is the train split
    run = load_run_config("tiny-base", ["model.frames=4", "data.kind=folder",
                                        f"data.root={folder}", "data.val_fraction=0.3"])
    assert {x.rel for x in build_dataset(run.data, run.model).videos} == t
    with pytest.raises(ValueError, match="val_fraction"):
        VideoFolderDataset(folder, frames=4, resolution=16, split="val")
    with pytest.raises(ConfigError, match="val_fraction"):
        DataConfig(val_fraction=1.0)


def test_held_out_folder_set_and_its_record(folder, tmp_path):
    caps = tmp_path / "captions.csv"
    caps.write_text("video,caption\n" + "".join(f"clip_{i:02d},scene {i}\nclip_{i:02d},view {i}\n"
                                                 for i in range(10)))
    data = DataConfig(kind="folder", root=str(folder), val_fraction=0.3, captions=str(caps))
    held = held_out_set(data, n=5, frames=4, resolution=16)
    s = held.source
    assert (s["kind"], s["root"], s["split"], s["n"]) == ("folder", str(folder.resolve()),
                                                         "val", 5)
    assert s["videos"] == len(VideoFolderDataset(folder, 4, 16, split="val", val_fraction=0.3))
    json.dumps(s)  # JSON-able
    videos, captions = held.tensor()
    assert videos.shape == (5, 3, 4, 16, 16) and len(captions) == 5
    assert held.captions() == list(captions) and all(c.split()[0] in ("scene", "view")
                                                     for c in captions)
    assert videos.min() >= -1 and videos.max() <= 1 and videos.std() > 0.05
    # another draw: other clip starts of the same held-out videos, and another cache key
    other = held_out_set(data, n=5, frames=4, resolution=16, seed=1)
    assert other.source["seed"] != s["seed"] and other.source["files_sha256"] == s["files_sha256"]
    assert "held-out videos of folder" in held.describe()


def test_held_out_synthetic_uses_training_options_and_disjoint_seeds():
    data = DataConfig(max_objects=2, textured_background=True, seed=3)
    held = held_out_set(data, n=3, frames=2, resolution=16)
    assert held.source["seed"] == heldout_seed(data) != data.seed
    assert held.source["max_objects"] == 2 and held.source["textured_background"]
    a, captions = held.tensor()
    assert held.captions() == list(captions)
    b, _ = held_out_set(data, n=3, frames=2, resolution=16, seed=1).tensor()
    assert a.shape == (3, 3, 2, 16, 16) and not torch.equal(a, b)


def test_data_overrides_and_errors(folder, tmp_path):
    data = with_overrides(DataConfig(), [f"root={folder}", "data.kind=folder",
                                         "val_fraction=0.5"])
    assert (data.kind, data.root, data.val_fraction) == ("folder", str(folder), 0.5)
    with pytest.raises(ConfigError, match="unknown key 'rot'"):
        with_overrides(DataConfig(), ["rot=/x"])
    with pytest.raises(ConfigError, match="val_fraction"):
        with_overrides(DataConfig(), ["val_fraction=2"])
    with pytest.raises(ValueError, match="no held-out split"):
        held_out_set(DataConfig(kind="folder", root=str(folder), val_fraction=0.0), 2, 4, 16)
    assert resolve_data(None, ["num_videos=5"]).num_videos == 5


class _MeanDetector(nn.Module):
    """A cheap stand-in for I3D: per-video channel means and stds (d = 6)."""

    min_frames = 2

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        x = v.float().flatten(1, 3)
        return torch.cat([x.mean(1), x.std(1)], 1)


def test_fvd_real_stats_differ_per_run_and_per_data_option(tmp_path, folder):
    # Defect: `sned evaluate --runs K` keyed the real statistics by "synthetic" + res/frames/n,
    # so runs 1..K-1 reused run 0's real set, whatever the per-run seed or data options.
    det, cache = _MeanDetector(), tmp_path / "cache"
    base = DataConfig()
    r0 = real_set_stats(held_out_set(base, 4, 2, 16, seed=0), cache, det)
    r1 = real_set_stats(held_out_set(base, 4, 2, 16, seed=1), cache, det)
    assert not np.allclose(r0.mean, r1.mean)
    opt = real_set_stats(held_out_set(DataConfig(max_objects=3), 4, 2, 16), cache, det)
    assert not np.allclose(r0.mean, opt.mean)
    fold = real_set_stats(held_out_set(DataConfig(kind="folder", root=str(folder),
                                                  val_fraction=0.3), 4, 2, 16), cache, det)
    assert len(list(cache.glob("*.npz"))) == 4
    assert fold.meta["source"]["kind"] == "folder"
    again = real_set_stats(held_out_set(base, 4, 2, 16, seed=1), cache, det)  # cache hit
    assert np.array_equal(again.mean, r1.mean) and len(list(cache.glob("*.npz"))) == 4


def test_skipped_files_found_inside_workers_are_counted(tmp_path):
    root = natural_folder(tmp_path / "v", 4, frames=10, size=16)
    data = write_mp4(root / "clip_03.mp4", natural.make_clip("ball_sky", 10, 16, 16, 7),
                     options={"movflags": "faststart"}).read_bytes()
    (root / "clip_03.mp4").write_bytes(data[: data.index(b"mdat") + 16])  # header ok, no frames
    (root / "broken.mp4").write_bytes(b"\0" * 64)                             # unreadable
    cfg = DataConfig(kind="folder", root=str(root), num_workers=2, val_fraction=0.0)
    run = load_run_config("tiny-base", ["model.frames=4"])
    with pytest.warns(UserWarning):
        ds = build_dataset(cfg, run.model)
    assert len(ds) == 4 and len(ds.skipped) == 1  # probe time: broken.mp4 only
    tally = SkipTally(ds)
    loader = make_loader(ds, cfg, batch=4, seed=0, start=0)
    for step, batch in zip(range(3), loader):
        tally.add(batch)
    assert ds.skipped == ds.skipped[:1]  # the main process's copy never saw the bad decode
    assert len(tally) == 2 and any("clip_03" in p for p in tally.paths)
    assert tally.record()["count"] == 2
    # items carry what was skipped while producing them
    with pytest.warns(UserWarning, match="failed to decode"):
        items = [ds[i] for i in range(4)]
    assert sum(len(it["skipped"]) for it in items) == 1
    assert collate(items)["skipped"] == [it["skipped"] for it in items]
