"""The quickstart's latent section (SNED §4.3 in miniature): a tiny video autoencoder, then a
tiny latent supernet on its latents, served at presets B / 0.75 / 0.5.

:func:`run_latent` trains ``tiny-ae`` (super-position over 16 / 32 px) and ``tiny-latent``
(through the frozen AE) within a small time budget, extracts every preset as a standalone folder
(decoder included), samples a few unconditional videos per preset, and measures params, MACs
(UNet per step and the decoder), latency (denoiser forward, decode, and a whole sample),
validation loss and the AE's reconstruction PSNR / SSIM. :func:`section_latent` writes the
report section.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..pipelines.export import export_subnet
from ..models.codec import load_autoencoder
from ..pipelines.loading import load_denoiser
from ..store.files import write_json
from ..video_io import write_video
from .evaluation import EvalSettings, evaluate_autoencoder, evaluate_preset
from .timed_training import train_for

PRESETS = ("B", "0.75", "0.5")
QUICK_AE = ["model.frames=4", "data.num_videos=1024", "train.batch_size=4", "train.lr=1e-3",
            "train.ema_decay=0", "train.checkpoint_every=100000", "train.log_every=5"]
QUICK_LATENT = ["data.num_videos=1024", "train.batch_size=8", "train.lr=1e-3",
                "train.ema_decay=0.99", "train.checkpoint_every=100000", "train.log_every=5"]
AE_SHARE = 0.4
"""Share of the latent section's training time spent on the autoencoder."""
LATENT_MIN_STEPS = {"ae": 60, "latent": 100}
"""Steps each model trains at least, whatever the clock says (the quickstart's minimum)."""


def run_latent(out: Path, seconds: float, device: torch.device, sample_steps: int,
               max_steps: int | None = None, videos: int = 2) -> dict:
    """Train, extract, sample and measure; returns ``{"rows", "ae", "steps"}`` (also written
    to ``out/latent_results.json``)."""
    runs, models, vids = out / "runs", out / "models", out / "videos"
    print(f"[quickstart] latent: tiny-ae then tiny-latent in ≤ {seconds:.0f} s", flush=True)
    def say(msg: str) -> None:
        print(f"[quickstart] latent: {msg}", flush=True)

    steps = {"ae": train_for("tiny-ae", QUICK_AE, runs / "ae", AE_SHARE * seconds, device,
                             max_steps, say=say, min_steps=LATENT_MIN_STEPS["ae"])}
    steps["latent"] = train_for("tiny-latent", QUICK_LATENT + [f"autoencoder={runs / 'ae'}"],
                                runs / "latent", (1 - AE_SHARE) * seconds, device, max_steps,
                                say=say, min_steps=LATENT_MIN_STEPS["latent"])
    ae, _ = load_autoencoder(runs / "ae", device)
    ae_rows = evaluate_autoencoder(ae, n_videos=4)
    media: list[tuple[str, str]] = []

    def keep(ctx) -> None:
        for i, v in enumerate(ctx.videos[0][:videos]):
            gif = write_video(vids / f"latent_{ctx.preset}_{i}.gif", v, fps=6)
            media.append((f"latent {ctx.preset}", str(gif.relative_to(out))))

    settings = EvalSettings(metrics=("latency", "val_loss"), n_videos=videos, steps=sample_steps,
                            batch=videos, val_videos=8, latency_repeats=3, progress=False)
    vids.mkdir(parents=True, exist_ok=True)
    rows = []
    for p in PRESETS:
        folder = export_subnet(load_denoiser(runs / "latent", preset=p, device=device),
                               models / f"latent-{p}", overwrite=True)
        rows += evaluate_preset(p, load_denoiser(folder, device=device), [], settings,
                                on_stage=keep)
    psnr = {r["resolution"]: r["psnr"] for r in ae_rows}
    for r in rows:
        r["ae_psnr_db"] = psnr.get(r["resolution"])
    result = {"rows": rows, "ae": ae_rows, "steps": steps, "media": media}
    write_json(out / "latent_results.json", result)
    return result


def section_latent(out: Path, result: dict | None) -> list[dict]:
    """The report section: the preset table and a few decoded videos."""
    if not result:
        return []
    rows = [{"preset": r["preset"], "resolution": r["resolution"], "params": r["params"],
             "unet_macs_per_step": r["macs"], "decoder_macs": r["decoder_macs"],
             "latency_ms": round(r["latency_ms"], 2), "decode_ms": round(r["decode_ms"], 2),
             "sample_ms": round(r["latency_total_ms"], 1),
             "val_loss": round(r["val_loss"], 4), "ae_psnr_db": r["ae_psnr_db"]}
            for r in result["rows"]]
    ae = ", ".join(f"{r['resolution']} px: PSNR {r['psnr']:.2f} dB, SSIM {r['ssim']:.3f}"
                   for r in result["ae"])
    s = result["steps"]
    return [{"title": "Latent space (tiny-ae + tiny-latent)",
             "text": f"A video autoencoder (T×2, H×4, W×4, 4 latent channels) trained with "
                     f"super-position over 16 and 32 px for {s['ae']} steps (held-out "
                     f"reconstruction: {ae}), then an unconditional latent supernet on its "
                     f"normalised latents for {s['latent']} steps. Presets are fractions of "
                     f"the supernet's parameters; MACs are one UNet forward on the latents and "
                     f"one decoder forward; sample ms = steps × denoiser + decode.",
             "rows": rows, "columns": COLUMNS,
             "videos": [(label, gif, None) for label, gif in result["media"]]}]


COLUMNS = [("preset", "Preset"), ("resolution", "Video px"), ("params", "UNet params"),
           ("unet_macs_per_step", "UNet MACs / step"), ("decoder_macs", "Decoder MACs"),
           ("latency_ms", "Denoiser ms"), ("decode_ms", "Decode ms"),
           ("sample_ms", "Sample ms"), ("val_loss", "Val loss"), ("ae_psnr_db", "AE PSNR dB")]
