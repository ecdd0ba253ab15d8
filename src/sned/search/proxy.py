"""Validation-loss proxy: the mean denoising loss of a subnet on a fixed held-out set.

The clips are the run's held-out real data (:func:`heldout_proxy` → :mod:`sned.heldout`): a
folder dataset's ``val`` split, or held-out synthetic seeds.

Everything random is drawn once at construction — videos, captions, timesteps (stratified over
[0, T)), noise and, for SSR models, the low-res noise augmentation — so ``proxy(arch)`` is a
deterministic, cheap function of the arch: the search objective (lower is better).
"""

from __future__ import annotations

import torch

from ..arch import Arch
from ..data.config import DataConfig
from ..data.heldout import held_out_set
from ..diffusion import DiffusionConfig, Objective
from ..models.unet import VideoUNet
from ..text import TextEncoder


class ValLossProxy:
    """``proxy(arch) -> float``: mean loss of ``model`` under ``arch`` on a fixed batch.

    Args:
        model: the supernet (or an extracted model with ``arch=None`` calls).
        diffusion: the diffusion config the model was trained with.
        videos: (N, C, T, H, W) held-out clips in [-1, 1] at ``resolution``.
        text: (N, L, D) embeddings and (N, L) mask of their captions.
        seed: seed of timesteps, noise and augmentation levels.
        batch: evaluation batch size.
    """

    def __init__(self, model: VideoUNet, diffusion: DiffusionConfig, videos: torch.Tensor,
                 text: tuple[torch.Tensor, torch.Tensor], seed: int = 0, batch: int = 8) -> None:
        self.model, self.batch = model, batch
        self.objective = Objective(diffusion)
        n = videos.shape[0]
        device = next(model.parameters()).device
        g = torch.Generator().manual_seed(seed)
        steps = diffusion.num_train_timesteps
        # stratified timesteps: one per equal slice of [0, T), shuffled
        edges = (torch.arange(n) + torch.rand(n, generator=g)) * steps / n
        t = edges.long().clamp(max=steps - 1)[torch.randperm(n, generator=g)]
        noise = self.objective.noise(videos.shape, g)
        self.t = t.to(device)
        x0 = videos.to(device)
        ssr = model.config.kind == "ssr"
        if ssr:  # the condition, and what the SSR diffuses (the clip or its residual)
            low, x0 = self.objective.ssr_pair(x0, model.config.residual_scale)
        self.xt, self.target = self.objective.noisy(x0, noise.to(device), self.t)
        self.emb, self.mask = text[0].to(device), text[1].to(device)
        self.lowres = self.aug = None
        if ssr:
            self.aug = torch.rand(n, generator=g).to(device)
            low_noise = torch.randn(x0.shape, generator=g).to(device)  # upsampled, then noised
            self.lowres = self.objective.augment_lowres(low, self.aug, low_noise)
        self.resolution = videos.shape[-1]
        self.evaluations = 0
        self.source: dict | None = None  # the held-out set's record (heldout_proxy)

    def __call__(self, arch: Arch | None) -> float:
        losses = self.per_sample(arch)
        total = sum(float(losses[i:i + self.batch].sum())
                    for i in range(0, losses.shape[0], self.batch))
        return total / losses.shape[0]

    @torch.no_grad()
    def per_sample(self, arch: Arch | None, index: torch.Tensor | None = None) -> torch.Tensor:
        """The loss of every held-out (clip, t, noise) triple, (N,) float32 on the CPU, in the
        fixed order (so two archs' vectors are paired); ``index`` (K,) evaluates only those
        pairs, in that order (e.g. the pairs whose timestep lies in one segment)."""
        self.model.eval()
        out = []
        order = torch.arange(self.xt.shape[0]) if index is None else index.cpu().long()
        for i in range(0, order.shape[0], self.batch):
            sl = order[i:i + self.batch].to(self.t.device)
            kw = {"sample": self.xt[sl], "timestep": self.t[sl],
                  "encoder_hidden_states": self.emb[sl], "encoder_attention_mask": self.mask[sl]}
            if self.lowres is not None:
                kw.update(lowres=self.lowres[sl], noise_aug_level=self.aug[sl])
            if arch is not None:
                kw["arch"] = arch
            pred = self.model(**kw)
            out.append(self.objective.loss(pred, self.target[sl], self.t[sl]).float().cpu())
        self.evaluations += 1
        return torch.cat(out)


def heldout_proxy(model: VideoUNet, diffusion: DiffusionConfig, resolution: int,
                  n_videos: int = 32, frames: int | None = None, data=None, seed: int = 0,
                  text_encoder=None, batch: int = 8, overrides=(), codec=None,
                  skip: int = 0, pairs_per_clip: int = 1) -> ValLossProxy:
    """The search / evaluation proxy on the run's held-out real data.

    ``data``: the run's :class:`~sned.data.config.DataConfig` (None: the synthetic defaults),
    with ``overrides`` (``key=value``); the clips come from :func:`sned.heldout.held_out_set`
    (a folder's ``val`` split, or held-out synthetic seeds). ``seed`` draws timesteps and noise.
    Latent models pass their ``codec``: the clips are taken at the video size (``frames`` /
    ``resolution`` × the autoencoder's factors) and encoded; the proxy runs on the latents.
    The proxy's ``source`` attribute is the held-out set's JSON-able record. ``skip``: leave
    out the held-out set's first ``skip`` clips (a second set disjoint from the first ``skip``).
    ``pairs_per_clip``: each clip is evaluated at that many (timestep, noise) draws — the
    proxy holds ``n_videos × pairs_per_clip`` pairs (timesteps stratified over all of them).
    """
    cfg = model.config
    data = DataConfig() if data is None else data
    frames = cfg.frames if frames is None else frames
    ft, fs = (1, 1) if codec is None else (codec.config.temporal_factor,
                                           codec.config.spatial_factor)
    held = held_out_set(data, skip + n_videos, frames * ft, resolution * fs, overrides=overrides)
    videos, captions = held.tensor()
    videos, captions = videos[skip:], list(captions)[skip:]
    if codec is not None:
        videos = torch.cat([codec.encode(videos[i:i + batch]).cpu()
                            for i in range(0, n_videos, batch)])
    if cfg.conditional:
        enc = text_encoder or TextEncoder(data.text_encoder, max_length=cfg.text_len)
        emb, mask = enc.encode(list(captions))
    else:  # the model ignores text
        emb, mask = torch.zeros(n_videos, 1, cfg.text_dim), torch.ones(n_videos, 1, dtype=bool)
    if pairs_per_clip > 1:
        videos = videos.repeat(pairs_per_clip, *([1] * (videos.dim() - 1)))
        emb, mask = emb.repeat(pairs_per_clip, 1, 1), mask.repeat(pairs_per_clip, 1)
    proxy = ValLossProxy(model, diffusion, videos, (emb, mask), seed=seed, batch=batch)
    proxy.source = {**held.source, "n": n_videos, "skip": skip} if skip else held.source
    return proxy


synthetic_proxy = heldout_proxy  # data=None: held-out synthetic shapes
