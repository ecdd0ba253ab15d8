"""The temporal coherence metric (sned.metrics.coherence) on rendered clips: a straight track at
the prompted speed is coherent, the same frames scrambled are not, a vanishing object is seen."""

from __future__ import annotations

import math

import pytest
import torch

from sned.data.synthetic import SPEED_VALUES, SyntheticVideoDataset, render
from sned.metrics.coherence import caption_speed, coherence_summary, track_coherence


def _clips(n: int, res: int, seed: int = 3):
    ds = SyntheticVideoDataset(n, 8, res, seed=seed)
    return torch.stack([ds[i]["video"] for i in range(n)]), [ds[i]["caption"] for i in range(n)]


@pytest.mark.parametrize("res", [16, 32])
def test_straight_tracks_are_coherent_and_scrambled_ones_are_not(res):
    videos, captions = _clips(24, res)
    good = coherence_summary(videos, captions)
    assert good["coherent"] == 1.0 and good["present_all"] == 1.0
    assert good["jump_ratio"] == pytest.approx(1.0, abs=0.03)    # jumps = the prompted speed
    assert good["residual"] < 0.1 / res                            # a tenth of a pixel
    g = torch.Generator().manual_seed(0)
    scrambled = torch.stack([v[:, torch.randperm(8, generator=g)] for v in videos])
    bad = coherence_summary(scrambled, captions)
    assert bad["coherent"] <= 0.1 and bad["coherent_ci"][1] < good["coherent_ci"][0]
    assert bad["jump_ratio"] > 2.0 and bad["residual"] > 10 * good["residual"]


def test_jumps_are_measured_in_frame_units_with_wrapping():
    obj = {"color": "red", "shape": "circle", "direction": "left", "speed": "fast",
           "size": 0.15, "start": (0.1, 0.5)}                   # crosses the left border
    video = render({"objects": [obj]}, 8, 32)
    (clip,) = track_coherence(video[None], ["a red circle moving left quickly"])
    assert clip["mean_jump"] == pytest.approx(SPEED_VALUES["fast"], rel=0.05)
    assert clip["residual"] < 0.005 and clip["coherent"]
    assert caption_speed("a red circle moving left slowly and a blue square") == 0.025
    assert caption_speed("a red circle") is None


def test_missing_frames_and_jumps_break_coherence():
    videos, captions = _clips(2, 16)
    gone = videos.clone()
    gone[0, :, 3] = -0.8                                            # frame 3: background only
    gone[1, :, 4:] = videos[1, :, :4]                               # the track jumps back
    a, b = track_coherence(gone, captions)
    assert a["present"] == 7 and a["presence"] == pytest.approx(7 / 8) and not a["coherent"]
    assert b["present"] == 8 and not b["coherent"] and b["max_jump"] > b["jump_limit"]
    empty = track_coherence(torch.full((1, 3, 8, 16, 16), -0.8))[0]
    assert empty["present"] == 0 and math.isnan(empty["mean_jump"]) and not empty["coherent"]
    with pytest.raises(ValueError, match="2 videos but 1 captions"):
        track_coherence(videos, captions[:1])
