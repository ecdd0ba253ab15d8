"""Caption accuracy detector: ≈100 % on rendered ground truth, ≈chance when captions lie."""

import numpy as np
import pytest
import torch

from sned.data import SyntheticVideoDataset, collate, render
from sned.metrics.caption import (caption_accuracy, detect_attributes, detect_attributes_batch,
                                  parse_caption)


def _batch(n, frames, res, seed, **kw):
    ds = SyntheticVideoDataset(n, frames, res, seed=seed, **kw)
    return collate([ds[i] for i in range(n)])


@pytest.fixture(scope="module")
def gt32():
    return _batch(120, 8, 32, seed=11)


@pytest.mark.parametrize("res", [32, 64])
def test_ground_truth_scores_near_perfect(res, gt32):
    b = gt32 if res == 32 else _batch(120, 8, 64, seed=12)
    acc = caption_accuracy(b["video"], b["caption"])
    assert acc["n"] == 120
    for key in ("color", "shape", "direction", "all_correct"):
        assert acc[key] >= 0.98, acc


def test_ground_truth_textured_two_objects_and_uint8():
    b = _batch(100, 8, 32, seed=13, max_objects=2, textured_background=True)
    acc = caption_accuracy(b["video"], b["caption"])
    assert acc["all_correct"] >= 0.95, acc
    # uint8 (N, T, H, W, 3) layout, as decoded or saved videos are, works the same
    u8 = ((b["video"] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    u8 = u8.permute(0, 2, 3, 4, 1).numpy()
    assert caption_accuracy(u8, b["caption"])["all_correct"] >= 0.95
    # a list of single videos is accepted too
    assert caption_accuracy(list(b["video"][:10]), b["caption"][:10])["n"] == 10


def test_robust_to_mild_pixel_noise(gt32):
    g = torch.Generator().manual_seed(0)
    noisy = (gt32["video"] + 0.1 * torch.randn(gt32["video"].shape, generator=g)).clamp(-1, 1)
    assert caption_accuracy(noisy, gt32["caption"])["all_correct"] >= 0.95


def test_shuffled_captions_score_near_chance(gt32):
    perm = np.random.default_rng(0).permutation(120)
    acc = caption_accuracy(gt32["video"], [gt32["caption"][i] for i in perm])
    # chance: colour 1/6, shape 1/3, direction 1/4, all three 1/72
    assert acc["color"] < 0.32 and acc["shape"] < 0.5 and acc["direction"] < 0.42, acc
    assert acc["all_correct"] < 0.08, acc


def test_noise_videos_score_near_chance(gt32):
    g = torch.Generator().manual_seed(1)
    noise = torch.rand(120, 3, 8, 32, 32, generator=g) * 2 - 1
    acc = caption_accuracy(noise, gt32["caption"])
    assert acc["color"] < 0.32 and acc["shape"] < 0.5 and acc["direction"] < 0.42, acc
    assert acc["all_correct"] < 0.08, acc


def test_blank_and_static_videos_are_wrong():
    assert detect_attributes(torch.zeros(3, 4, 16, 16)) == {
        "color": None, "shape": None, "direction": None, "area": 0.0}
    obj = {"color": "cyan", "shape": "triangle", "direction": "up", "speed": "fast",
           "size": 0.2, "start": (0.5, 0.5)}
    v = render({"objects": [obj]}, 6, 32)
    static = v[:, :1].expand(-1, 6, -1, -1)
    got = detect_attributes(static)
    assert got["color"] == "cyan" and got["shape"] == "triangle" and got["direction"] is None
    acc = caption_accuracy(static.unsqueeze(0), ["a cyan triangle moving up quickly"])
    assert acc == {"color": 1.0, "shape": 1.0, "direction": 0.0, "all_correct": 0.0, "n": 1}


@pytest.mark.parametrize("shape", ["circle", "square", "triangle"])
@pytest.mark.parametrize("direction", ["left", "right", "up", "down"])
def test_each_shape_and_direction_including_wraparound(shape, direction):
    # starts next to the border and moves through it: the object wraps around
    obj = {"color": "yellow", "shape": shape, "direction": direction, "speed": "fast",
           "size": 0.13, "start": (0.9, 0.1)}
    got = detect_attributes(render({"objects": [obj]}, 12, 24))
    assert (got["color"], got["shape"], got["direction"]) == ("yellow", shape, direction)
    assert got["area"] > 0.02


def test_detects_the_largest_object():
    big = {"color": "blue", "shape": "square", "direction": "down", "speed": "slow",
           "size": 0.18, "start": (0.3, 0.3)}
    small = {"color": "red", "shape": "circle", "direction": "left", "speed": "fast",
             "size": 0.08, "start": (0.7, 0.7)}
    got = detect_attributes(render({"objects": [small, big]}, 8, 48))
    assert (got["color"], got["shape"], got["direction"]) == ("blue", "square", "down")


def test_batched_detection_matches_single_videos(gt32):
    g = torch.Generator().manual_seed(2)
    mixed = [gt32["video"][0], gt32["video"][1], torch.rand(3, 8, 32, 32, generator=g) * 2 - 1,
             torch.zeros(3, 8, 32, 32), SyntheticVideoDataset(1, 5, 20, seed=9)[0]["video"],
             gt32["video"][2]]
    batched = detect_attributes_batch(mixed, chunk=2)
    singles = [detect_attributes(v) for v in mixed]
    for got, ref in zip(batched, singles):
        assert got["area"] == pytest.approx(ref["area"], abs=1e-6)
        assert {**got, "area": 0} == {**ref, "area": 0}
    assert batched[3]["color"] is None and batched[4]["color"] is not None


def test_parse_caption():
    assert parse_caption("a red circle moving left slowly") == {
        "color": "red", "shape": "circle", "direction": "left"}
    assert parse_caption("A Blue Square moving up and a green triangle moving down") == {
        "color": "blue", "shape": "square", "direction": "up"}
    assert parse_caption("a cat and a red circle") == {
        "color": None, "shape": None, "direction": None}
    assert parse_caption("") == {"color": None, "shape": None, "direction": None}


def test_input_validation():
    with pytest.raises(ValueError, match="captions"):
        caption_accuracy(torch.zeros(2, 3, 2, 8, 8), ["a"])
    with pytest.raises(ValueError, match=r"\(3, T, H, W\)"):
        detect_attributes(torch.zeros(2, 8, 8, 3))
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        detect_attributes(np.zeros((3, 2, 8, 8), np.uint8))
