"""Synthetic captioned video dataset: determinism, geometry, resolution independence, speed."""

import pickle
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from sned.data import (COLORS, DIRECTIONS, SHAPES, SyntheticVideoDataset, caption_for, collate,
                       render, sample_prompts)
from sned.data.synthetic import PALETTE, SHAPE_AREA, shape_coverage


def _chroma(video: torch.Tensor) -> torch.Tensor:
    """(3, T, H, W) in [-1, 1] → (T, H, W) max-min channel spread in [0, 1]."""
    v = (video + 1) / 2
    return v.max(0).values - v.min(0).values


def _centroids(video: torch.Tensor) -> torch.Tensor:
    """(T, 2) chroma-weighted (x, y) centroid in pixels."""
    m = _chroma(video)
    t, h, w = m.shape
    xs, ys = torch.arange(w).float(), torch.arange(h).float()
    mass = m.flatten(1).sum(1)
    return torch.stack([(m.sum(1) * xs).sum(1) / mass, (m.sum(2) * ys).sum(1) / mass], 1)


def test_item_layout_and_range():
    ds = SyntheticVideoDataset(10, frames=6, resolution=24, seed=3)
    assert len(ds) == 10
    item = ds[4]
    assert set(item) == {"video", "caption", "attributes"}
    v = item["video"]
    assert v.shape == (3, 6, 24, 24) and v.dtype == torch.float32
    assert float(v.min()) >= -1.0 and float(v.max()) <= 1.0
    a = item["attributes"]
    assert a["color"] in COLORS and a["shape"] in SHAPES and a["direction"] in DIRECTIONS
    assert item["caption"] == caption_for(a)
    assert item["caption"].startswith(f"a {a['color']} {a['shape']} moving {a['direction']}")
    with pytest.raises(IndexError):
        ds[10]


def test_deterministic_from_seed_and_index():
    a = SyntheticVideoDataset(20, 8, 32, seed=7)
    b = SyntheticVideoDataset(20, 8, 32, seed=7)
    c = SyntheticVideoDataset(20, 8, 32, seed=8)
    assert torch.equal(a[5]["video"], b[5]["video"]) and a[5]["caption"] == b[5]["caption"]
    # order of access does not matter
    _ = [b[i] for i in range(19, -1, -1)]
    assert torch.equal(a[11]["video"], b[11]["video"])
    # different seed / index → different content
    assert not torch.equal(a[5]["video"], c[5]["video"])
    assert not torch.equal(a[5]["video"], a[6]["video"])
    assert len({a[i]["caption"] for i in range(20)}) > 10


def test_all_vocabulary_values_occur():
    ds = SyntheticVideoDataset(300, 4, 8, seed=0)
    attrs = [ds.attributes(i) for i in range(300)]
    assert {x["color"] for x in attrs} == set(COLORS)
    assert {x["shape"] for x in attrs} == set(SHAPES)
    assert {x["direction"] for x in attrs} == set(DIRECTIONS)
    assert {x["speed"] for x in attrs} == {"slow", "fast"}


def test_same_scene_at_any_resolution():
    hi = SyntheticVideoDataset(8, 8, 64, seed=2)
    lo = SyntheticVideoDataset(8, 8, 32, seed=2)
    for i in range(8):
        assert hi[i]["caption"] == lo[i]["caption"]
        down = F.avg_pool3d(hi[i]["video"].unsqueeze(0), (1, 2, 2))[0]
        # 2×2-averaged 64 px rendering ≈ native 32 px rendering (both are area averages)
        assert (down - lo[i]["video"]).abs().mean() < 0.02
    # non-square and odd sizes render too
    v = render(lo.attributes(0), 3, (20, 36))
    assert v.shape == (3, 3, 20, 36)


def test_object_colour_shape_area_and_antialiasing():
    obj = {"color": "magenta", "shape": "circle", "direction": "right", "speed": "slow",
           "size": 0.2, "start": (0.4, 0.5)}
    v = render({"objects": [obj], "background": "plain"}, 2, 64)
    # the centre pixel is exactly the palette colour
    rgb = (v[:, 0, 32, 25] + 1) / 2
    assert torch.allclose(rgb, torch.tensor(PALETTE["magenta"]), atol=1e-6)
    # the background is achromatic dark grey
    corner = (v[:, 0, 0, 63] + 1) / 2
    assert corner.max() - corner.min() < 1e-6 and corner.max() < 0.3
    # the covered area equals the analytic area; edges are partially covered (antialiased)
    cov = _chroma(v)[0]
    assert abs(float(cov.sum()) / 64**2 - SHAPE_AREA["circle"] * 0.2**2) < 0.002
    assert int(((cov > 0.05) & (cov < 0.95)).sum()) > 20


