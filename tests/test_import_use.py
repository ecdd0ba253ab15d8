"""An imported diffusers UNet2DModel as a DiffNAS teacher and as the start of a video supernet."""

import json

import pytest
import torch
import yaml
from diffusers import UNet2DModel

import sned
from sned.cli import main
from sned.config import config_from_dict
from sned.train.transfer import init_from

# a small DDPM-style image UNet (attention at the low resolution, diffusers' "default" ResBlock)
UNET = dict(sample_size=16, block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=4,
            attention_head_dim=8, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"))


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    root = tmp_path_factory.mktemp("imported")
    torch.manual_seed(0)
    unet = UNet2DModel(**UNET)
    with torch.no_grad():
        for p in unet.parameters():
            p.normal_(0.0, 0.05)
    unet.save_pretrained(root / "ddpm")
    assert main(["import", str(root / "ddpm"), "--out", str(root / "sned"), "--frames",
                 "2"]) == 0
    return unet.eval(), root / "sned"


def test_diffnas_on_an_imported_teacher(imported, tmp_path, capsys):
    _, folder = imported
    capsys.readouterr()
    out = tmp_path / "nas"
    assert main(["diffnas", str(folder), "--out", str(out), "--supernet-steps", "2",
                 "--retrain-steps", "2", "--budget", "3", "--batch-size", "2", "--heldout",
                 "2", "--score-heldout", "2", "--fvd-videos", "0", "--compare", "",
                 "--device", "cpu", "--data", "num_videos=8"]) == 0
    result = json.loads(capsys.readouterr().out)
    teacher = sned.load_pretrained(folder)
    assert result["teacher"]["params"] == sum(p.numel() for p in teacher.parameters())
    student = sned.load_pretrained(out / "model")
    assert student.config.norm_groups == 4 and student.config.attention_norm == "group"
    assert sum(p.numel() for p in student.parameters()) == result["subnet"]["params"]
    x = torch.randn(1, 3, 1, 16, 16)
    with torch.no_grad():
        assert student(x, torch.tensor([10]), None).shape == x.shape
    card = yaml.safe_load((out / "model" / "README.md").read_text().split("---")[1])
    assert card["library_name"] == "sned" and "diffnas" in card["tags"]
    assert card["base_model"] == str(folder)


def test_video_supernet_starts_from_the_imported_image_model(imported, tmp_path):
    unet, folder = imported
    cfg = config_from_dict(yaml.safe_load((folder / "video.yaml").read_text()), "video.yaml")
    assert cfg.frames == 2 and "temporal_attn" in cfg.levels[1].components
    video = sned.build_supernet(cfg)
    record = init_from(video, folder)
    assert record.new  # the temporal attentions, started at zero output
    # at step 0 every frame of the video model is the diffusers model on that frame
    arch = sned.search_space(cfg).largest()
    x = torch.randn(2, 3, 2, 16, 16, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([5, 900])
    with torch.no_grad():
        out = video(x, t, None, arch=arch)
        for f in range(2):
            ref = unet(x[:, :, f], t).sample
            torch.testing.assert_close(out[:, :, f], ref, atol=1e-5, rtol=0)


def test_cli_train_from_the_imported_folder(imported, tmp_path):
    _, folder = imported
    run = tmp_path / "run"
    assert main(["train", str(folder / "video.yaml"), "--out", str(run), "--init-from",
                 str(folder), "--steps", "2", "--no-progress", "data.num_videos=8",
                 "train.batch_size=2", "train.warmup_steps=0"]) == 0
    state = json.loads((run / "checkpoints" / "latest" / "state.json").read_text())
    assert state["init_from"]["path"] == str(folder.resolve())
    assert state["init_from"]["weights_file"].endswith(
        "unet/diffusion_pytorch_model.safetensors")
