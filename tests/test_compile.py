"""Compiled serving (sned.pipelines.compile_model): extracted models compiled with
torch.compile give eager's outputs within float rounding; supernets are refused.

The compiling tests are ``slow``: inductor compiles C++ kernels for each graph; on the shared
2-core development machine (load ≈ 7) they took 909 s and 303 s (2026-12-03) — far over the
default suite's budget."""

import json

import numpy as np
import pytest
import torch

import sned
from sned.cli import main
from sned.pipelines import compile_model, sample
from PIL import Image

FORWARD_TOL = 1e-4  # max |compiled - eager| of one forward (inductor reorders float ops)
SAMPLE_TOL = 1e-3  # of frames after a few DDIM steps in [-1, 1]


@pytest.fixture(scope="module")
def static_s():
    torch.manual_seed(0)
    supernet = sned.build_supernet("tiny-base", ["frames=4"])
    for p in supernet.parameters():  # zero-init residual outputs: give them weights
        if p.abs().sum() == 0:
            torch.nn.init.normal_(p, std=0.05)
    arch = sned.search_space(supernet.config).preset("S", 16)
    return supernet, arch


@pytest.mark.slow
def test_compiled_forward_and_sampling_equal_eager(static_s):
    supernet, arch = static_s
    eager, comp = sned.extract(supernet, arch), compile_model(sned.extract(supernet, arch))
    assert isinstance(comp, sned.VideoUNet) and not comp.is_supernet
    kw = sned.example_inputs(eager, batch=2)
    with torch.no_grad():
        ref, out = eager(**kw), comp(**kw)
    assert ref.abs().max() > 0.05  # a non-trivial output
    assert (out - ref).abs().max() <= FORWARD_TOL
    emb, mask = kw["encoder_hidden_states"], kw["encoder_attention_mask"]
    a = sample(eager, emb, mask, steps=3, guidance_scale=3.0, seed=0, progress=False)
    b = sample(comp, emb, mask, steps=3, guidance_scale=3.0, seed=0, progress=False)
    assert (a - b).abs().max() <= SAMPLE_TOL


def test_compile_refuses_a_supernet(static_s):
    supernet, _ = static_s
    with pytest.raises(TypeError, match="extract"):
        compile_model(supernet)


@pytest.mark.slow
def test_cli_sample_compile_writes_the_same_videos(static_s, tmp_path, capsys):
    supernet, arch = static_s
    folder = tmp_path / "model"
    sned.save_pretrained(sned.extract(supernet, arch), folder)
    grids = []
    for flag in ([], ["--compile"]):
        out = tmp_path / ("c" if flag else "e")
        assert main(["sample", str(folder), "--prompt", "a red circle moving left", "--steps",
                     "2", "--formats", "png", "--out", str(out), *flag]) == 0
        files = json.loads(capsys.readouterr().out)["files"]
        grids.append(np.asarray(Image.open(files[0])).astype(int))
    assert np.abs(grids[0] - grids[1]).max() <= 1  # uint8 rounding of equal frames
