"""DiffNAS on trained teachers: the retrain recipe read from the teacher, a latent teacher end to
end (UNet searched, scored in latent space, decoded agreement, a model folder `sned sample`
decodes), and `--compare` refused where the uniform shrink is the teacher itself."""

from __future__ import annotations

import json

import pytest
import torch

import sned
from sned.cli import main
from sned.diffnas import Options, run_diffnas
from sned.diffnas.pipeline import Run
from sned.extract import read_model_meta
from sned.pipelines.export import export_subnet
from sned.pipelines.loading import load_denoiser
from sned.train.config import load_run_config
from sned.train.trainer import Trainer

torch.set_num_threads(1)

AE = ["train.batch_size=2", "train.ema_decay=0", "train.lr=1e-3", "train.lr_warmup_steps=0",
      "data.num_videos=8", "model.resolutions=[8]", "model.frames=4", "train.steps=3",
      "train.checkpoint_every=3"]
LATENT = ["train.batch_size=2", "train.fixed_arch=B", "train.lr=2e-3", "train.lr_floor=0.1",
          "train.ema_decay=0.9", "train.warmup_steps=0", "data.num_videos=8", "train.steps=3",
          "train.checkpoint_every=3", "model.resolutions=[4]", "model.model_channels=16",
          "model.time_embed_dim=32"]
DN = dict(supernet_steps=2, budget=3, batch_size=2, search_clips=2, pairs_per_clip=2,
          score_heldout=2, device="cpu", data={"num_videos": 8}, fvd_videos=0,
          agreement_samples=2, agreement_steps=2)


@pytest.fixture(scope="module")
def latent_teacher(tmp_path_factory):
    """A tiny-latent fixed-arch run (3 steps × batch 2, cosine to 0.1, EMA 0.9) over a
    trained tiny-ae, extracted to a model folder."""
    root = tmp_path_factory.mktemp("dnlatent")
    Trainer(load_run_config("tiny-ae", AE), root / "ae", progress=False).fit()
    run = load_run_config("tiny-latent", LATENT + [f"autoencoder={root / 'ae'}"])
    Trainer(run, root / "run", progress=False).fit()
    export_subnet(load_denoiser(root / "run", preset="B"), root / "teacher")
    return root


