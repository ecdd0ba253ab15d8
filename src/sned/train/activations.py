"""What one training forward saves for backward, found by tracing it on fake tensors.

:func:`trace_saved` builds the UNet under ``FakeTensorMode`` (no weight is allocated, a 1.6 B
config traces in seconds), runs one forward of the given arch on fake inputs and records,
through ``torch.autograd.graph.saved_tensors_hooks``, every tensor autograd keeps for
backward — deduplicated by storage, parameters excluded (they are counted once as weights).
Forward hooks attribute each saved tensor to the diffusion block that was running, and record
the tensors each block received: with per-block gradient checkpointing only the saved tensors
outside blocks and the blocks' inputs stay alive, plus one block's saved set while it is
recomputed in backward.

Mixed precision: ``autocast="bf16"`` traces under CPU bf16 autocast; ``cuda_rules=True`` also
runs the norms in fp32, as CUDA's autocast does (``layer_norm`` / ``group_norm`` are on its
fp32 list, not on the CPU's), so a CUDA run's fp32 copies are counted. Attention traces through
the CPU flash kernel, which saves what CUDA's flash / memory-efficient kernels save (q, k, v,
the output and a per-row log-sum-exp), never the (L × L) score matrix.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from ..arch import Arch
from ..config import ModelConfig
from ..models.unet import VideoUNet


@dataclass
class SavedTrace:
    """Bytes kept for backward by one forward (batch, resolution and frames as traced).

    Attributes:
        outside: saved by ops outside the diffusion blocks (stem, down/upsamplers, head).
        blocks: per diffusion block (forward order), the bytes its ops saved.
        inputs: per diffusion block, the bytes of the inputs it received first (hidden
            states, embeddings, context, mask) and no op outside the blocks saved — what
            per-block checkpointing keeps instead of ``blocks``.
        largest: the largest single saved tensor (bytes).
        output: bytes of the model output.
    """

    outside: int = 0
    blocks: list[int] = field(default_factory=list)
    inputs: list[int] = field(default_factory=list)
    largest: int = 0
    output: int = 0

    def alive(self, checkpointing) -> list[int]:
        """Saved bytes alive while backward runs block i (reverse order is how backward meets
        them): blocks 0..i's saved sets — for a checkpointed block its inputs instead, plus
        its recomputed saved set while it is block i; the ``outside`` tensors throughout.
        ``checkpointing``: True (every block), False, or the checkpointed block indices."""
        out, acc = [], self.outside
        for i, (saved, inp) in enumerate(zip(self.blocks, self.inputs)):
            if checkpointing is True or (checkpointing and i in checkpointing):
                acc += inp
                out.append(acc + saved)
            else:
                acc += saved
                out.append(acc)
        return out

    def peak(self, checkpointing) -> int:
        """The most saved bytes alive at once (at the start of backward, or while the
        largest block is recomputed)."""
        return max(self.alive(checkpointing), default=self.outside)


class _CudaAutocastNorms(TorchFunctionMode):
    """Run layer/group norm in fp32 (CUDA autocast's fp32 list); other ops unchanged."""

    _FP32 = {F.layer_norm, F.group_norm}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self._FP32 and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                args = tuple(a.float() if isinstance(a, Tensor) and a.is_floating_point()
                             else a for a in args)
                kwargs = {k: v.float() if isinstance(v, Tensor) and v.is_floating_point() else v
                          for k, v in kwargs.items()}
                return func(*args, **kwargs)
        return func(*args, **kwargs)


def _key(t: Tensor) -> int:
    return t.untyped_storage()._cdata


_CACHE: dict[tuple, SavedTrace] = {}


def trace_saved(config: ModelConfig, arch: Arch | None, batch: int, resolution: int,
                frames: int, autocast: str | None = None, cuda_rules: bool = False
                ) -> SavedTrace:
    """Trace one training forward of ``config``'s supernet at ``arch`` (None = full).

    Args:
        config: the UNet config (a latent config is traced in latent units).
        arch: the subnet (its resolution is replaced by ``resolution``).
        batch: clips in the micro-batch.
        resolution / frames: the denoiser's input size (B, C, frames, resolution, resolution).
        autocast: None (fp32) or ``"bf16"``.
        cuda_rules: norms in fp32 under autocast, as on CUDA.
    Returns:
        the :class:`SavedTrace` (cached in-process: a trace costs ~0.5 ms per op).
    """
    key = (repr(config), None if arch is None else arch.at(resolution).to_json(), batch,
           resolution, frames, autocast, cuda_rules)
    if key not in _CACHE:
        _CACHE[key] = _trace(config, arch, batch, resolution, frames, autocast, cuda_rules)
    return _CACHE[key]


def _trace(config, arch, batch, resolution, frames, autocast, cuda_rules) -> SavedTrace:
    from torch._subclasses.fake_tensor import FakeTensorMode

    mode = FakeTensorMode()
    with mode:
        model = VideoUNet(config).train()
    params = {_key(p) for p in model.parameters()}
    seen: dict[int, int] = {}  # storage -> bytes, every saved storage
    owner: dict[int, int] = {}  # storage -> block index (-1: outside)
    inputs: dict[int, tuple[int, int]] = {}  # storage -> (first block, bytes)
    current = [-1]

    def pack(t: Tensor) -> Tensor:
        k = _key(t)
        if k not in params and k not in seen:
            seen[k] = t.untyped_storage().nbytes()
            owner[k] = current[0]
        return t

    def pre(i):
        def hook(module, args):
            current[0] = i
            for a in args:
                if isinstance(a, Tensor):
                    inputs.setdefault(_key(a), (i, a.untyped_storage().nbytes()))
        return hook

    def post(module, args, out):
        current[0] = -1

    handles = []
    for i, block in enumerate(model.blocks):
        handles += [block.register_forward_pre_hook(pre(i)), block.register_forward_hook(post)]
    c = config
    with mode:
        kw = {"sample": torch.zeros(batch, c.in_channels, frames, resolution, resolution),
              "timestep": torch.zeros(batch, dtype=torch.long),
              "encoder_hidden_states": torch.zeros(batch, c.text_len, c.text_dim),
              "encoder_attention_mask": torch.ones(batch, c.text_len, dtype=torch.bool)}
        if c.kind == "ssr":
            kw["lowres"] = torch.zeros_like(kw["sample"])
            kw["noise_aug_level"] = torch.zeros(batch)
        if not c.conditional:
            kw["encoder_hidden_states"] = torch.zeros(batch, 1, c.text_dim)
            kw["encoder_attention_mask"] = torch.ones(batch, 1, dtype=torch.bool)
        ac = (torch.autocast("cpu", dtype=torch.bfloat16) if autocast == "bf16"
              else torch.autocast("cpu", enabled=False))
        norms = _CudaAutocastNorms() if cuda_rules and autocast else None
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), ac:
            if norms is not None:
                with norms:
                    out = model(**kw, arch=None if arch is None else arch.at(resolution))
            else:
                out = model(**kw, arch=None if arch is None else arch.at(resolution))
    for h in handles:
        h.remove()
    n = len(model.blocks)
    trace = SavedTrace(blocks=[0] * n, inputs=[0] * n, output=out.untyped_storage().nbytes())
    for k, nbytes in seen.items():
        if owner[k] < 0:
            trace.outside += nbytes
        else:
            trace.blocks[owner[k]] += nbytes
        trace.largest = max(trace.largest, nbytes)
    for k, (i, nbytes) in inputs.items():
        if k not in params and not (k in seen and owner[k] < 0):
            trace.inputs[i] += nbytes
    return trace
