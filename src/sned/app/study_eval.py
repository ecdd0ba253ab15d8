"""The fixed evaluation of every ``sned study`` run (:class:`Evaluator`): the held-out
val-loss proxy per resolution and preset, caption accuracy of sampled videos (and FVD/KVD when
clips are long enough for I3D) at the lowest resolution."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import load_config
from ..data.config import DataConfig
from ..data.heldout import held_out_set
from ..data.synthetic import sample_prompts
from ..metrics.caption import caption_accuracy
from ..metrics.fvd import compute_features, fvd_kvd, real_set_stats
from ..metrics.i3d import I3DWeightsMissing, load_i3d
from ..pipelines.loading import load_denoiser
from ..pipelines.sampling import sample
from ..search.proxy import synthetic_proxy
from ..text import TextEncoder
from ..video_io import to_uint8


class Evaluator:
    """The fixed evaluation every run gets: held-out val-loss proxy per resolution, caption
    accuracy (and FVD/KVD when possible) at ``caption_resolution``."""

    def __init__(self, plan, caption_resolution: int, out: Path, device: str,
                 i3d: str | None = None) -> None:

        cfg = load_config(plan.config)
        self.plan, self.device, self.out = plan, device, out
        self.caption_resolution = caption_resolution
        self.text = TextEncoder(max_length=cfg.text_len, device=device)
        self.prompts = sample_prompts(plan.caption_prompts, seed=90_210, split="held_out")
        self.detector, self.fvd_note = self._detector(i3d)
        self._proxies: dict = {}

    def _detector(self, i3d: str | None):
        if self.plan.frames < 9:
            return None, (f"FVD/KVD not computed: clips have {self.plan.frames} frames and "
                          f"the I3D detector needs >= 9")

        try:
            return load_i3d(i3d, device=self.device), None
        except I3DWeightsMissing as e:
            return None, f"FVD/KVD not computed: {e}"

    def __call__(self, folder: Path, presets: tuple[str, ...], final: bool = True
                 ) -> list[dict]:
        """Rows ``{preset, resolution, val_loss}`` of the run in ``folder`` (its latest
        checkpoint, EMA weights); ``final`` adds the per-pair ``losses`` and, at the caption
        resolution, caption accuracy (and FVD/KVD)."""

        den = load_denoiser(folder, ema=True, device=self.device)
        model, space = den.model, den.space
        rows = []
        for res in model.config.resolutions:
            proxy = self._proxy(model, den.diffusion, res)
            for p in presets:
                arch = space.preset(p, res)
                losses = proxy.per_sample(arch)
                row = {"preset": p, "resolution": res, "val_loss": float(losses.mean())}
                if final:
                    row["losses"] = [round(float(x), 7) for x in losses]
                if final and res == self.caption_resolution:
                    row.update(self._samples(model, den.diffusion, arch))
                rows.append(row)
        return rows

    def _proxy(self, model, diffusion, res: int):
        """The held-out pairs at ``res`` — built once, the same for every model."""
        if res not in self._proxies:
            self._proxies[res] = synthetic_proxy(
                model, diffusion, res, n_videos=self.plan.val_videos, frames=self.plan.frames,
                data=DataConfig(max_objects=self.plan.max_objects), text_encoder=self.text,
                pairs_per_clip=self.plan.pairs_per_clip)
        proxy = self._proxies[res]
        proxy.model = model
        return proxy

    def _samples(self, model, diffusion, arch) -> dict:

        emb, mask = self.text.encode(self.prompts)
        video = sample(model, emb, mask, diffusion=diffusion, arch=arch,
                       steps=self.plan.caption_steps, guidance_scale=self.plan.cfg, seed=0,
                       frames=self.plan.frames, progress=False)
        frames = to_uint8(video)
        acc = caption_accuracy(frames, self.prompts)
        out = {"caption_accuracy": acc["all_correct"],
               "caption": {k: acc[k] for k in ("color", "shape", "direction")}}
        if self.detector is not None:
            out.update(self._fvd(frames))
        return out

    def _fvd(self, frames: np.ndarray) -> dict:

        held = held_out_set(DataConfig(max_objects=self.plan.max_objects), len(frames),
                            self.plan.frames, self.caption_resolution)
        real = real_set_stats(held, self.out / "cache", self.detector, device=self.device)
        fake = compute_features([frames], self.detector, device=self.device, keep_features=True)
        scores = fvd_kvd(real, fake)
        return {"fvd": float(scores["fvd"]),
                "kvd": None if scores["kvd"] is None else float(scores["kvd"])}
