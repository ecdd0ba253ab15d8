"""Nothing silently wrong (issue 28): inputs of every kind are protected, weights are verified.

* ``--init-from`` (and every other file a command reads) is an input: an ``--out`` equal to,
  inside or around it is refused (exit 2, both named) and its bytes stay unchanged;
* a weight file with flipped data bytes (a valid safetensors header) is refused on
  ``--resume``, ``extract``, ``sample``, ``--init-from`` and ``diffnas``, the file named; a
  folder written before digests loads with a plain note, and NaNs in it are refused naming the
  tensor.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import sned
from sned.cli import main
from sned.diffusion import DiffusionConfig
from sned.extract import unet_folder, weights_file
from sned.store.files import (CheckpointError, all_finite, digest_bytes, file_digest,
                              load_safetensors, read_json, write_json)
from test_bad_inputs import tree_hash

torch.set_num_threads(1)

TINY = ["model_channels=16", "heads=[1,2,2]", "time_embed_dim=32", "resolutions=[16]"]
SMALL = [f"model.{o}" for o in TINY] + ["train.batch_size=2", "data.num_videos=8",
                                        "train.ema_decay=0.99", "--no-progress"]
VIDEO = [*SMALL, "model.frames=2"]
DN = ["--supernet-steps", "2", "--retrain-steps", "1", "--budget", "2", "--batch-size", "2",
      "--heldout", "2", "--fvd-videos", "0", "--device", "cpu", "--data", "num_videos=8"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("integrity")
    w = {"img": root / "img", "vid": root / "vid", "model": root / "model",
         "teacher": root / "teacher"}
    assert main(["train", "tiny-image", "--out", str(w["img"]), "--steps", "1", *SMALL]) == 0
    assert main(["train", "tiny-base", "--out", str(w["vid"]), "--steps", "1", *VIDEO]) == 0
    assert main(["extract", str(w["vid"]), "--preset", "S", "--out", str(w["model"])]) == 0
    sup = sned.build_supernet("tiny-image", TINY)
    sned.save_pretrained(sned.extract(sup, sned.search_space(sup.config).preset("M")),
                         w["teacher"], extra={"diffusion": DiffusionConfig().to_dict()})
    return w


def flip(path: Path, count: int = 64) -> None:
    """Flip ``count`` bytes in the middle of a safetensors file's data (the header stays
    valid, so safetensors itself reads it)."""
    data = bytearray(path.read_bytes())
    start = 8 + struct.unpack("<Q", data[:8])[0]
    mid = start + (len(data) - start) // 2
    for i in range(mid, mid + count):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def _refused(argv: list[str], names: list[str], capsys, *watched: Path) -> None:
    before = [tree_hash(p) for p in watched]
    capsys.readouterr()
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    last = [line for line in err.splitlines() if line.strip()][-1]
    for name in names:
        assert str(name) in last, f"{name} not named in: {last}"
    assert [tree_hash(p) for p in watched] == before, "an input was changed"


# ----------------------------------------------------------------------------- every input
def test_init_from_is_an_input_of_train(world, tmp_path, capsys):
    img = _copy(world["img"], tmp_path / "img")
    _refused(["train", "tiny-base", "--out", img, "--init-from", img, "--overwrite",
              "--steps", "1", *VIDEO], ["--out", str(img), "input"], capsys, img)
    srcs = tmp_path / "srcs"
    srcs.mkdir()
    inner = _copy(world["img"], srcs / "imgM")
    _refused(["train", "tiny-base", "--out", srcs, "--init-from", inner, "--steps", "1",
              *VIDEO], [str(srcs), "contains the input", str(inner)], capsys, srcs)
    _refused(["train", "tiny-base", "--out", inner / "sub", "--init-from", inner, "--steps",
              "1", *VIDEO], [str(inner / "sub"), "lies inside the input"], capsys, srcs)


def test_autoencoder_and_data_root_are_inputs_of_train(world, tmp_path, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "keep.txt").write_text("mine")
    _refused(["train", "tiny-base", "--out", tmp_path, "--steps", "1", *VIDEO,
              "data.kind=folder", f"data.root={videos}"], ["contains the input", str(videos)],
             capsys, tmp_path)
    run = _copy(world["vid"], tmp_path / "r")
    _refused(["train", "tiny-latent", "--out", run, "--resume", "--steps", "2",
              "--no-progress", f"train.autoencoder={run}"], [str(run), "input"], capsys, run)


# ----------------------------------------------------------------------------- digests
def test_digests_are_recorded_and_match(world):
    ckpt = (world["vid"] / "checkpoints" / "latest").resolve()
    digests = read_json(ckpt / "state.json")["digests"]
    assert sorted(digests) == ["ema.safetensors", "model.safetensors", "optimizer.safetensors",
                               "rng.safetensors"]
    for name, digest in digests.items():
        assert file_digest(ckpt / name) == digest == digest_bytes((ckpt / name).read_bytes())
    weights = weights_file(world["model"])  # the pipeline folder's unet/ weights
    meta = read_json(unet_folder(world["model"]) / "config.json")
    assert meta["sned"]["digests"] == {weights.name: file_digest(weights)}
    # the chunked digest is not the plain sha256 of small data, and it sees every chunk
    a = bytes(200 << 20)
    b = bytearray(a)
    b[150 << 20] = 1
    assert digest_bytes(a, threads=2) == digest_bytes(a, threads=1) != digest_bytes(b)


def test_flipped_bytes_refused_on_resume(world, tmp_path, capsys):
    run = _copy(world["vid"], tmp_path / "vid")
    bad = (run / "checkpoints" / "latest").resolve() / "ema.safetensors"
    flip(bad)
    _refused(["train", "tiny-base", "--out", run, "--resume", "--steps", "2", *VIDEO],
             [str(bad), "digest"], capsys, run)


def test_flipped_bytes_refused_on_extract_and_sample(world, tmp_path, capsys):
    run = _copy(world["vid"], tmp_path / "vid")
    bad = (run / "checkpoints" / "latest").resolve() / "ema.safetensors"
    flip(bad)
    _refused(["extract", run, "--preset", "S", "--out", tmp_path / "m"], [str(bad)], capsys,
             run)
    assert not (tmp_path / "m").exists()
    model = _copy(world["model"], tmp_path / "model")
    flip(weights_file(model))
    _refused(["sample", model, "--prompt", "a red circle", "--steps", "1", "--out",
              tmp_path / "o"], [str(weights_file(model))], capsys, model)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_flipped_bytes_refused_on_init_from_and_diffnas(world, tmp_path, capsys):
    img = _copy(world["img"], tmp_path / "img")
    bad = (img / "checkpoints" / "latest").resolve() / "ema.safetensors"
    flip(bad)
    _refused(["train", "tiny-base", "--out", tmp_path / "v", "--init-from", img, "--steps",
              "1", *VIDEO], [str(bad), "digest"], capsys, img)
    assert not (tmp_path / "v").exists()
    teacher = _copy(world["teacher"], tmp_path / "t")
    flip(weights_file(teacher))
    _refused(["diffnas", teacher, "--out", tmp_path / "d", *DN],
             [str(weights_file(teacher))], capsys, teacher)


def test_folder_without_digests_loads_with_a_note_and_nan_is_named(world, tmp_path, capsys):
    model = _copy(world["model"], tmp_path / "old")
    config = unet_folder(model) / "config.json"
    meta = read_json(config)
    del meta["sned"]["digests"]  # as written before digests were recorded
    write_json(config, meta)
    capsys.readouterr()
    sned.load_pretrained(model)
    assert "records no weight digests" in capsys.readouterr().err
    weights = weights_file(model)
    state = load_safetensors(weights)
    name = sorted(k for k, v in state.items() if v.is_floating_point())[3]
    state[name].view(-1)[0] = float("nan")
    save_file(state, weights)
    with pytest.raises(CheckpointError, match=f"tensor {name} holds non-finite"):
        sned.load_pretrained(model)
    _refused(["sample", model, "--prompt", "x", "--steps", "1", "--out", tmp_path / "o"],
             [str(weights), name], capsys, model)


def test_torn_json_is_named(tmp_path):
    path = tmp_path / "eval.json"
    write_json(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1} and [p.name for p in tmp_path.iterdir()] \
        == ["eval.json"]
    path.write_text('{"a": ')
    with pytest.raises(CheckpointError, match=str(path)):
        read_json(path)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_all_finite_sees_every_nan_and_inf(dtype):
    t = torch.randn(4097).to(dtype)
    assert all_finite(t) and all_finite(torch.zeros(0)) and all_finite(torch.arange(5))
    for i in (0, 2048, 4096):
        for v in (float("nan"), float("inf"), -float("inf")):
            u = t.clone()
            u[i] = v
            assert not all_finite(u), (i, v)
    assert all_finite(torch.full((8,), torch.finfo(dtype).max, dtype=dtype))  # huge, finite
