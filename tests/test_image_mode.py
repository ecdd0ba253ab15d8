"""Image diffusion (T = 1, no temporal layers): train, sample to PNG, and DiffNAS end to end."""

import json

import pytest

import sned
from sned.cli import main

SMALL = ["model.model_channels=16", "model.heads=[1,2,2]", "model.time_embed_dim=32",
         "model.resolutions=[16]", "train.batch_size=2", "data.num_videos=8",
         "train.checkpoint_every=2"]


def test_tiny_image_config_has_one_frame_and_no_temporal_layers():
    space = sned.search_space("tiny-image")
    assert space.config.frames == 1
    assert all("temporal_attn" not in s.components for s in space.specs)


@pytest.mark.slow
def test_image_mode_train_sample_png_and_diffnas(tmp_path):
    run, teacher = tmp_path / "run", tmp_path / "teacher"
    assert main(["train", "tiny-image", "--out", str(run), "--steps", "2", "--no-progress",
                 *SMALL]) == 0
    assert main(["extract", str(run), "--preset", "B", "--out", str(teacher)]) == 0
    assert main(["sample", str(teacher), "--prompt", "a red circle", "--steps", "2",
                 "--formats", "png", "--out", str(tmp_path / "png")]) == 0
    pngs = list((tmp_path / "png").glob("*.png"))
    assert pngs and pngs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = tmp_path / "dn"
    assert main(["diffnas", str(teacher), "--out", str(out), "--supernet-steps", "2",
                 "--retrain-steps", "2", "--budget", "3", "--heldout", "2", "--batch-size",
                 "2", "--device", "cpu", "--data", "num_videos=8"]) == 0
    doc = json.loads((out / "search.json").read_text())
    assert doc["subnet"]["macs"] <= doc["teacher"]["macs"]
    assert main(["sample", str(out / "model"), "--prompt", "a blue square", "--steps", "2",
                 "--formats", "png", "--out", str(tmp_path / "png2")]) == 0
    assert list((tmp_path / "png2").glob("*.png"))
