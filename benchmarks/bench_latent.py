"""Latent path speed: sampling presets vs B *including the decoder*, and autoencoder throughput.

1. For presets B / 0.75 / 0.5 / S of a latent config (extracted models), one unconditional video
   is sampled — ``steps`` denoiser forwards on the latents, then one decoder forward — with
   :func:`sned.pipelines.sample_latent`. The presets alternate every round after a warm-up
   (``side_by_side`` of ``bench_supernet.py``); the table gives the median ms, the IQR and the
   per-round paired speed-up B / preset, next to the MACs ratio (UNet × steps + decoder).
2. The autoencoder's encode and decode throughput (clips / s) at each of its resolutions.

Random weights (latency only). Examples::

    python benchmarks/bench_latent.py --steps 10 --repeats 5
    python benchmarks/bench_latent.py --config latent-base --device cuda --steps 50
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from bench_supernet import side_by_side
from sned.config import load_config
from sned.cost import decoder_cost
from sned.extract import extract
from sned.models.codec import LatentCodec, LatentStats
from sned.models.autoencoder import VideoAutoencoder
from sned.models.unet import VideoUNet
from sned.pipelines import sample_latent
from sned.space import SearchSpace

PRESETS = ("B", "0.75", "0.5", "S")


def sampling(cfg, codec, device, steps: int, warmup: int, repeats: int) -> dict:
    space = SearchSpace(cfg)
    torch.manual_seed(0)
    supernet = VideoUNet(cfg).to(device).eval()
    frames = codec.pixel_frames(cfg.frames)
    dec, _, _ = decoder_cost(cfg)
    fns, rows = {}, {}
    for p in PRESETS:
        arch = space.preset(p)
        model = extract(supernet, arch)
        unet = space.cost(arch).macs
        rows[p] = {"params": space.cost(arch).params, "total_macs": steps * unet + dec.macs}

        def run(model=model):
            sample_latent(model, codec, batch=1, steps=steps, frames=frames, progress=False)
        fns[p] = run
    t = side_by_side(fns, device, warmup, repeats)
    for p in PRESETS:
        rows[p]["ms"] = t[p]
        if p != "B":
            rows[p]["speedup_vs_B"] = t[f"B/{p}"]
            rows[p]["macs_ratio_vs_B"] = rows["B"]["total_macs"] / rows[p]["total_macs"]
    return rows


def ae_throughput(ae: VideoAutoencoder, device, batch: int, warmup: int, repeats: int) -> dict:
    cfg, out = ae.config, {}
    for res in cfg.resolutions:
        x = torch.rand(batch, 3, cfg.frames, res, res, device=device) * 2 - 1
        with torch.no_grad():
            z = ae.encode(x).mode()
            t = side_by_side({"encode": lambda: ae.encode(x).mode(),
                              "decode": lambda: ae.decode(z)}, device, warmup, repeats)
        out[res] = {k: {"ms": t[k]["median"], "clips_per_s": batch / t[k]["median"] * 1e3}
                    for k in ("encode", "decode")}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="tiny-latent")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ae-batch", type=int, default=2)
    args = ap.parse_args()
    device = torch.device(args.device)
    cfg = load_config(args.config)
    torch.manual_seed(0)
    ae = VideoAutoencoder(load_config(cfg.autoencoder)).to(device).eval()
    codec = LatentCodec(ae, LatentStats())
    t0 = time.perf_counter()
    result = {"config": cfg.name, "device": str(device), "steps": args.steps,
              "threads": torch.get_num_threads(),
              "sampling": sampling(cfg, codec, device, args.steps, args.warmup, args.repeats),
              "autoencoder": ae_throughput(ae, device, args.ae_batch, args.warmup,
                                           args.repeats)}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
