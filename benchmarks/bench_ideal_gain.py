"""How much can a denoiser gain from each caption word? A bound from the ideal denoiser.

The v-loss a model pays on a clip depends on how well it can guess the clean clip x0 from the
noisy x_t. The best guess given x_t and a caption c is the posterior mean E[x0 | x_t, c]; under
v-prediction the loss of a guess x̂0 is ``‖x̂0 − x0‖² / σ_t²`` (per element), so the **ideal
denoiser's** loss, and how much it falls when the caption names one more attribute, says what
that word is worth to *any* model trained on this data: an upper bound on what learning the word
can buy under the training loss.

The synthetic data make this posterior computable: given its caption (colour, shape, direction,
speed) a one-object clip is a function of three numbers drawn uniformly — the object's size and
its start (x, y) (one of them fixed with ``motion_start=edge``) — so the prior p(x0 | caption) is
integrated on a grid over them (``--grid`` points per axis, ``SIZE_STEPS`` sizes, midpoint rule),
rendered by the data module itself. A caption without one attribute is the uniform mixture of the
captions the training split allows for it. Posterior weights are ``softmax(−‖x_t − α_t x_i‖² /
2σ_t²)`` over the grid clips; x̂0 is their weighted mean. Every condition uses the same test
(clip, t, noise) pairs, so the gains are paired. At low noise every condition's posterior sits on
the same grid point (the gain is 0 there, as for a real model: x_t shows everything); the gain
comes from the noise levels where x_t does not show the object. ``--grid`` twice as fine checks
the integration (the gains must agree).

Reports, per data variant (``--motion-start``), for each attribute the gain of knowing it,
``loss(without) − loss(with)``: the mean over uniform timesteps (the training loss's weighting)
with a 95 % interval over test pairs, and per noise quartile. Writes ``OUT/ideal-gain.json``.

    python benchmarks/bench_ideal_gain.py --out /tmp/ig --pairs 512 --grid 12 24
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sned.data.synthetic import (DIRECTION_VECTORS, HELD_OUT, SIZE_RANGE, SPEED_VALUES,
                                 render, start_support)
from sned.diffusion import DiffusionConfig, Objective

ATTRIBUTES = ("color", "shape", "direction", "speed")
SIZE_STEPS = 5


def _mean_ci(x: torch.Tensor) -> dict:
    x = x.double()
    half = 1.959964 * float(x.std(unbiased=True)) / math.sqrt(x.numel())
    return {"mean": float(x.mean()), "ci95": [float(x.mean()) - half, float(x.mean()) + half]}


def _midpoints(lo: float, hi: float, n: int) -> list[float]:
    if lo == hi:
        return [lo]
    return [lo + (hi - lo) * (i + 0.5) / n for i in range(n)]


def grid_scenes(caption: tuple, frames: int, grid: int, motion_start: str) -> list[dict]:
    """Scenes on a midpoint grid over the prior of one caption's clips, all equally likely.

    ``caption`` is (color, shape, direction, speed); sizes take ``SIZE_STEPS`` values, each
    start coordinate ``grid`` values (one where ``motion_start=edge`` fixes it) — a
    discretisation of the uniform prior :func:`sned.data.synthetic.sample_attributes` draws from.
    """
    color, shape, direction, speed = caption
    vx, vy = DIRECTION_VECTORS[direction]
    travel = SPEED_VALUES[speed] * (frames - 1)
    scenes = []
    for size in _midpoints(*SIZE_RANGE[False], SIZE_STEPS):
        axes = []
        for v in (vx, vy):
            support = start_support(size, v * travel, motion_start == "edge")
            if support is None:
                raise ValueError(f"speed {speed!r} wraps in {frames} frames; not supported")
            axes.append(_midpoints(*support, grid))
        for x0, y0 in itertools.product(*axes):
            scenes.append({"objects": [{"color": color, "shape": shape, "direction": direction,
                                        "speed": speed, "size": size, "start": (x0, y0)}]})
    return scenes


def render_flat(scenes: list[dict], frames: int, resolution: int) -> torch.Tensor:
    """(len(scenes), D) flattened rendered clips."""
    return torch.stack([render(sc, frames, resolution).flatten() for sc in scenes])


def training_captions() -> list[tuple]:
    """Every (color, shape, direction, speed) the training split draws, all equally likely."""
    from sned.data.synthetic import COLORS, DIRECTIONS, SHAPES, SPEEDS
    return [(c, s, d, v) for c in COLORS for s in SHAPES for d in DIRECTIONS for v in SPEEDS
            if (c, s, d) not in HELD_OUT]


def conditions_of(test_caption: tuple, grid_caption: tuple) -> list[str]:
    """Conditions of a test clip whose prior contains ``grid_caption``: ``full`` (same caption)
    and ``no_<attr>`` (the captions agreeing on every other attribute)."""
    diff = [a for a, x, y in zip(ATTRIBUTES, test_caption, grid_caption) if x != y]
    if not diff:
        return ["full"] + [f"no_{a}" for a in ATTRIBUTES]
    return [f"no_{diff[0]}"] if len(diff) == 1 else []


def ideal_losses(test: torch.Tensor, test_captions: list[tuple], alpha: torch.Tensor,
                 sigma: torch.Tensor, noise: torch.Tensor, frames: int, resolution: int,
                 grid: int, motion_start: str) -> dict[str, torch.Tensor]:
    """Per-pair ideal v-losses (P,) under the full caption and each caption less one attribute.

    Streams over the training captions: each caption's grid is rendered once and folded into
    every (pair, condition) whose prior contains it by a running log-sum-exp.

    Args:
        test: (P, D) clean test clips with their (color, shape, direction, speed) captions.
        alpha, sigma: (P,) schedule coefficients of each pair's timestep; noise: (P, D).
    """
    names = ["full"] + [f"no_{a}" for a in ATTRIBUTES]
    p, d = test.shape
    xt = (alpha[:, None] * test + sigma[:, None] * noise).double()
    m = torch.full((p, len(names)), -math.inf, dtype=torch.float64)   # running max log-weight
    z = torch.zeros(p, len(names), dtype=torch.float64)               # Σ exp(logw − m)
    acc = torch.zeros(p, len(names), d, dtype=torch.float64)          # Σ exp(logw − m) x_i
    for caption in training_captions():
        rows = [(i, [names.index(c) for c in conditions_of(tc, caption)])
                for i, tc in enumerate(test_captions)]
        rows = [(i, cs) for i, cs in rows if cs]
        if not rows:
            continue
        clips = render_flat(grid_scenes(caption, frames, grid, motion_start), frames,
                            resolution).double()                                 # (G, D)
        idx = torch.tensor([i for i, _ in rows])
        a, s = alpha[idx].double(), sigma[idx].double()
        x = xt[idx]                                                              # (R, D)
        d2 = (x.square().sum(1, keepdim=True) - 2 * a[:, None] * (x @ clips.T)
              + a[:, None] ** 2 * clips.square().sum(1)[None]).clamp_(min=0)     # (R, G)
        logw = -d2 / (2 * s[:, None] ** 2) - math.log(len(clips))
        for r, (i, cs) in enumerate(rows):
            top = float(logw[r].max())
            w = torch.exp(logw[r] - top)
            part_z, part_acc = float(w.sum()), w @ clips
            for c in cs:
                new = max(float(m[i, c]), top)
                old_scale = math.exp(float(m[i, c]) - new) if m[i, c] > -math.inf else 0.0
                new_scale = math.exp(top - new)
                z[i, c] = z[i, c] * old_scale + part_z * new_scale
                acc[i, c] = acc[i, c] * old_scale + part_acc * new_scale
                m[i, c] = new
    x0_hat = acc / z[..., None]
    err = (x0_hat - test.double()[:, None, :]).square().mean(-1) / sigma.double()[:, None] ** 2
    return {name: err[:, k].float() for k, name in enumerate(names)}


def summarise(losses: dict[str, torch.Tensor], t: torch.Tensor, steps: int) -> dict:
    """Gains ``loss(no_attr) − loss(full)`` with 95 % intervals, overall and per noise quartile."""
    full = losses["full"]
    quartile = (t * 4 // steps).clamp(max=3)
    res = {"full": _mean_ci(full), "gain": {}}
    for a in ATTRIBUTES:
        g = losses[f"no_{a}"] - full
        s = _mean_ci(g)
        s["by_noise_quartile"] = [_mean_ci(g[quartile == q]) for q in range(4)]
        res["gain"][a] = s
    return res


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--pairs", type=int, default=512, help="test (clip, t, noise) pairs")
    ap.add_argument("--grid", type=int, nargs="+", default=[12, 24],
                    help="grid points per start axis (several: an integration check)")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--resolution", type=int, default=16)
    ap.add_argument("--motion-start", nargs="+", default=["anywhere", "edge"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    objective = Objective(DiffusionConfig())
    steps = objective.cfg.num_train_timesteps
    ac = objective.scheduler.alphas_cumprod.double()
    gen = torch.Generator().manual_seed(args.seed)
    # stratified uniform timesteps: the training loss's weighting, with less sampling noise
    t = ((torch.arange(args.pairs) + torch.rand(args.pairs, generator=gen)) * steps
         / args.pairs).long().clamp(max=steps - 1)
    alpha, sigma = ac[t].sqrt().float(), (1 - ac[t]).sqrt().float()
    report = {"meta": {
        "command": "python benchmarks/bench_ideal_gain.py " + " ".join(
            sys.argv[1:] if argv is None else argv),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True).stdout.strip(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread",
        "pairs": args.pairs, "frames": args.frames, "resolution": args.resolution,
        "size_steps": SIZE_STEPS, "diffusion": objective.cfg.to_dict()}, "results": {}}
    args.out.mkdir(parents=True, exist_ok=True)
    for start in args.motion_start:
        report["results"][start] = {}
        for grid in args.grid:
            t0 = time.time()
            # test clips drawn from the same discretised prior the posterior integrates over
            rng = np.random.default_rng([args.seed, grid])
            all_captions = training_captions()
            captions = [all_captions[int(rng.integers(len(all_captions)))]
                        for _ in range(args.pairs)]
            scenes = []
            for c in captions:
                grid_of_c = grid_scenes(c, args.frames, grid, start)
                scenes.append(grid_of_c[int(rng.integers(len(grid_of_c)))])
            test = render_flat(scenes, args.frames, args.resolution)
            noise = torch.randn(test.shape, generator=torch.Generator().manual_seed(args.seed))
            losses = ideal_losses(test, captions, alpha, sigma, noise, args.frames,
                                  args.resolution, grid, start)
            s = summarise(losses, t, steps)
            s["seconds"] = round(time.time() - t0, 1)
            report["results"][start][f"grid{grid}"] = s
            print(f"[ideal-gain] {start} grid {grid} ({s['seconds']:.0f} s): full "
                  f"{s['full']['mean']:.5f}; " + ", ".join(
                      f"{a} +{g['mean']:.5f} [{g['ci95'][0]:.5f}, {g['ci95'][1]:.5f}]"
                      for a, g in s["gain"].items()), flush=True)
            (args.out / "ideal-gain.json").write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
