"""Diffusion-training inputs for DiffNAS: noised training batches and fixed held-out batches.

Training batches come from the Trainer's dataset and step-indexed loader (so the order is a pure
function of the seed), are resized to the teacher's resolution and noised by the shared
:class:`~sned.diffusion.Objective` at random timesteps. Held-out batches are the validation-loss
proxy's fixed held-out clips, timesteps and noise (:mod:`sned.metrics.val_loss`).
"""

from __future__ import annotations

from typing import Iterator

import torch

from ..diffusion import DiffusionConfig, Objective
from ..metrics import val_loss
from ..metrics.val_loss import ValLossProxy
from ..models.unet import VideoUNet
from ..train.config import DataConfig
from ..data.transforms import resize_video
from ..train.data import build_dataset, make_loader


def noised_batches(model: VideoUNet, data: DataConfig, diffusion: DiffusionConfig,
                   resolution: int, batch: int, seed: int, text, start: int = 0,
                   cfg_drop_prob: float = 0.1) -> Iterator[dict]:
    """Endless training batches from step ``start``: dicts with ``inputs`` (forward kwargs),
    ``target`` (B, C, T, H, W) and ``t`` (B,). Captions are dropped with ``cfg_drop_prob``
    (classifier-free guidance, as in supernet training)."""
    objective = Objective(diffusion)
    device = next(model.parameters()).device
    loader = make_loader(build_dataset(data, model.config), data, batch, seed, start)
    for step, b in enumerate(loader, start):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        video = resize_video(b["video"], resolution).to(device)
        emb, mask = text.encode(list(b["caption"]))
        n = video.shape[0]
        t = torch.randint(0, diffusion.num_train_timesteps, (n,), generator=g).to(device)
        noise = torch.randn(video.shape, generator=g).to(device)
        keep = (torch.rand(n, generator=g) >= cfg_drop_prob).to(device)
        xt, target = objective.noisy(video, noise, t)
        yield {"inputs": {"sample": xt, "timestep": t, "encoder_hidden_states": emb.to(device),
                          "encoder_attention_mask": mask.to(device) & keep[:, None]},
               "target": target, "t": t}


def heldout_proxy(model: VideoUNet, data: DataConfig, diffusion: DiffusionConfig,
                  resolution: int, n: int, text, batch: int = 8) -> ValLossProxy:
    """The fixed held-out set (clips, t, noise) of the teacher's data as a validation-loss proxy
    of ``model``: a folder's ``val`` split or held-out synthetic seeds
    (:func:`sned.metrics.val_loss.heldout_proxy`, as ``sned evaluate`` and ``sned search``)."""
    return val_loss.heldout_proxy(model, diffusion, resolution, n_videos=n, data=data,
                                  text_encoder=text, batch=batch)


def proxy_batches(proxy: ValLossProxy) -> list[dict]:
    """The proxy's fixed inputs as forward-kwarg batches."""
    out = []
    for i in range(0, proxy.xt.shape[0], proxy.batch):
        sl = slice(i, i + proxy.batch)
        out.append({"sample": proxy.xt[sl], "timestep": proxy.t[sl],
                    "encoder_hidden_states": proxy.emb[sl],
                    "encoder_attention_mask": proxy.mask[sl]})
    return out
