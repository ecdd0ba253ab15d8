"""Issue 8 defect 6: `sned extract` and `sned sample` share one weights default (EMA when the
checkpoint has it) and one flag for the other (--raw / --ema); extracted folders keep their
preset name."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sned.cli import main
from sned.pipelines.loading import load_denoiser
from sned.train.config import load_run_config
from sned.train.trainer import Trainer
from sned.video_io import read_video

FAST = ["model.frames=2", "data.num_videos=8", "train.batch_size=2", "train.warmup_steps=0",
        "train.ema_decay=0.9"]
PROMPT = ["--prompt", "a green circle moving right"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    Trainer(load_run_config("tiny-base", FAST), out, progress=False).fit(3)
    return out


def _sample(src, out, capsys, *extra):
    assert main(["sample", str(src), *PROMPT, "--steps", "3", "--formats", "gif", "--out",
                 str(out), *extra]) == 0
    files = json.loads(capsys.readouterr().out)["files"]
    assert len(files) == 1
    return files[0].split("/")[-1], read_video(files[0])


def test_default_extract_then_sample_equals_sampling_the_run(run_dir, tmp_path, capsys):
    ema = load_denoiser(run_dir, ema=True).model.state_dict()
    raw = load_denoiser(run_dir, ema=False).model.state_dict()
    assert any(not torch.equal(ema[k], raw[k]) for k in raw)  # the choice matters here
    assert main(["extract", str(run_dir), "--preset", "S", "--out", str(tmp_path / "S")]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["subnet"] == "S" and card["weights"] == "ema"
    name_f, from_folder = _sample(tmp_path / "S", tmp_path / "a", capsys)
    name_r, from_run = _sample(run_dir, tmp_path / "b", capsys, "--preset", "S")
    assert name_f == name_r == "a-green-circle-moving-right_S_16px_seed0.gif"
    assert np.array_equal(from_folder, from_run)


def test_raw_flag_is_the_same_on_both(run_dir, tmp_path, capsys):
    assert main(["extract", str(run_dir), "--preset", "M", "--raw", "--out",
                 str(tmp_path / "M")]) == 0
    assert json.loads(capsys.readouterr().out)["weights"] == "raw"
    _, from_folder = _sample(tmp_path / "M", tmp_path / "a", capsys)
    _, raw_run = _sample(run_dir, tmp_path / "b", capsys, "--preset", "M", "--raw")
    _, ema_run = _sample(run_dir, tmp_path / "c", capsys, "--preset", "M")
    assert np.array_equal(from_folder, raw_run)
    assert not np.array_equal(raw_run, ema_run)
    # asking a raw folder for EMA weights is an error, not a silent mismatch
    assert main(["sample", str(tmp_path / "M"), *PROMPT, "--ema", "--out",
                 str(tmp_path / "d")]) == 2
    assert "holds raw weights" in capsys.readouterr().err


def test_checkpoint_without_ema_defaults_to_raw(run_dir, tmp_path):
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(run_dir / "checkpoints" / "latest", ckpt)
    (ckpt / "ema.safetensors").unlink()
    den = load_denoiser(ckpt)
    assert den.weights == "raw"
    raw = load_denoiser(run_dir, ema=False).model.state_dict()
    assert all(torch.equal(v, raw[k]) for k, v in den.model.state_dict().items())
    with pytest.raises(Exception, match="no EMA weights"):
        load_denoiser(ckpt, ema=True)
