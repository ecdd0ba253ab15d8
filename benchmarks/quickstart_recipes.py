"""Quality of quickstart training recipes at a fixed step count (docs/results.md).

A fixed number of steps (not a wall-time budget) so that machine load cannot change the result:

    # base recipes: caption accuracy of presets S and B at 16 px on the 36 held-out prompts
    python benchmarks/quickstart_recipes.py base --out /tmp/r0 --steps 250 \
        model.pooled_text=false "model.resolutions=[16,32]" "train.batch_size_per_resolution={32: 2}"
    python benchmarks/quickstart_recipes.py base --out /tmp/r1 --steps 250     # the quickstart's
    # SSR recipes: consistency of each SSR stage behind a trained base run
    python benchmarks/quickstart_recipes.py ssr --out /tmp/s1 --steps 150 --base /tmp/r1

Extra ``key=value`` arguments override the quickstart's recipe (``sned.app.quickstart.QUICK_BASE``
/ ``QUICK_SSR``). ``--eval-only`` re-evaluates an existing run (e.g. with another
``--guidance``). Prints one JSON line per (preset, stage).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from sned.data.synthetic import held_out_prompts
from sned.app.evaluation import EvalSettings, evaluate_preset
from sned.pipelines.loading import load_denoiser
from sned.app.quickstart import GUIDANCE, QUICK_BASE, QUICK_SSR, SAMPLE_STEPS, train_supernet

KEYS = ("preset", "resolution", "val_loss", "caption_color", "caption_shape",
        "caption_direction", "caption_all", "caption_n", "ssr_psnr_db", "ssr_psnr_ci")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("stage", choices=("base", "ssr"))
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--steps", type=int, default=250)
    p.add_argument("--base", type=Path, help="ssr: the trained base run the cascade starts from")
    p.add_argument("--presets", default="S,B")
    p.add_argument("--prompts", type=int, default=36)
    p.add_argument("--sample-steps", type=int, default=SAMPLE_STEPS)
    p.add_argument("--ssr-steps", type=int, default=3)
    p.add_argument("--guidance", type=float, default=GUIDANCE)
    p.add_argument("--eval-only", action="store_true")
    p.add_argument("overrides", nargs="*")
    a = p.parse_args()
    if a.stage == "ssr" and a.base is None:
        p.error("ssr needs --base RUN")
    dev = torch.device("cpu")
    if not a.eval_only:
        config, recipe = ("tiny-base", QUICK_BASE) if a.stage == "base" else ("tiny-ssr", QUICK_SSR)
        train_supernet(a.stage, config, recipe + a.overrides, a.out, 1e9, dev, a.steps)
    texts = held_out_prompts()[:a.prompts]
    settings = EvalSettings(metrics=("caption", "val_loss", "consistency"),
                            prompts=lambda n, run: texts[:n], n_videos=len(texts),
                            scheduler="dpm", guidance=a.guidance, batch=len(texts),
                            steps=a.sample_steps if a.stage == "base" else [a.sample_steps, a.ssr_steps],
                            every_stage=True,
                            val_videos=16, progress=False)
    for preset in a.presets.split(","):
        if a.stage == "base":
            base, ssr = load_denoiser(a.out, preset=preset, device=dev), []
        else:
            base = load_denoiser(a.base, preset="B", device=dev)
            ssr = [load_denoiser(a.out, preset=preset, device=dev)]
        for row in evaluate_preset(preset, base, ssr, settings):
            print(json.dumps({k: row.get(k) for k in KEYS}), flush=True)


if __name__ == "__main__":
    main()
