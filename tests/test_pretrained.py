"""The standalone model folder: save, reload without the supernet, and corrupt inputs."""

import json

import pytest
import torch

import sned
from sned import CheckpointError


def test_save_and_reload_subnet(tiny_ssr, tmp_path):
    space = sned.search_space("tiny-ssr")
    arch = space.preset("M", resolution=64)
    static = sned.extract(tiny_ssr, arch)
    folder = sned.save_pretrained(static, tmp_path / "ssr-M")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
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
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        sned.load_pretrained(folder)
    weights.write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match="model.safetensors"):
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
