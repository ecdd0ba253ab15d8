"""What one training forward saves for backward, found by tracing it on fake tensors.

:func:`trace_saved` builds the UNet under ``FakeTensorMode`` (no weight is allocated, a 1.6 B
config traces in seconds), runs one forward of the given arch on fake inputs and records,
through ``torch.autograd.graph.saved_tensors_hooks``, every tensor autograd keeps for
backward — by storage, parameters excluded (they are counted once as weights). Forward hooks
attribute each saved tensor to the diffusion block — and the layer of it (ResBlock, each
attention, feed-forward: the checkpointing units of :mod:`sned.nn.checkpoint`) — that was
running, and record the tensors each block and each layer received. A dispatch mode records,
per block and layer, the outputs of the ops selective checkpointing keeps
(:data:`sned.nn.checkpoint.SAVED_OPS`), their MACs (``torch.utils.flop_counter``'s formulas) and
the bytes the other, memory-bound ops read and write (what recomputing them costs).

:meth:`SavedTrace.alive` then says what is alive while backward runs each block under a
checkpointing plan: the saved tensors outside blocks, unchecked blocks' saved sets, the
checkpointed units' inputs (and, selective, their kept op outputs), plus one unit's saved set
while it is recomputed.

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
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry, sdpa_flop_count

from ..arch import Arch
from ..config import ModelConfig
from ..models.unet import VideoUNet
from ..nn.checkpoint import SAVED_OPS

@dataclass
class UnitTrace:
    """One checkpointing unit (a block, or a layer of one) as traced: sets of storage ids.

    Attributes:
        inputs: tensors it received (not saved outside the blocks: those stay anyway).
        saved: tensors its ops saved for backward.
        kept: outputs of its :data:`~sned.nn.checkpoint.SAVED_OPS` ops (selective keeps them).
        macs: MACs of those ops; cheap_bytes: bytes the other (non-view) ops read and wrote.
    """

    inputs: set = field(default_factory=set)
    saved: set = field(default_factory=set)
    kept: set = field(default_factory=set)
    macs: int = 0
    cheap_bytes: int = 0


@dataclass
class BlockTrace(UnitTrace):
    """A diffusion block: the unit of ``checkpoint_unit="block"``, and its ``layers`` (forward
    order) for ``"layer"``. Its ``saved`` / ``kept`` / costs cover every op of the block,
    inside its layers or not (the skip projection, reshapes)."""

    layers: list[UnitTrace] = field(default_factory=list)


@dataclass
class SavedTrace:
    """What one forward keeps for backward (batch, resolution and frames as traced).

    Attributes:
        sizes: bytes of every storage the sets below name.
        outside: storages saved by ops outside the diffusion blocks (stem, resamplers, head).
        blocks: per diffusion block (forward order), its :class:`BlockTrace`.
        largest: the largest single saved tensor (bytes).
        output: bytes of the model output.
        macs / cheap_bytes: of the whole forward (as :class:`UnitTrace`'s).
    """

    sizes: dict = field(default_factory=dict)
    outside: set = field(default_factory=set)
    blocks: list[BlockTrace] = field(default_factory=list)
    largest: int = 0
    output: int = 0
    macs: int = 0
    cheap_bytes: int = 0

    def bytes_of(self, keys) -> int:
        return sum(self.sizes[k] for k in keys)

    def alive(self, modes: dict) -> list[int]:
        """Saved bytes alive while backward runs block i (reverse order is how backward meets
        them): what blocks 0..i keep — a checkpointed block's units' inputs (and, selective,
        their kept op outputs) instead of its saved set — plus, while a unit of block i is
        recomputed, that unit's saved set; the ``outside`` tensors throughout.

        ``modes``: block index → (unit, policy) of the checkpointed blocks, unit ``block`` or
        ``layer``, policy ``full`` or ``selective`` (:mod:`sned.nn.checkpoint`)."""
        acc, total, out = set(), [0], []

        def add(keys):
            for k in keys:
                if k not in acc:
                    acc.add(k)
                    total[0] += self.sizes[k]

        add(self.outside)
        for i, block in enumerate(self.blocks):
            if i not in modes:
                add(block.saved)
                out.append(total[0])
                continue
            unit, policy = modes[i]
            units = [block] if unit == "block" else block.layers
            if unit == "layer":  # saved outside the layers (the skip projection's input)
                add(block.saved.difference(*(u.saved for u in units)))
            peak = total[0]
            for u in units:  # in backward, unit j is recomputed while units <= j keep theirs
                add(u.inputs | (u.kept if policy == "selective" else set()))
                peak = max(peak, total[0] + sum(self.sizes[k] for k in u.saved - acc))
            out.append(peak)
        return out

    def peak(self, modes: dict) -> int:
        """The most saved bytes alive at once (at the start of backward, or while the
        largest unit is recomputed)."""
        return max(self.alive(modes), default=self.bytes_of(self.outside))

    def recompute(self, modes: dict) -> tuple[int, int]:
        """(MACs, memory-bound bytes) backward recomputes per traced forward: every op of the
        checkpointed units (``full``), or only their cheap ops (``selective``)."""
        macs = cheap = 0
        for i, (unit, policy) in modes.items():
            block = self.blocks[i]
            for u in ([block] if unit == "block" else block.layers):
                macs += u.macs if policy == "full" else 0
                cheap += u.cheap_bytes
        return macs, cheap


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



def layer_modules(block) -> list:
    """A diffusion block's checkpointing layers in forward order: ResBlock, attentions, FF."""
    names = (*block.spec.components, "ff")
    return [getattr(block, n) for n in names if hasattr(block, n)]


def _macs(func, args, out) -> int:
    """MACs of one SAVED_OPS op (``torch.utils.flop_counter``'s formulas; flops / 2)."""
    packet = func.overloadpacket
    if packet in flop_registry:
        return flop_registry[packet](*args, out_val=out) // 2
    q, k, v = args[:3]  # the attention kernels without a registered formula (CPU flash)
    return sdpa_flop_count(q.shape, k.shape, v.shape) // 2


class _OpRecorder(TorchDispatchMode):
    """Per (block, layer) unit: kept op outputs, their MACs, the cheap ops' traffic."""

    def __init__(self, where, note):
        super().__init__()
        self.where, self.note = where, note  # where() -> the running units; note(t) -> its id

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        outs = [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, Tensor)]
        if func in SAVED_OPS:
            macs = _macs(func, args, out)
            for u in self.where():
                u.macs += macs
                u.kept.update(self.note(t) for t in outs)
        elif outs and not func.is_view:
            ins = [t for t in torch.utils._pytree.tree_leaves((args, kwargs))
                   if isinstance(t, Tensor)]
            if {_key(t) for t in outs} & {_key(t) for t in ins}:
                return out  # an alias (_unsafe_view, detach): no data moves
            traffic = sum(t.numel() * t.element_size() for t in ins + outs)
            for u in self.where():
                u.cheap_bytes += traffic
        return out


