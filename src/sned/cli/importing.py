"""``sned import``: convert a diffusers ``UNet2DModel`` into a sned model folder.

The folder is a :class:`~sned.pipelines.diffusers_pipeline.SnedPipeline` folder (``unet/`` is
the static :class:`~sned.models.unet.VideoUNet` of one frame, ``scheduler/`` the source's
schedule) plus ``video.yaml``: the config of a video supernet of the same family (temporal
attention added), for ``sned train OUT/video.yaml --init-from OUT``. ``sned diffnas OUT`` takes
it as a teacher. Unmappable models are refused (exit 2, naming the block and the attribute)
before anything is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from pathlib import Path

import yaml

from ..config import ConfigError, ModelConfig
from ..convert.unet2d import config_from_unet2d, import_unet2d, load_unet2d_config
from ..diffusion import BETA_SCHEDULES, DiffusionConfig, make_scheduler
from ..extract import front_matter, refuse_existing
from ..space import SearchSpace
from ..store.files import atomic_folder

DDPM_DEFAULT = DiffusionConfig(num_train_timesteps=1000, beta_schedule="linear",
                               beta_start=1e-4, beta_end=0.02, prediction_type="epsilon")
"""The schedule of a bare UNet2DModel folder (no scheduler next to it): DDPM's."""


def import_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="diffusers UNet2DModel folder (config.json + "
                                  "diffusion_pytorch_model.safetensors) or a pipeline folder "
                                  "with unet/ (and scheduler/)")
    p.add_argument("--out", required=True, help="output model folder (new, or empty)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a model folder an earlier command wrote at --out")
    p.add_argument("--name", help="config name of the imported model (default: the source "
                                  "folder's name)")
    p.add_argument("--frames", type=int, default=8,
                   help="frames of the video supernet config written to OUT/video.yaml")
    p.add_argument("--base-model", help="hub id of the source for the card's base_model "
                                        "(default: the source's _name_or_path when it is one)")
    p.add_argument("--license", default="other",
                   help="license of the source weights for the card (default 'other': sned "
                        "cannot know it)")


def source_diffusion(source: Path) -> tuple[DiffusionConfig, str]:
    """The source pipeline's schedule (``scheduler/scheduler_config.json``) or DDPM's; with a
    note saying which."""
    path = source / "scheduler" / "scheduler_config.json"
    if not path.is_file():
        return DDPM_DEFAULT, "no scheduler next to the UNet: DDPM's linear schedule, epsilon"
    try:
        c = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid JSON: {e}") from None
    schedule = {v: k for k, v in BETA_SCHEDULES.items()}.get(c.get("beta_schedule", "linear"))
    if schedule is None or c.get("prediction_type", "epsilon") not in ("epsilon",
                                                                       "v_prediction"):
        bad = "beta_schedule" if schedule is None else "prediction_type"
        raise ConfigError(f"{path}: {bad}={c.get(bad)!r} has no sned counterpart")
    return DiffusionConfig(num_train_timesteps=int(c.get("num_train_timesteps", 1000)),
                           beta_schedule=schedule, beta_start=float(c.get("beta_start", 1e-4)),
                           beta_end=float(c.get("beta_end", 0.02)),
                           prediction_type=c.get("prediction_type", "epsilon")), str(path)


def video_config(cfg: ModelConfig, frames: int) -> ModelConfig:
    """The video supernet of ``cfg``'s family: temporal attention after the ResBlock in every
    level with attention (the lowest-resolution level when there is none) and in the first
    middle block; ``frames`` frames."""
    attn_levels = [i for i, lv in enumerate(cfg.levels) if "spatial_attn" in lv.components]
    attn_levels = attn_levels or [len(cfg.levels) - 1]
    levels = tuple(dataclasses.replace(lv, components=tuple(lv.components) + ("temporal_attn",))
                   if i in attn_levels else lv for i, lv in enumerate(cfg.levels))
    mid0, mid1 = cfg.mid_block_components(0), cfg.mid_block_components(1)
    return dataclasses.replace(cfg, name=f"{cfg.name}-video", levels=levels, frames=frames,
                               mid_components=(tuple(mid0) + ("temporal_attn",), tuple(mid1)))


def run_import(args: argparse.Namespace) -> int:
    source = Path(args.source)
    if not source.exists():
        raise ConfigError(f"sned import: source {str(source)!r} does not exist")
    if args.frames < 1:
        raise ConfigError(f"--frames must be >= 1 (got {args.frames})")
    out = refuse_existing(args.out, args.overwrite, [source])
    name = args.name or source.resolve().name
    conf, unet_dir = load_unet2d_config(source)
    cfg = config_from_unet2d(conf, name)  # refused here, before anything is read or written
    diffusion, schedule_note = source_diffusion(source)
    model = import_unet2d(source, name)
    hub = args.base_model or conf.get("_name_or_path")
    if hub and (Path(hub).exists() or not re.fullmatch(r"[\w.-]+/[\w.-]+", str(hub))):
        hub = args.base_model  # a local path is not a hub id
    space = SearchSpace(cfg)
    cost = space.cost(model.arch)
    card = {"config": name, "kind": "base", "subnet": "imported", "conditional": False,
            "resolution": model.arch.resolution, "frames": 1, "params": cost.params,
            "macs": cost.macs, "source": str(source.resolve()),
            "imported_from": "diffusers UNet2DModel", "schedule": schedule_note,
            "tags": ["imported"]}
    if hub:
        card["base_model"] = hub
    model.register_to_config(sned={"diffusion": diffusion.to_dict(), "card": card})
    from ..pipelines.diffusers_pipeline import SnedPipeline

    pipe = SnedPipeline(unet=model, scheduler=make_scheduler(diffusion, "ddim"))
    video = video_config(cfg, args.frames).to_dict()
    text = (f"# {name}: a diffusers UNet2DModel in sned\n\n"
            f"Converted from `{source}` by `sned import` (forward equal to diffusers' in fp32). "
            f"{cost.params:,} parameters, {cost.macs:,} MACs per forward at "
            f"{model.arch.resolution}px (batch 1). Schedule: {schedule_note}.\n\n"
            f"- generate: `sned.SnedPipeline.from_pretrained(folder)(num_frames=1, "
            f"num_videos_per_prompt=4)`\n"
            f"- shrink it: `sned diffnas {out} --out DIR`\n"
            f"- start a video supernet from it: `sned train {out}/video.yaml --init-from "
            f"{out} --out RUN`\n")
    with atomic_folder(out) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        (tmp / "README.md").write_text(front_matter(card, args.license) + text)
        (tmp / "arch.json").write_text(model.arch.to_json(indent=1) + "\n")
        (tmp / "video.yaml").write_text(
            "# video supernet of the imported model's family (sned import)\n"
            + yaml.safe_dump(video, sort_keys=False))
    print(json.dumps({"out": str(out), "config": name, "params": cost.params,
                      "macs": cost.macs, "resolution": model.arch.resolution,
                      "levels": [dataclasses.asdict(lv) for lv in cfg.levels]}))
    return 0


__all__ = ["import_args", "run_import", "source_diffusion", "video_config"]
