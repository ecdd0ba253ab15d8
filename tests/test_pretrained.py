"""The standalone model folder: save, reload without the supernet, and corrupt inputs."""

import json
import warnings

import diffusers
import pytest
import torch

import sned
from sned import CheckpointError, VideoUNet
from sned.extract import save_legacy


def test_save_and_reload_subnet(tiny_ssr, tmp_path):
    space = sned.search_space("tiny-ssr")
    arch = space.preset("M", resolution=64)
    static = sned.extract(tiny_ssr, arch)
    folder = sned.save_pretrained(static, tmp_path / "ssr-M")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json",
                                                        "diffusion_pytorch_model.safetensors"]
    loaded = sned.load_pretrained(folder)
    assert not loaded.is_supernet and loaded.arch == arch
    kw = sned.example_inputs(loaded, batch=1, frames=2)
    assert kw["sample"].shape[-1] == 64
    with torch.no_grad():
        torch.testing.assert_close(loaded(**kw), tiny_ssr(**kw, arch=arch), atol=1e-5, rtol=0)


def test_save_and_reload_supernet(tiny_base, tmp_path):
    folder = sned.save_pretrained(tiny_base, tmp_path / "super")
    loaded = sned.load_pretrained(folder)
    assert loaded.is_supernet
    arch = sned.search_space("tiny-base").preset("S")
    kw = sned.example_inputs(loaded, batch=1, frames=2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**kw, arch=arch), tiny_base(**kw, arch=arch))


def test_corrupt_folders_are_detected(tiny_base, tmp_path):
    static = sned.extract(tiny_base, sned.search_space("tiny-base").preset("S"))
    folder = sned.save_pretrained(static, tmp_path / "m")
    weights = folder / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        sned.load_pretrained(folder)
    weights.write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match="diffusion_pytorch_model.safetensors"):
        sned.load_pretrained(folder)
    (folder / "config.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        sned.load_pretrained(folder)
    with pytest.raises(CheckpointError, match="does not exist"):
        sned.load_pretrained(tmp_path / "missing")


def test_weights_for_other_arch_are_rejected(tiny_base, tmp_path):
    space = sned.search_space("tiny-base")
    folder = sned.save_pretrained(sned.extract(tiny_base, space.preset("S")), tmp_path / "m")
    meta = json.loads((folder / "config.json").read_text())
    meta["arch"] = space.preset("L").to_dict()
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="wrong shape"):
        sned.load_pretrained(folder)


def test_video_unet_is_a_diffusers_model_and_round_trips_exactly(tiny_base, tmp_path):
    assert issubclass(VideoUNet, diffusers.ModelMixin)
    assert issubclass(VideoUNet, diffusers.ConfigMixin)
    arch = sned.search_space("tiny-base").preset("S")
    static = sned.extract(tiny_base, arch)
    static.save_pretrained(tmp_path / "s")  # diffusers' own
    loaded = VideoUNet.from_pretrained(tmp_path / "s")
    assert not loaded.is_supernet and loaded.arch == arch
    assert loaded.config == static.config  # the ModelConfig
    assert loaded.diffusers_config["supernet"] is False
    for k, v in static.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    kw = sned.example_inputs(loaded, batch=1, frames=2)
    with torch.no_grad():
        assert torch.equal(loaded(**kw), tiny_base(**kw, arch=arch))
    tiny_base.save_pretrained(tmp_path / "super")
    sup = VideoUNet.from_pretrained(tmp_path / "super")
    assert sup.is_supernet
    with torch.no_grad():
        assert torch.equal(sup(**kw, arch=arch), tiny_base(**kw, arch=arch))
    # sned.load_pretrained reads what diffusers wrote, and diffusers what sned wrote
    assert sned.load_pretrained(tmp_path / "s").arch == arch
    sned.save_pretrained(static, tmp_path / "t", extra={"diffusion": {"loss": "l1"}})
    again = VideoUNet.from_pretrained(tmp_path / "t")
    recorded = dict(again.diffusers_config["sned"])
    assert set(recorded.pop("digests")) == {"diffusion_pytorch_model.safetensors"}
    assert recorded == {"diffusion": {"loss": "l1"}}
    assert static.diffusers_config["sned"] == {}  # saving with extras leaves the model alone


def test_legacy_sned_model_folders_still_load(tiny_base, tmp_path):
    arch = sned.search_space("tiny-base").preset("M")
    static = sned.extract(tiny_base, arch)
    folder = save_legacy(static, tmp_path / "old", extra={"diffusion": {"loss": "l2"}})
    assert json.loads((folder / "config.json").read_text())["format"] == "sned-model"
    assert (folder / "model.safetensors").is_file()
    with pytest.warns(FutureWarning, match="sned 0.1 model folder"):
        loaded = sned.load_pretrained(folder)
    assert loaded.arch == arch
    kw = sned.example_inputs(loaded, batch=1, frames=2)
    with torch.no_grad():
        assert torch.equal(loaded(**kw), static(**kw))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sned.save_pretrained(sned.load_pretrained(folder), tmp_path / "new")  # the conversion
    assert VideoUNet.from_pretrained(tmp_path / "new").arch == arch


def test_diffusers_sharding_and_torch_dtype(tiny_base, tmp_path):
    static = sned.extract(tiny_base, sned.search_space("tiny-base").preset("S"))
    static.save_pretrained(tmp_path / "sh", max_shard_size="200KB")
    assert len(list((tmp_path / "sh").glob("diffusion_pytorch_model-*.safetensors"))) > 1
    half = VideoUNet.from_pretrained(tmp_path / "sh", torch_dtype=torch.bfloat16)
    assert next(half.parameters()).dtype == torch.bfloat16
    for loaded in (VideoUNet.from_pretrained(tmp_path / "sh"),
                   sned.load_pretrained(tmp_path / "sh")):  # sned reads the shards too
        for k, v in static.state_dict().items():
            assert torch.equal(v, loaded.state_dict()[k]), k