def test_recipe_is_read_from_the_teacher_and_options_override(latent_teacher, tmp_path):
    teacher = latent_teacher / "teacher"
    meta = read_model_meta(teacher)
    assert meta["train"]["lr_floor"] == 0.1  # sned extract records the run's train section
    r = Run(teacher, tmp_path / "a", Options(**DN), log=lambda m: None).recipe
    assert (r["steps"], r["batch_size"], r["samples"], r["teacher_samples"]) == (3, 2, 6, 6)
    assert (r["lr"], r["lr_schedule"], r["lr_floor"], r["ema_decay"]) == (2e-3, "cosine", 0.1,
                                                                         0.9)
    assert set(r["from"].values()) == {"teacher"} and "train section" in r["teacher_source"]
    # options override; the default steps keep the teacher's samples at another batch
    r = Run(teacher, tmp_path / "b", Options(**DN, retrain_batch=4, retrain_lr=1e-4,
                                             retrain_schedule="constant"),
            log=lambda m: None).recipe
    assert (r["steps"], r["batch_size"], r["samples"]) == (2, 4, 8)  # ceil(6 / 4) steps
    assert (r["lr"], r["lr_schedule"]) == (1e-4, "constant")
    assert r["from"]["steps"] == "teacher" and r["from"]["lr"] == "option"
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_latent_teacher_end_to_end_and_sned_sample_decodes(latent_teacher, tmp_path):
    teacher = latent_teacher / "teacher"
    out = run_diffnas(teacher, tmp_path / "d", Options(**DN), log=lambda m: None)
    doc = json.loads((out / "search.json").read_text())
    assert doc["teacher"]["latent"] and doc["retrain"]["samples"] == 6
    assert doc["capped"] == [] and not (out / "compare").exists()  # --compare is off
    # retrained with the teacher's recipe: 3 steps, cosine from 2e-3 to its floor 0.1
    rows = [json.loads(x) for x in (out / "retrain" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    from sned.train.lr_schedule import lr_factor

    factor = lr_factor("cosine", 3, 0, 0.1)  # rows log the lr after their step
    assert [r["lr"] for r in rows] == pytest.approx([2e-3 * factor(s) for s in (1, 2, 3)])
    assert rows[-1]["lr"] == pytest.approx(2e-3 * 0.1)  # the teacher's floor
    # the UNet is searched in latent space: latent channels and side
    model = sned.load_pretrained(out / "model")
    assert model.config.in_channels == 4 and model.arch.resolution == 4
    assert sum(p.numel() for p in model.parameters()) == doc["subnet"]["params"]
    scores = json.loads((out / "scores.json").read_text())
    assert set(scores["models"]) == {"teacher", "diffnas"}
    a = scores["models"]["diffnas"]["agreement"]
    assert a["n"] == 2 and 0 < a["psnr"] < 100 and -1 <= a["ssim"] <= 1
    v = scores["verdict"]
    assert v["status"] == "unresolved" and v["gap"]["n"] == 1 and v["cap"] == 0.5
    text = (out / "report.md").read_text()
    assert "latent space" in text and "decoded by the teacher's autoencoder" in text
    assert "References: not retrained" in text
    # the model folder carries the autoencoder: `sned sample` decodes it to pixel video
    assert main(["sample", str(out / "model"), "--steps", "2", "--num", "1", "--formats",
                 "png", "--out", str(tmp_path / "s")]) == 0
    pngs = sorted((tmp_path / "s").rglob("*.png"))
    assert pngs
    from PIL import Image

    # a grid of the 8 decoded frames (4 latent × 2) of 16 px (latent side 4 × 4)
    assert Image.open(pngs[0]).size == (8 * 16, 16)


def test_compare_at_the_teachers_macs_is_refused(latent_teacher, tmp_path, capsys):
    """The uniform shrink at r = 1 is the teacher itself (issue 28, item 7)."""
    out = tmp_path / "o"
    argv = ["diffnas", str(latent_teacher / "teacher"), "--out", str(out), "--device", "cpu",
            "--compare"]
    assert main(argv + ["0.5,1"]) == 2
    err = capsys.readouterr().err
    assert "--compare 1" in err and "100.0%" in err and not out.exists()
    assert main(argv + ["0"]) == 2 and not out.exists()


def test_recipe_of_an_older_folder_is_read_from_its_source_checkpoint(latent_teacher,
                                                                       tmp_path):
    """A folder extracted before `train` was recorded: the checkpoint named by its card."""
    old = tmp_path / "old"  # the 0.1 layout: the card is in config.json
    export_subnet(load_denoiser(latent_teacher / "run", preset="B"), old, legacy=True)
    meta = json.loads((old / "config.json").read_text())
    del meta["train"]
    (old / "config.json").write_text(json.dumps(meta))
    r = Run(old, tmp_path / "a", Options(**DN), log=lambda m: None).recipe
    assert (r["steps"], r["batch_size"], r["lr_floor"], r["ema_decay"]) == (3, 2, 0.1, 0.9)
    assert "the checkpoint the teacher was extracted from" in r["teacher_source"]
    assert str(latent_teacher / "run") in r["teacher_source"]
    # neither: the fallbacks, said so
    meta["card"]["source"] = str(tmp_path / "gone")
    (old / "config.json").write_text(json.dumps(meta))
    r = Run(old, tmp_path / "b", Options(**DN), log=lambda m: None).recipe
    assert "not recorded" in r["teacher_source"] and r["from"]["steps"] == "fallback"
