"""``sned quickstart``: the whole SNED workflow on the embedded synthetic data, in minutes.

1. train a tiny base supernet (16/32 px) and a tiny SSR supernet (32/64 px) — super-position
   training with the sampling warm-up, exact freezing and EMA — within a wall-time budget;
2. extract the S/M/L/B subnets of both as standalone model folders;
3. generate a few prompts through the cascade base → SSR → SSR with every preset, keeping every
   stage's output (16, 32 and 64 px);
4. measure params, MACs, denoiser latency, sampling time, validation loss and caption accuracy
   per resolution and preset;
5. write ``report.md`` / ``report.html`` with tables, plots and the videos.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

# Short clips and per-resolution batches keep a 2-core CPU busy with many small steps: the
# supernets need several hundred steps to draw coloured moving shapes.
_COMMON = ["model.frames=4", "data.num_videos=4096", "train.lr=1e-3", "train.lr_warmup_steps=20",
           "train.ema_decay=0.995", "train.checkpoint_every=200", "train.log_every=5"]
QUICK_BASE = _COMMON + ["train.batch_size=8", "train.batch_size_per_resolution={32: 2}"]
QUICK_SSR = _COMMON + ["train.batch_size=4", "train.batch_size_per_resolution={64: 1}"]
PRESETS = ("S", "M", "L", "B")


@dataclass
class Budget:
    """Wall-time plan for the run (seconds)."""

    total: float
    start: float

    def left(self) -> float:
        return self.total - (time.monotonic() - self.start)


def _say(msg: str) -> None:
    print(f"[quickstart] {msg}", flush=True)


def _calibrate(run, device: torch.device) -> float:
    """Seconds per training step of the largest subnet (3 timed forward+backward passes)."""
    from .inputs import example_inputs
    from .models.unet import VideoUNet

    torch.manual_seed(0)
    model = VideoUNet(run.model).to(device).train()
    res = max(run.model.resolutions)
    kw = example_inputs(model, batch=run.train.batch_for(res), resolution=res)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        model(**kw).square().mean().backward()
        times.append(time.perf_counter() - t)
    # resolutions are drawn uniformly and subnets are smaller on average than B
    return sorted(times)[1] * 0.75


def train_supernet(name: str, config: str, overrides: list[str], out: Path, seconds: float,
                   device: torch.device, max_steps: int | None = None) -> Path:
    """Train ``config`` for about ``seconds``; the warm-up takes the first third of the steps."""
    from .train.config import load_run_config
    from .train.trainer import Trainer

    probe = load_run_config(config, overrides)
    step_s = _calibrate(probe, device)
    steps = max(20, int(seconds / step_s))
    if max_steps:
        steps = min(steps, max_steps)
    run = load_run_config(config, overrides + [f"train.steps={steps}",
                                               f"train.warmup_steps={max(1, steps // 3)}",
                                               f"train.device={device.type}"])
    _say(f"training {name} supernet ({config}): ~{steps} steps in ≤ {seconds:.0f} s "
         f"(warm-up {steps // 3} steps)")
    trainer = Trainer(run, out, progress=True, overwrite=True)  # a rerun starts afresh
    trainer.fit(max_seconds=seconds)
    if trainer.interrupted:
        raise KeyboardInterrupt
    return out


def quickstart(out: str | Path = "quickstart", minutes: float = 10.0, device: str = "auto",
               prompts: int = 4, sample_steps: int = 20, max_steps: int | None = None) -> Path:
    """Run the whole workflow; returns the path of ``report.html``."""
    from .cli_generate import export_subnet
    from .data.synthetic import sample_prompts
    from .loading import load_denoiser

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    budget = Budget(minutes * 60, time.monotonic())
    _say(f"output folder {out.resolve()}, budget {minutes:g} min, device {dev}")
    train_share = 0.75 * budget.total
    train_supernet("base", "tiny-base", QUICK_BASE, out / "runs" / "base", 0.6 * train_share,
                   dev, max_steps)
    train_supernet("ssr", "tiny-ssr", QUICK_SSR, out / "runs" / "ssr", 0.4 * train_share, dev,
                   max_steps)

    _say("extracting presets S/M/L/B of both supernets (EMA weights)")
    folders = {}
    for kind in ("base", "ssr"):
        for p in PRESETS:
            den = load_denoiser(out / "runs" / kind, preset=p, ema=True, device=dev)
            folders[kind, p] = export_subnet(den, out / "models" / f"{kind}-{p}", ema=True)

    text = sample_prompts(prompts, seed=7)
    rows, media = evaluate_presets(out, folders, text, dev, sample_steps)
    report = write_quickstart_report(out, rows, media, text, budget)
    _say(f"done in {(time.monotonic() - budget.start) / 60:.1f} min: {report}")
    return report


def evaluate_presets(out: Path, folders: dict, prompts: list[str], device: torch.device,
                     steps: int) -> tuple[list[dict], dict]:
    """Cascade samples + metrics for every preset at 16 / 32 / 64 px."""
    from .inputs import example_inputs
    from .loading import load_denoiser
    from .metrics.caption import caption_accuracy
    from .metrics.latency import denoiser_latency
    from .metrics.val_loss import synthetic_proxy
    from .pipelines.cascade import Stage, generate
    from .space import SearchSpace
    from .text import TextEncoder
    from .video_io import to_uint8, write_frame_grid, write_video

    rows, media = [], {}
    (out / "videos").mkdir(exist_ok=True)
    enc = None
    init = {kind: _initial_supernet(out / "runs" / kind, device) for kind in ("base", "ssr")}
    for p in PRESETS:
        base = load_denoiser(folders["base", p], device=device)
        ssr = load_denoiser(folders["ssr", p], device=device)
        if enc is None:
            enc = TextEncoder(max_length=base.config.text_len, device=str(device))
        emb, mask = enc.encode(prompts)
        _say(f"sampling preset {p}: base 16px → SSR 32px → SSR 64px, {len(prompts)} prompts")
        t0 = time.perf_counter()
        final, stages = generate(emb, mask, base=Stage.from_denoiser(base),
                                 ssr=Stage.from_denoiser(ssr), final_resolution=64,
                                 steps=steps, guidance_scale=[3.0, 1.0, 1.0], seed=0,
                                 return_stages=True)
        wall = time.perf_counter() - t0
        cum_params, cum_macs = 0, 0
        for k, video in enumerate(stages):
            den = base if k == 0 else ssr
            res = video.shape[-1]
            space = SearchSpace(den.config)
            arch = den.model.arch
            cost = space.cost(arch, resolution=res)
            cum_params += cost.params if k < 2 else 0  # the SSR weights are shared by 2 steps
            cum_macs += cost.macs
            kw = example_inputs(den.model, batch=1, resolution=res, seed=k)
            latency = denoiser_latency(den.model, None, kw, warmup=2, repeats=5)
            proxy = synthetic_proxy(den.model, den.diffusion, res, n_videos=16)
            init_proxy = synthetic_proxy(init["base" if k == 0 else "ssr"], den.diffusion, res,
                                         n_videos=16)
            frames = to_uint8(video)
            acc = caption_accuracy(frames, prompts)
            rows.append({"resolution": res, "preset": p, "stage": den.config.name,
                         "params": cost.params, "macs": cost.macs, "cascade_params": cum_params,
                         "cascade_macs": cum_macs, "latency_ms": latency,
                         "sample_s": wall if k == len(stages) - 1 else None,
                         "val_loss": proxy(None), "val_loss_init": init_proxy(arch),
                         "caption_all": acc["all_correct"], "caption_color": acc["color"],
                         "caption": {k2: acc[k2] for k2 in ("color", "shape", "direction")}})
            vids = []
            for i, prompt in enumerate(prompts[:3]):
                stem = f"{res}px_{p}_{i}"
                gif = write_video(out / "videos" / f"{stem}.gif", frames[i], fps=6)
                mp4 = write_video(out / "videos" / f"{stem}.mp4", frames[i], fps=6)
                vids.append((f"{p} · {prompt}", str(gif.relative_to(out)),
                             str(mp4.relative_to(out))))
            write_frame_grid(out / "videos" / f"grid_{res}px_{p}.png", frames)
            media.setdefault(res, []).extend(vids)
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    return rows, media


def _initial_supernet(run_dir: Path, device: torch.device):
    """The supernet exactly as training initialised it (same seed), for before/after losses."""
    from .models.unet import VideoUNet
    from .train.config import load_run_config

    raw = json.loads((run_dir / "run_config.json").read_text())
    run = load_run_config(raw)
    torch.manual_seed(run.train.seed)
    return VideoUNet(run.model).to(device).eval()


def write_quickstart_report(out: Path, rows: list[dict], media: dict, prompts: list[str],
                            budget: Budget) -> Path:
    from .report import plot_cost_quality, plot_loss_curve, write_report

    plot_cost_quality(out / "cost_vs_val_loss.png", rows)
    plot_cost_quality(out / "cost_vs_caption.png", rows, "caption_all",
                      "caption accuracy (all attributes)")
    plot_loss_curve(out / "training_loss.png", {k: out / "runs" / k / "metrics.jsonl"
                                                for k in ("base", "ssr")})
    steps = {k: sum(1 for _ in open(out / "runs" / k / "metrics.jsonl")) for k in ("base", "ssr")}
    sections = [{"title": "Training",
                 "text": f"Two supernets trained on the synthetic captioned-shapes set with "
                         f"super-position (base at 16 and 32 px, SSR at 32 and 64 px), "
                         f"sampling warm-up over the first third of the steps and exact "
                         f"freezing: base {steps['base']} steps, SSR {steps['ssr']} steps.",
                 "images": ["training_loss.png"] if (out / "training_loss.png").exists() else []}]
    fell = sum(r["val_loss"] < r["val_loss_init"] for r in rows)
    sections[0]["text"] += (f" Validation loss fell from initialisation in {fell} of {len(rows)} "
                            f"(resolution, preset) pairs.")
    for res in sorted(media):
        sel = [r for r in rows if r["resolution"] == res]
        kind = "base model alone" if res == 16 else f"cascade up to {res}px"
        sections.append({"title": f"{res}×{res} ({kind})",
                         "text": "Params/GMACs: the model producing this resolution (one "
                                 "denoiser forward, batch 1). Denoiser ms: median forward "
                                 "latency on this machine. Sample s: the whole cascade for "
                                 f"{len(prompts)} prompts. Caption acc.: colour, shape and "
                                 "motion all recovered from the pixels; Colour acc.: the "
                                 "colour alone.",
                         "rows": sel, "videos": media[res]})
    sections.append({"title": "Cost vs quality",
                     "images": [p for p in ("cost_vs_val_loss.png", "cost_vs_caption.png")
                                if (out / p).exists()]})
    sections.append({"title": "Files",
                     "text": "runs/base and runs/ssr: training runs (metrics.jsonl, "
                             "checkpoints/latest, tensorboard/). models/: extracted subnets "
                             "(load with sned.load_pretrained). results.json: every number "
                             "above. FVD/KVD need the I3D weights: see `sned evaluate`."})
    intro = (f"One supernet per model, served at four sizes without retraining. Prompts: "
             f"{'; '.join(prompts)}. Generated {time.strftime('%Y-%m-%d %H:%M')}, "
             f"{(time.monotonic() - budget.start) / 60:.1f} min.")
    _, html_path = write_report(out, "sned quickstart", intro, sections)
    return html_path
