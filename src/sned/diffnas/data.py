"""Held-out inputs for DiffNAS: the validation-loss proxy's fixed held-out clips, timesteps
and noise (:mod:`sned.search.proxy`) as forward-kwarg batches. (Training batches are the
Trainer's: :mod:`sned.diffnas.tasks`.)
"""

from __future__ import annotations

from ..diffusion import DiffusionConfig
from ..search.proxy import ValLossProxy
from ..search.proxy import heldout_proxy as _search_heldout_proxy
from ..models.unet import VideoUNet
from ..data.config import DataConfig


def heldout_proxy(model: VideoUNet, data: DataConfig, diffusion: DiffusionConfig,
                  resolution: int, n: int, text, batch: int = 8, skip: int = 0,
                  seed: int = 0, pairs_per_clip: int = 1, codec=None) -> ValLossProxy:
    """The fixed held-out set (clips, t, noise) of the teacher's data as a validation-loss proxy
    of ``model``: a folder's ``val`` split or held-out synthetic seeds
    (:func:`sned.search.proxy.heldout_proxy`, as ``sned evaluate`` and ``sned search``).
    The search takes the set's first ``n`` clips; the final scoring ``skip``s those and takes
    the next ones (disjoint clips, its own timesteps and noise from ``seed``). Each clip is
    scored at ``pairs_per_clip`` (t, noise) pairs; latent models pass their ``codec`` (the
    clips are encoded, ``resolution`` is the latent side)."""
    return _search_heldout_proxy(model, diffusion, resolution, n_videos=n, data=data,
                                 text_encoder=text, batch=batch, skip=skip, seed=seed,
                                 pairs_per_clip=pairs_per_clip, codec=codec)


def proxy_batches(proxy: ValLossProxy) -> list[dict]:
    """The proxy's fixed inputs as forward-kwarg batches."""
    out = []
    for i in range(0, proxy.xt.shape[0], proxy.batch):
        sl = slice(i, i + proxy.batch)
        out.append({"sample": proxy.xt[sl], "timestep": proxy.t[sl],
                    "encoder_hidden_states": proxy.emb[sl],
                    "encoder_attention_mask": proxy.mask[sl]})
    return out
