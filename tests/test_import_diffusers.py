"""`sned import`: diffusers UNet2DModel → sned model folder with the same forward."""

import json

import pytest
import torch
import yaml
from diffusers import UNet2DModel

import sned
from sned.cli import main
from sned.convert import UnmappableError, config_from_unet2d, convert_unet2d
from sned.extract import read_model_meta

# small DDPM/ADM-family configs: with / without attention levels, channel multipliers,
# norm_num_groups, attention_head_dim, both time-embedding forms, norm_eps, in/out channels
CONFIGS = {
    "ddpm-attn-low": dict(sample_size=16, block_out_channels=(32, 64), layers_per_block=1,
                          norm_num_groups=8, attention_head_dim=8,
                          down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                          up_block_types=("AttnUpBlock2D", "UpBlock2D")),
    "adm-scale-shift": dict(sample_size=16, block_out_channels=(16, 32, 48), layers_per_block=2,
                            norm_num_groups=4, attention_head_dim=4, norm_eps=1e-6,
                            resnet_time_scale_shift="scale_shift", attn_norm_num_groups=4,
                            down_block_types=("AttnDownBlock2D", "DownBlock2D",
                                              "AttnDownBlock2D"),
                            up_block_types=("AttnUpBlock2D", "UpBlock2D", "AttnUpBlock2D")),
    "no-attention": dict(sample_size=8, block_out_channels=(16, 16), layers_per_block=1,
                         norm_num_groups=2, in_channels=1, out_channels=2, add_attention=False,
                         down_block_types=("DownBlock2D", "DownBlock2D"),
                         up_block_types=("UpBlock2D", "UpBlock2D")),
    "wide-heads": dict(sample_size=8, block_out_channels=(24, 48), layers_per_block=1,
                       norm_num_groups=6, attention_head_dim=12, dropout=0.1,
                       down_block_types=("AttnDownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "AttnUpBlock2D")),
}


def random_unet(cfg: dict, seed: int = 0) -> UNet2DModel:
    """A diffusers UNet2DModel with every tensor random (its zero-initialised layers would
    hide mapping mistakes)."""
    torch.manual_seed(seed)
    unet = UNet2DModel(**cfg).eval()
    with torch.no_grad():
        for p in unet.parameters():
            p.normal_(0.0, 0.1)
    return unet


def diffusers_vs_sned(unet: UNet2DModel, model) -> float:
    c, s = unet.config.in_channels, unet.config.sample_size
    x = torch.randn(3, c, s, s, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 417, 999])
    with torch.no_grad():
        ref = unet(x, t).sample
        out = model(x[:, :, None], t, None)[:, :, 0]
    assert out.shape == ref.shape
    return float((out - ref).abs().max())


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_converted_forward_equals_diffusers(name):
    unet = random_unet(CONFIGS[name])
    model = convert_unet2d(unet, name)
    assert not model.is_supernet and model.config.frames == 1
    assert diffusers_vs_sned(unet, model) <= 1e-5
    # the cost model counts exactly the converted parameters
    assert sned.model_cost(model.config).params == sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel()
                                                              for p in unet.parameters())


def test_the_imported_config_is_a_supernet_whose_full_arch_is_the_model():
    unet = random_unet(CONFIGS["adm-scale-shift"])
    static = convert_unet2d(unet)
    sup = sned.build_supernet(static.config)
    from sned.extract import weight_pairs
    with torch.no_grad():
        for view, tensor in weight_pairs(sup, static):
            view.copy_(tensor)
    kw = sned.example_inputs(static, batch=2, frames=1)
    space = sned.search_space(static.config)
    with torch.no_grad():
        torch.testing.assert_close(sup(**kw, arch=space.largest()), static(**kw))
        half = space.preset("S")  # a narrower subnet runs and extracts consistently
        torch.testing.assert_close(sned.extract(sup, half)(**kw), sup(**kw, arch=half))


def _save_unet(tmp_path, cfg, name="unet", seed=0):
    unet = random_unet(cfg, seed)
    folder = tmp_path / name
    unet.save_pretrained(folder)
    return unet, folder


