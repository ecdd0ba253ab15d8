"""Training the latent path through the one Trainer: the AE, then a latent supernet on it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sned.config import ConfigError
from sned.models.codec import codec_for, load_autoencoder
from sned.train.config import load_run_config
from sned.train.trainer import Trainer

torch.set_num_threads(1)

AE_RUN = ["train.batch_size=2", "train.ema_decay=0", "train.lr=1e-3", "train.lr_warmup_steps=0",
          "data.num_videos=8", "model.resolutions=[8, 16]", "model.frames=4",
          "train.checkpoint_every=6"]


@pytest.fixture(scope="module")
def ae_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ae")
    run = load_run_config("tiny-ae", AE_RUN + ["train.steps=12"])
    trainer = Trainer(run, out, progress=False).fit()
    return out, trainer


def _rows(path):
    return [json.loads(r) for r in path.read_text().splitlines() if r.strip()]


def test_tiny_ae_trains_at_two_resolutions_with_falling_loss(ae_run):
    out, trainer = ae_run
    rows = _rows(out / "metrics.jsonl")
    assert len(rows) == 12
    by_res = {}
    for r in rows:
        by_res.setdefault(r["resolution"], []).append(r["loss"])
        assert r["params"] == trainer.task.full_params and "rec" in r and "kl" in r
    assert set(by_res) == {8, 16}
    for losses in by_res.values():  # falls at each resolution
        assert np.mean(losses[-2:]) < np.mean(losses[:2])
    evals = _rows(out / "eval.jsonl")  # PSNR / SSIM per resolution at every checkpoint
    assert [e["step"] for e in evals] == [6, 12]
    for e in evals:
        assert set(e) == {"step", "8", "16"}
        assert all(0 < e[r]["psnr"] < 60 and -1 <= e[r]["ssim"] <= 1 for r in ("8", "16"))
    ae, stats = load_autoencoder(out)
    assert stats is None and ae.parts == ("encoder", "decoder")
    torch.testing.assert_close(ae.state_dict()["decoder.conv_out.conv.weight"],
                               trainer.model.ae.decoder.conv_out.conv.weight.detach())


def test_tiny_latent_supernet_trains_through_the_ae(ae_run, tmp_path):
    ae_out, _ = ae_run
    run = load_run_config("tiny-latent", ["train.batch_size=2", "train.ema_decay=0",
                                          "data.num_videos=8", "train.steps=3",
                                          f"autoencoder={ae_out}"])
    assert run.diffusion.loss == "l1" and run.diffusion.prediction_type == "epsilon"
    trainer = Trainer(run, tmp_path, progress=False)
    clip = trainer.task.dataset()[0]["video"]
    assert clip.shape == (3, 8, 32, 32)  # pixel clips: latent 4 frames × 2, side 8 × 4
    trainer.fit()
    rows = _rows(tmp_path / "metrics.jsonl")
    assert len(rows) == 3 and all(np.isfinite(r["loss"]) for r in rows)
    state = json.loads((tmp_path / "checkpoints" / "latest" / "state.json").read_text())
    codec = codec_for(tmp_path)
    assert state["latent"]["scale"] == codec.stats.scale and codec.stats.scale > 0
    # the stats normalise the training latents: ~zero mean, unit std
    z = codec.encode(torch.stack([trainer.task.dataset()[i]["video"] for i in range(8)]))
    assert abs(z.mean().item()) < 0.2 and abs(z.std().item() - 1) < 0.2


def test_latent_run_needs_an_autoencoder(tmp_path):
    run = load_run_config("tiny-latent", ["train.steps=1"])
    with pytest.raises(ConfigError, match="autoencoder=PATH"):
        Trainer(run, tmp_path / "x", progress=False)
    run = load_run_config("tiny-latent", [f"autoencoder={tmp_path / 'missing'}"])
    with pytest.raises(Exception, match="missing"):
        Trainer(run, tmp_path / "y", progress=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


# --------------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def latent_run(ae_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("latent") / "L"
    run = load_run_config("tiny-latent", ["train.batch_size=2", "train.ema_decay=0",
                                          "data.num_videos=8", "train.steps=2",
                                          f"autoencoder={ae_run[0]}"])
    Trainer(run, out, progress=False).fit()
    return out


def _cli(*argv):
    from sned.cli import main

    return main([str(a) for a in argv])


def test_sample_extract_and_cost_cli(latent_run, tmp_path, capsys):
    from sned.video_io import read_video

    assert _cli("sample", latent_run, "--frames", 6, "--resolution", 32, "--steps", 2,
                "--num", 2, "--formats", "mp4", "--out", tmp_path / "s") == 0
    files = sorted((tmp_path / "s").glob("*.mp4"))
    assert len(files) == 2
    assert read_video(files[0]).shape == (6, 32, 32, 3)  # requested frames, pixel resolution
    capsys.readouterr()
    assert _cli("extract", latent_run, "--preset", "0.5", "--out", tmp_path / "m") == 0
    card = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert card["pixel_resolution"] == 16 and card["decoder_macs"] > 0
    # the folder is standalone: move it away from the run and sample from it alone
    (tmp_path / "m").rename(tmp_path / "alone")
    assert _cli("sample", tmp_path / "alone", "--steps", 2, "--formats", "gif",
                "--out", tmp_path / "s2") == 0
    video = read_video(next((tmp_path / "s2").glob("*.gif")))
    assert video.shape == (8, 16, 16, 3)  # the config's frames and resolution, in pixels
    assert _cli("cost", "tiny-latent", "--preset", "0.5", "--resolution", 32) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (row["resolution"], row["latent_resolution"], row["frames"]) == (32, 8, 8)
    assert row["decoder_macs"] > row["macs"]


@pytest.mark.parametrize("argv, named", [
    (["sample", "{L}", "--frames", "7", "--out", "{tmp}/x"], "frames=7"),
    (["sample", "{L}", "--resolution", "24", "--out", "{tmp}/x"], "resolution 24"),
    (["cost", "tiny-latent", "--frames", "5"], "frames=5"),
    (["train", "tiny-latent", "--out", "{tmp}/y"], "autoencoder=PATH"),
    (["train", "tiny-latent", "--out", "{tmp}/y", "autoencoder={tmp}/nope"], "nope"),
])
def test_latent_bad_inputs_exit_2(latent_run, tmp_path, capsys, argv, named):
    argv = [a.format(L=latent_run, tmp=tmp_path) for a in argv]
    assert _cli(*argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_evaluate_autoencoder_and_latent_model_and_search(ae_run, latent_run, tmp_path, capsys):
    assert _cli("evaluate", ae_run[0], "--n-videos", 2, "--out", tmp_path / "ea") == 0
    rows = json.loads((tmp_path / "ea" / "table.json").read_text())["rows"]
    assert [r["resolution"] for r in rows] == [8, 16]
    assert all(0 < r["psnr"] < 60 and -1 <= r["ssim"] <= 1 for r in rows)
    assert _cli("evaluate", latent_run, "--presets", "0.5", "--metrics", "val_loss,latency",
                "--n-videos", 2, "--steps", 2, "--batch", 2, "--out", tmp_path / "el") == 0
    row = json.loads((tmp_path / "el" / "table.json").read_text())["rows"][0]
    assert (row["resolution"], row["latent_resolution"]) == (16, 4) and row["decoder_macs"] > 0
    assert row["latency_total_ms"] == pytest.approx(2 * row["latency_ms"] + row["decode_ms"])
    assert np.isfinite(row["val_loss"])
    assert _cli("search", latent_run, "--resolution", 32, "--budget", 4, "--population", 2,
                "--n-videos", 2, "--no-random", "--out", tmp_path / "sr") == 0
    points = json.loads((tmp_path / "sr" / "pareto.json").read_text())
    assert points and all(p["arch"]["resolution"] == 8 for p in points)  # latent side of 32 px
