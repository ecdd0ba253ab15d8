"""Training the latent path through the one Trainer: the AE, then a latent supernet on it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sned.config import ConfigError
from sned.latent import codec_for, load_autoencoder
from sned.train.config import load_run_config
from sned.train.trainer import Trainer

torch.set_num_threads(1)

AE_RUN = ["train.batch_size=2", "train.ema_decay=0", "train.lr=2e-3", "train.lr_warmup_steps=0",
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