def _trace(config, arch, batch, resolution, frames, autocast, cuda_rules) -> SavedTrace:
    from torch._subclasses.fake_tensor import FakeTensorMode

    mode = FakeTensorMode()
    with mode:
        model = VideoUNet(config).train()
    params = {_key(p) for p in model.parameters()}
    trace = SavedTrace(blocks=[BlockTrace(layers=[UnitTrace() for _ in layer_modules(b)])
                               for b in model.blocks])
    hold: list[Tensor] = []  # every recorded storage stays alive: ids are never reused
    whole = UnitTrace()
    running: list[UnitTrace] = [whole]  # the whole forward, the block, the layer

    def note(t: Tensor) -> int:
        k = _key(t)
        if k not in trace.sizes:
            trace.sizes[k] = t.untyped_storage().nbytes()
            hold.append(t)
        return k

    saved_outside: set[int] = set()

    def pack(t: Tensor) -> Tensor:
        k = _key(t)
        if k in params:
            return t
        note(t)
        if len(running) == 1:
            saved_outside.add(k)
        for u in running[1:]:
            u.saved.add(k)
        return t

    def enter(unit: UnitTrace):
        def hook(module, args, kwargs):
            running.append(unit)
            for a in torch.utils._pytree.tree_leaves((args, kwargs)):
                if isinstance(a, Tensor) and _key(a) not in params:
                    unit.inputs.add(note(a))
        return hook

    def leave(module, args, kwargs, out):
        running.pop()

    handles = []
    for block, bt in zip(model.blocks, trace.blocks):
        for m, u in [(block, bt), *zip(layer_modules(block), bt.layers)]:
            handles += [m.register_forward_pre_hook(enter(u), with_kwargs=True),
                        m.register_forward_hook(leave, with_kwargs=True)]
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
        recorder = _OpRecorder(lambda: running, note)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), ac, recorder:
            if norms is not None:
                with norms:
                    out = model(**kw, arch=None if arch is None else arch.at(resolution))
            else:
                out = model(**kw, arch=None if arch is None else arch.at(resolution))
    for h in handles:
        h.remove()
    trace.output = out.untyped_storage().nbytes()
    trace.macs, trace.cheap_bytes = whole.macs, whole.cheap_bytes
    trace.outside = saved_outside
    saved = saved_outside.union(*(b.saved for b in trace.blocks))
    trace.largest = max((trace.sizes[k] for k in saved), default=0)
    for b in trace.blocks:  # what stays anyway is no unit's to keep
        for u in (b, *b.layers):
            u.inputs -= saved_outside
    return trace