def test_cli_import_writes_a_pipeline_folder_with_the_same_forward(tmp_path, capsys):
    unet, src = _save_unet(tmp_path, CONFIGS["ddpm-attn-low"])
    out = tmp_path / "imported"
    assert main(["import", str(src), "--out", str(out), "--frames", "4"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == sum(p.numel() for p in unet.parameters())
    index = json.loads((out / "model_index.json").read_text())
    assert index["unet"] == ["sned", "VideoUNet"] and index["_class_name"] == "SnedPipeline"
    assert (out / "scheduler" / "scheduler_config.json").is_file()
    model = sned.VideoUNet.from_pretrained(out / "unet")
    assert diffusers_vs_sned(unet, model) <= 1e-5
    assert diffusers_vs_sned(unet, sned.load_pretrained(out)) <= 1e-5
    readme = (out / "README.md").read_text()
    front = yaml.safe_load(readme.split("---")[1])
    assert front["library_name"] == "sned" and "imported" in front["tags"]
    video = yaml.safe_load((out / "video.yaml").read_text())
    assert video["frames"] == 4 and "temporal_attn" in video["levels"][1]["components"]
    # the pipeline generates images (one frame) from it: no prompt, unconditional
    pipe = sned.SnedPipeline.from_pretrained(out)
    frames = pipe(num_frames=1, num_videos_per_prompt=2, num_inference_steps=2,
                  generator=torch.Generator().manual_seed(0), progress=False).frames
    assert frames.shape == (2, 1, 16, 16, 3)


@pytest.mark.parametrize("change, block, attr", [
    (dict(time_embedding_type="fourier"), "UNet2DModel", "time_embedding_type"),
    (dict(down_block_types=("DownBlock2D", "AttnDownBlock2D"),
          up_block_types=("UpBlock2D", "UpBlock2D")), "up_blocks.0", "type"),
    (dict(down_block_types=("DownBlock2D", "SkipDownBlock2D")), "down_blocks.1", "type"),
    (dict(resnet_time_scale_shift="scale_shift"), "mid_block.attentions.0",
     "attn_norm_num_groups"),
    (dict(block_out_channels=(32, 48)), "down_blocks.1", "block_out_channels"),
    (dict(attention_head_dim=None), "UNet2DModel", "attention_head_dim"),
    (dict(num_class_embeds=10), "UNet2DModel", "num_class_embeds"),
])
def test_unmappable_configs_are_refused_naming_block_and_attribute(change, block, attr):
    cfg = {**CONFIGS["ddpm-attn-low"], **change}
    with pytest.raises(UnmappableError, match=rf"^{block.replace('.', '[.]')}: {attr}="):
        config_from_unet2d(cfg)


def test_cli_refuses_unmappable_before_writing(tmp_path, capsys):
    cfg = {**CONFIGS["ddpm-attn-low"], "resnet_time_scale_shift": "scale_shift"}
    _, src = _save_unet(tmp_path, cfg)
    out = tmp_path / "never"
    assert main(["import", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "mid_block.attentions.0: attn_norm_num_groups" in err and err.count("\n") == 1
    assert not out.exists()
    assert main(["import", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert not out.exists()


def test_import_a_ddpm_pipeline_folder_keeps_its_schedule(tmp_path, capsys):
    from diffusers import DDPMPipeline, DDPMScheduler

    unet = random_unet(CONFIGS["no-attention"])
    sched = DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction")
    DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(tmp_path / "pipe")
    out = tmp_path / "m"
    assert main(["import", str(tmp_path / "pipe"), "--out", str(out)]) == 0
    meta = read_model_meta(out)
    assert meta["diffusion"]["beta_schedule"] == "cosine"
    assert meta["diffusion"]["prediction_type"] == "v_prediction"
    conf = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert conf["beta_schedule"] == "squaredcos_cap_v2"
    assert diffusers_vs_sned(unet, sned.load_pretrained(out)) <= 1e-5
