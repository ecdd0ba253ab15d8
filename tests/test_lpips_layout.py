"""The LPIPS state-dict layout of ``sned.metrics.perceptual`` against the ``lpips`` package
(issue 28): its shipped linear-layer weights (``weights/v0.1/vgg.pth``) load into
:class:`~sned.metrics.perceptual.LPIPS` by name and shape, and its VGG slicing and input scaling
are the same. The package needs torchvision, so it is never imported: its files are read from
the installed wheel (``pip install --no-deps lpips``, scripts/setup.sh)."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest
import torch

from sned.metrics.perceptual import SCALE, SHIFT, LPIPS, load_perceptual


def _lpips_dir() -> Path:
    spec = importlib.util.find_spec("lpips")  # finds the package without running it
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the lpips package is not installed (scripts/setup.sh installs it)")
    return Path(list(spec.submodule_search_locations)[0])


def _shipped_lins() -> dict[str, torch.Tensor]:
    return torch.load(_lpips_dir() / "weights" / "v0.1" / "vgg.pth", map_location="cpu",
                      weights_only=True)


def test_shipped_linear_weights_load_by_name_and_shape():
    lins = _shipped_lins()
    assert sorted(lins) == [f"lin{i}.model.1.weight" for i in range(5)]
    net = LPIPS()
    mine = net.state_dict()
    for k, v in lins.items():
        assert k in mine and mine[k].shape == v.shape, k
    missing, unexpected = net.load_state_dict(lins, strict=False)
    assert not unexpected
    assert all(k.startswith(("net.", "scaling_layer.")) for k in missing)
    for i in range(5):
        torch.testing.assert_close(getattr(net, f"lin{i}").model[1].weight,
                                   lins[f"lin{i}.model.1.weight"])


def _vgg_slices_of_the_package() -> list[list[int]]:
    """The torchvision ``vgg16().features`` indices of each slice of lpips's ``vgg16``, read
    from its source (``for x in range(a, b): self.sliceN.add_module(str(x), ...)``)."""
    tree = ast.parse((_lpips_dir() / "pretrained_networks.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "vgg16")
    slices: dict[int, list[int]] = {}
    for loop in ast.walk(cls):
        if not (isinstance(loop, ast.For) and isinstance(loop.iter, ast.Call)
                and getattr(loop.iter.func, "id", None) == "range"):
            continue  # e.g. the requires_grad loop
        call = loop.body[0].value
        assert call.func.attr == "add_module"
        name = call.func.value.attr  # self.sliceN
        slices[int(name[len("slice"):])] = list(range(*[a.value for a in loop.iter.args]))
    return [slices[k] for k in sorted(slices)]


def test_vgg_slicing_and_scaling_match_the_package():
    net = LPIPS()
    mine = [[int(name) for name, _ in getattr(net.net, f"slice{s}").named_children()]
            for s in range(1, 6)]
    assert mine == _vgg_slices_of_the_package() == [list(range(0, 4)), list(range(4, 9)),
                                                     list(range(9, 16)), list(range(16, 23)),
                                                     list(range(23, 30))]
    src = (_lpips_dir() / "lpips.py").read_text()
    assert f"[{SHIFT[0]:.3f},{SHIFT[1]:.3f},{SHIFT[2]:.3f}]".replace("0.", ".") in src
    assert f"[{SCALE[0]:.3f},{SCALE[1]:.3f},{SCALE[2]:.3f}]".replace("0.", ".") in src


def test_a_package_layout_state_dict_loads(tmp_path):
    """What ``torch.save(lpips.LPIPS(net="vgg").state_dict())`` holds — backbone, scaling
    buffers, ``lin*`` and their ``lins.*`` aliases — loads with the shipped linear weights."""
    lins = _shipped_lins()
    torch.manual_seed(0)
    state = {**LPIPS().state_dict(), **lins,
             **{f"lins.{i}.model.1.weight": lins[f"lin{i}.model.1.weight"] for i in range(5)}}
    torch.save(state, tmp_path / "lpips_vgg.pth")
    net = load_perceptual(tmp_path / "lpips_vgg.pth")
    torch.testing.assert_close(net.lin3.model[1].weight, lins["lin3.model.1.weight"])
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert net(x, x).abs().max() < 1e-6 and (net(x, x.flip(-1)) > 0).all()