@pytest.mark.parametrize("shape", SHAPES)
def test_shape_coverage_area(shape):
    cov = shape_coverage(shape, torch.tensor([0.5, 0.97]), torch.tensor([0.5, 0.02]), 0.15,
                         48, 48)
    assert cov.shape == (2, 48, 48)
    expected = SHAPE_AREA[shape] * 0.15**2 * 48 * 48
    # wrapping around the border (second anchor) keeps the whole area visible
    assert torch.allclose(cov.sum((1, 2)), torch.tensor([expected, expected]), rtol=0.02)


def test_motion_follows_direction_and_speed():
    base = {"shape": "square", "size": 0.12, "start": (0.5, 0.5)}
    moves = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
    for direction, (sx, sy) in moves.items():
        for speed, per_frame in (("slow", 0.025), ("fast", 0.05)):
            obj = {**base, "color": "red", "direction": direction, "speed": speed}
            v = render({"objects": [obj]}, 5, 40)
            c = _centroids(v)
            step = (c[-1] - c[0]) / 4 / 40          # fraction of the frame per frame
            assert torch.allclose(step, torch.tensor([sx, sy]) * per_frame, atol=2e-3)


def test_objects_stay_in_frame_for_short_clips():
    ds = SyntheticVideoDataset(100, 8, 32, seed=4)
    for i in range(100):
        v, a = ds[i]["video"], ds[i]["attributes"]
        area = _chroma(v).flatten(1).sum(1)
        expected = SHAPE_AREA[a["shape"]] * a["objects"][0]["size"] ** 2 * 32 * 32
        # fully visible in every frame, never split by the border
        assert torch.allclose(area, torch.full_like(area, expected), rtol=0.08)  # 4x4 samples
        m = _chroma(v) > 0.01
        assert not (m[:, :, 0] & m[:, :, -1]).any() and not (m[:, 0, :] & m[:, -1, :]).any()


def test_two_objects_and_textured_background():
    ds = SyntheticVideoDataset(60, 8, 32, seed=1, max_objects=2, textured_background=True)
    items = [ds[i] for i in range(60)]
    counts = [len(x["attributes"]["objects"]) for x in items]
    assert set(counts) == {1, 2}
    two = next(x for x in items if len(x["attributes"]["objects"]) == 2)
    o1, o2 = two["attributes"]["objects"]
    assert o1["color"] != o2["color"]
    assert SHAPE_AREA[o1["shape"]] * o1["size"] ** 2 >= SHAPE_AREA[o2["shape"]] * o2["size"] ** 2
    assert " and " in two["caption"] and two["caption"] == caption_for(two["attributes"])
    # textured background: not constant, but achromatic (grey)
    plain = SyntheticVideoDataset(1, 2, 32, seed=1)[0]["video"]
    bg = items[0]["video"]
    assert plain[0, 0].std() < 0.5 and bg.std() > 0.0
    bg_pixels = _chroma(bg) < 1e-4
    assert bg_pixels.float().mean() > 0.5
    grey = ((bg + 1) / 2)[0][bg_pixels]
    assert grey.std() > 0.02 and float(grey.max()) < 0.35


def test_sample_prompts_deterministic_and_in_vocabulary():
    p = sample_prompts(50, seed=3)
    assert p == sample_prompts(50, seed=3) and p != sample_prompts(50, seed=4)
    assert len(p) == 50 and len(set(p)) > 20
    for caption in p:
        words = caption.split()
        assert words[0] == "a" and words[1] in COLORS and words[2] in SHAPES
        assert words[3] == "moving" and words[4] in DIRECTIONS


def test_collate_dataloader_and_pickle():
    ds = SyntheticVideoDataset(6, 4, 16, seed=0, max_objects=2)
    ds2 = pickle.loads(pickle.dumps(ds))
    assert torch.equal(ds2[3]["video"], ds[3]["video"])
    batch = next(iter(DataLoader(ds, batch_size=6, collate_fn=collate)))
    assert batch["video"].shape == (6, 3, 4, 16, 16)
    assert batch["caption"] == [ds[i]["caption"] for i in range(6)]
    assert isinstance(batch["attributes"][0], dict)


