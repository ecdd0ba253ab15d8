"""The retraining recipe of a DiffNAS run: the teacher's own, read from where it was recorded.

"Equal to the teacher" is only reachable when the retrained subnet sees as many samples as the
teacher did, with its lr schedule and EMA (docs/diffnas.md). :func:`teacher_recipe` reads the
teacher's training recipe, in this order:

1. the model folder's ``train`` section (``sned extract`` records it since issue 27: in
   ``config.json``, or the ``sned`` metadata of a pipeline folder's ``unet/config.json``) and
   its card's ``trained_steps``;
2. the checkpoint the folder was extracted from (``card.source``, a run's
   ``checkpoints/step-N``): its ``state.json`` ``run.train`` and ``step``;
3. nothing: every field is None and ``source`` says so.

:func:`retrain_recipe` resolves it against the user's options (an option overrides the teacher's
value; a value neither gives falls back to :data:`FALLBACK`) and records, per field, where it
came from — ``search.json`` and ``report.md`` state it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

FIELDS = ("steps", "batch_size", "lr", "lr_schedule", "lr_floor", "lr_warmup_steps",
          "ema_decay")
FALLBACK = {"steps": 200, "batch_size": 4, "lr": 1e-3, "lr_schedule": "cosine",
            "lr_floor": 0.05, "lr_warmup_steps": 0, "ema_decay": 0.995}
"""Used where neither the teacher's record nor an option gives a value."""


def _read_json(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def teacher_recipe(folder: str | Path, meta: dict) -> dict:
    """The teacher's recorded recipe: ``{field: value or None, ..., "source": where}``;
    ``steps`` is the number of steps it trained (its checkpoint's step when known)."""
    card = meta.get("card") if isinstance(meta.get("card"), dict) else {}
    train, steps, source = meta.get("train"), card.get("trained_steps"), None
    if isinstance(train, dict):
        source = f"{Path(folder)} (its model card's train section)"
    src = card.get("source")
    if src and (not isinstance(train, dict) or steps is None):
        state = _read_json(Path(src) / "state.json")
        run = (state or {}).get("run")
        if isinstance(run, dict) and isinstance(run.get("train"), dict):
            if not isinstance(train, dict):
                train, source = run["train"], f"{Path(src) / 'state.json'} (the checkpoint " \
                                              f"the teacher was extracted from)"
            steps = state.get("step", steps)
    out = {k: None for k in FIELDS}
    if isinstance(train, dict):
        out.update({k: train.get(k) for k in FIELDS if k != "steps"})
        out["steps"] = steps if steps is not None else train.get("steps")
    out["source"] = source or f"not recorded ({Path(folder)} has no train section and no " \
                              f"readable source checkpoint)"
    return out


def retrain_recipe(teacher: dict, steps: int | None, batch_size: int | None,
                   lr: float | None, lr_schedule: str | None, ema_decay: float | None) -> dict:
    """The retrain's recipe: options (not None) override the teacher's; the default steps give
    as many samples as the teacher saw (``ceil(teacher steps × batch / batch)``). Returns the
    fields plus ``samples``, ``teacher_samples`` and ``from`` {field: "option" | "teacher" |
    "fallback"} and ``teacher_source``."""
    opts = {"batch_size": batch_size, "lr": lr, "lr_schedule": lr_schedule,
            "ema_decay": ema_decay}
    out, origin = {}, {}
    for k in FIELDS:
        if k == "steps":
            continue
        if opts.get(k) is not None:
            out[k], origin[k] = opts[k], "option"
        elif teacher.get(k) is not None:
            out[k], origin[k] = teacher[k], "teacher"
        else:
            out[k], origin[k] = FALLBACK[k], "fallback"
    t_steps, t_batch = teacher.get("steps"), teacher.get("batch_size")
    t_samples = int(t_steps) * int(t_batch) if t_steps and t_batch else None
    if steps is not None:
        out["steps"], origin["steps"] = steps, "option"
    elif t_samples:
        out["steps"], origin["steps"] = max(1, math.ceil(t_samples / out["batch_size"])), \
            "teacher"
    else:
        out["steps"], origin["steps"] = FALLBACK["steps"], "fallback"
    out["lr_warmup_steps"] = min(int(out["lr_warmup_steps"]), out["steps"] - 1) \
        if out["steps"] > 1 else 0
    out.update(samples=out["steps"] * out["batch_size"], teacher_samples=t_samples,
               teacher_source=teacher["source"])
    out["from"] = origin
    return out
