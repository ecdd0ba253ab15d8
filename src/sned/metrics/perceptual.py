"""The perceptual term of autoencoder training: an LPIPS-style distance, loaded without running
code from its file.

:class:`LPIPS` is the VGG-16 variant of LPIPS (Zhang et al., 2018): frames are shifted and
scaled per channel, VGG-16 features are taken after the ReLUs ending each of its five stages,
unit-normalised over channels, squared differences are weighted per channel by a 1×1 linear
layer, averaged over space and summed over stages. Its state-dict layout is the ``lpips``
package's (``scaling_layer.shift``, ``net.slice1.0.weight`` …, ``lin0.model.1.weight``), so a
state dict saved from an ``lpips.LPIPS(net="vgg")`` model loads as it is (its duplicate
``lins.*`` entries are ignored).

:func:`load_perceptual` reads ``perceptual_weights``:

- ``.safetensors``, or a ``torch.save`` state dict read with ``torch.load(weights_only=True)``
  (no code runs: a pickle that asks for anything but tensors is refused);
- a TorchScript module or a ``torch.export`` program (``.pt2``) only with ``trust_code=True``
  (config key ``perceptual_trust_code: true``): loading such a file **runs code from it**, so
  pass only files you trust. Without the opt-in such a file is refused before it is opened by
  torch.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch
from torch import Tensor, nn

from ..config import ConfigError
from ..store.files import CheckpointError, load_safetensors

VGG_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
"""Output channels of VGG-16's convolutions, per stage (a max-pool before every stage but the
first)."""
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


class _Scaling(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.shift) / self.scale


class _Lin(nn.Module):
    """Per-channel weights of one stage (``model.0`` is LPIPS's dropout, ``model.1`` the 1×1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class _VGG16Slices(nn.Module):
    """VGG-16's feature layers split after each stage's last ReLU; layer names are their
    indices in ``torchvision.models.vgg16().features``."""

    def __init__(self) -> None:
        super().__init__()
        index, c_in = 0, 3
        for s, widths in enumerate(VGG_STAGES):
            seq = nn.Sequential()
            if s > 0:
                seq.add_module(str(index), nn.MaxPool2d(2, 2))
                index += 1
            for w in widths:
                seq.add_module(str(index), nn.Conv2d(c_in, w, 3, padding=1))
                seq.add_module(str(index + 1), nn.ReLU(inplace=False))
                index, c_in = index + 2, w
            self.add_module(f"slice{s + 1}", seq)

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = []
        for s in range(len(VGG_STAGES)):
            x = getattr(self, f"slice{s + 1}")(x)
            feats.append(x)
        return feats


class LPIPS(nn.Module):
    """``net(x, y) -> (N,)`` perceptual distance of (N, 3, H, W) frames in [-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.scaling_layer = _Scaling()
        self.net = _VGG16Slices()
        for i, widths in enumerate(VGG_STAGES):
            self.add_module(f"lin{i}", _Lin(widths[-1]))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        fx, fy = self.net(self.scaling_layer(x)), self.net(self.scaling_layer(y))
        total = 0
        for i, (a, b) in enumerate(zip(fx, fy)):
            a = a / (a.norm(dim=1, keepdim=True) + 1e-10)
            b = b / (b.norm(dim=1, keepdim=True) + 1e-10)
            total = total + getattr(self, f"lin{i}")((a - b).square()).mean((1, 2, 3))
        return total


def _zip_names(path: Path) -> list[str] | None:
    try:
        with zipfile.ZipFile(path) as z:
            return z.namelist()
    except (zipfile.BadZipFile, OSError):
        return None


def is_code_archive(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a TorchScript module or a ``torch.export`` program (or any zip that
    is not a plain ``torch.save`` archive): files whose load runs code."""
    p = Path(path)
    if p.suffix.lower() == ".pt2":
        return True
    names = _zip_names(p)
    if names is None:
        return False  # not a zip: a legacy torch.save file, read with weights_only
    parts = [n.split("/", 1)[-1] for n in names]
    plain = any(n == "data.pkl" for n in parts)
    code = any(n.startswith("code/") or n in ("constants.pkl", "archive_format")
               or n.startswith("models/") for n in parts)
    return code or not plain


def load_perceptual(path: str | os.PathLike, trust_code: bool = False) -> nn.Module:
    """The perceptual network of ``path`` in eval mode, frozen (see the module docstring).

    ConfigError naming the file when it is missing, unreadable, not an :class:`LPIPS` state
    dict, or a code archive without ``trust_code``."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"perceptual_weights {str(path)!r} does not exist (a local LPIPS-VGG "
                          f"state dict: .safetensors or .pt; nothing is downloaded)")
    if p.suffix.lower() == ".safetensors":
        try:
            state = load_safetensors(p)
        except CheckpointError as e:
            raise ConfigError(f"perceptual_weights: {e}") from None
        return _lpips_from(state, p)
    if is_code_archive(p):
        if not trust_code:
            raise ConfigError(
                f"perceptual_weights {str(p)!r} is a TorchScript / torch.export file: loading "
                f"it runs code from the file. Pass a state dict (.safetensors / .pt), or, for a "
                f"file you trust, model.perceptual_trust_code=true")
        return _load_code(p)
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"perceptual_weights {str(p)!r} is not a state dict that loads "
                          f"without running code ({first[:160]})") from None
    return _lpips_from(state, p)


def _lpips_from(state, path: Path) -> nn.Module:
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ConfigError(f"perceptual_weights {str(path)!r}: expected a state dict of tensors")
    state = {k: v for k, v in state.items() if not k.startswith("lins.")}  # lpips's alias
    net = LPIPS()
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in expected if k in state and state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        raise ConfigError(f"perceptual_weights {str(path)!r} is not an LPIPS-VGG state dict: "
                          f"missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape "
                          f"{wrong[:3]}")
    net.load_state_dict(state)
    return net.eval().requires_grad_(False)


def _load_code(path: Path) -> nn.Module:
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            net = (torch.export.load(str(path)).module() if path.suffix.lower() == ".pt2"
                   else torch.jit.load(str(path), map_location="cpu").eval())
    except (RuntimeError, ValueError) as e:
        raise ConfigError(f"perceptual_weights {str(path)!r} is not a TorchScript module "
                          f"or torch.export program: {e}") from None
    for param in net.parameters():  # ScriptModules have no requires_grad_()
        param.requires_grad_(False)
    return net