def test_rendering_is_fast():
    ds = SyntheticVideoDataset(64, 8, 32, seed=0)
    ds[0]
    t0 = time.perf_counter()
    videos = torch.stack([ds[i]["video"] for i in range(64)])
    elapsed = time.perf_counter() - t0
    assert videos.shape == (64, 3, 8, 32, 32)
    assert elapsed < 2.0, f"rendering 64 videos took {elapsed:.2f}s"


def test_invalid_arguments():
    with pytest.raises(ValueError, match="frames"):
        SyntheticVideoDataset(4, 0, 32)
    with pytest.raises(ValueError, match="max_objects"):
        SyntheticVideoDataset(4, 4, 32, max_objects=0)
    with pytest.raises(ValueError, match="shape"):
        shape_coverage("hexagon", torch.zeros(1), torch.zeros(1), 0.1, 8, 8)
    assert np.isfinite(render({"objects": []}, 1, 4).numpy()).all()


def test_motion_start_edge_enters_from_the_side_it_moves_away_from():
    """``motion_start=edge`` (issue 31): the same scenes (colour, shape, direction, speed,
    size; the other axis's start), but each object starts at the margin behind its motion —
    so the caption's direction also tells where the object is — and still moves as captioned."""
    from sned.config import ConfigError
    from sned.data.config import DataConfig
    from sned.data.synthetic import _MARGIN
    from sned.metrics.caption import detect_attributes_batch

    anywhere = SyntheticVideoDataset(48, 8, 32, seed=5)
    edge = SyntheticVideoDataset(48, 8, 32, seed=5, motion_start="edge")
    for i in range(48):
        a, e = anywhere.attributes(i)["objects"][0], edge.attributes(i)["objects"][0]
        assert {k: a[k] for k in a if k != "start"} == {k: e[k] for k in e if k != "start"}
        axis = 0 if a["direction"] in ("left", "right") else 1
        assert e["start"][1 - axis] == a["start"][1 - axis]  # across the motion: unchanged
        lo, hi = a["size"] + _MARGIN, 1.0 - a["size"] - _MARGIN
        assert e["start"][axis] == pytest.approx(lo if a["direction"] in ("right", "down")
                                                 else hi)
    found = detect_attributes_batch(torch.stack([edge[i]["video"] for i in range(48)]))
    assert [f["direction"] for f in found] == [edge.attributes(i)["direction"] for i in range(48)]
    with pytest.raises(ValueError, match="motion_start"):
        SyntheticVideoDataset(4, 8, 16, motion_start="middle")
    with pytest.raises(ConfigError, match="data.motion_start"):
        DataConfig(motion_start="middle")


def test_start_support_is_where_the_sampler_draws_starts():
    """:func:`start_support` (the prior the ideal-gain benchmark integrates over) holds every
    drawn start, the draws fill it (min/max near its ends), and the whole track stays in frame."""
    from sned.data.synthetic import DIRECTION_VECTORS, SPEED_VALUES, start_support

    data = SyntheticVideoDataset(600, 8, 16, seed=11)
    seen: dict = {}
    for i in range(600):
        o = data.attributes(i)["objects"][0]
        travel = SPEED_VALUES[o["speed"]] * 7
        for axis, v in enumerate(DIRECTION_VECTORS[o["direction"]]):
            lo, hi = start_support(o["size"], v * travel)
            s = o["start"][axis]
            assert lo - 1e-12 <= s <= hi + 1e-12
            end = s + v * travel
            assert o["size"] < min(s, end) and max(s, end) < 1 - o["size"]
            seen.setdefault((v, o["speed"]), []).append((s - lo) / (hi - lo))
    for fractions in seen.values():
        assert min(fractions) < 0.1 and max(fractions) > 0.9
    assert start_support(0.15, 0.35, edge=True) == pytest.approx((0.17, 0.17))
    assert start_support(0.15, -0.35, edge=True) == pytest.approx((0.83, 0.83))
    assert start_support(0.15, 0.0, edge=True) == pytest.approx((0.17, 0.83))
    assert start_support(0.4, 0.35) is None  # too long to fit: a uniform start that wraps
