"""The training log (rank 0): one ``metrics.jsonl`` row per step, TensorBoard scalars, and no
host sync per step.

A step's loss, gradient norm and extras stay on the device as 0-d (or 1-d) tensors; rows are
buffered and written every ``log_every`` steps (and before every checkpoint, and at the end),
reading all their tensors with ONE device→host copy. Every step still gets its row.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

COST_BUCKETS = ["40-55", "55-70", "70-85", "85-100"]


class MetricsLog:
    """Buffered ``metrics.jsonl`` + TensorBoard writer.

    Args:
        out: the run folder. writer: a TensorBoard ``SummaryWriter`` or None.
        every: ``train.log_every`` (TensorBoard cadence and flush cadence).
        full_params: the supernet's parameter count (for the loss-by-cost buckets).
    """

    def __init__(self, out: Path, writer, every: int, full_params: int) -> None:
        self.path = Path(out) / "metrics.jsonl"
        self.writer, self.every, self.full_params = writer, every, full_params
        self.pending: list[dict[str, Any]] = []
        self.last: dict[str, Any] | None = None  # the newest written row (progress bar)

    def add(self, row: dict[str, Any]) -> None:
        """Buffer a row whose values may be device tensors; flush every ``every`` steps."""
        self.pending.append(row)
        if row["step"] % self.every == 0:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        rows = _to_host(self.pending)
        self.pending = []
        with open(self.path, "a") as f:
            f.write("".join(json.dumps(r) + "\n" for r in rows))
        for r in rows:
            self._tensorboard(r)
        self.last = rows[-1]

    def _tensorboard(self, r: dict[str, Any]) -> None:
        step = r["step"]
        if self.writer is None or not (step % self.every == 0 or step == 1):
            return
        frac = r["params"] / self.full_params
        bucket = min(3, int((frac - 0.4) / 0.15)) if frac > 0.4 else 0
        w = self.writer
        w.add_scalar("loss", r["loss"], step)
        w.add_scalar(f"loss_by_resolution/{r['resolution']}", r["loss"], step)
        w.add_scalar(f"loss_by_cost/{COST_BUCKETS[bucket]}%", r["loss"], step)
        w.add_scalar("lr", r["lr"], step)
        w.add_scalar("warmup/min_ratio", r["min_ratio"], step)
        w.add_scalar("warmup/min_keep", r["min_keep"], step)
        w.add_scalar("sampled_params_M", r["params"] / 1e6, step)


def _to_host(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with every tensor value replaced by Python numbers (0-d → float, 1-d → list),
    through one concatenated copy per device."""
    leaves: list[tuple[int, str, Tensor]] = [(i, k, v) for i, r in enumerate(rows)
                                             for k, v in r.items() if torch.is_tensor(v)]
    out = [dict(r) for r in rows]
    if not leaves:
        return out
    device = leaves[0][2].device
    flat = torch.cat([v.detach().reshape(-1).to(device, torch.float64) for _, _, v in leaves])
    values = flat.cpu().tolist()
    pos = 0
    for i, k, v in leaves:
        n = v.numel()
        out[i][k] = values[pos] if v.dim() == 0 else values[pos:pos + n]
        pos += n
    return out
