"""``sned study --partial``: the report of a study that is still running or was stopped.

A long study (hours on CPU) is worth reading before it ends: its runs start in the order of
:func:`sned.app.study.tier` (the supernet and standalone runs of every seed first), and each
finished run leaves its ``eval.json``. This writes ``results.json`` / ``results.md`` from those
runs alone — nothing is trained — with ``meta.partial`` naming the runs still missing; the
study's own end overwrites both with the full report.
"""

from __future__ import annotations

from pathlib import Path

from ..config import ConfigError
from ..store.files import read_json
from .study_plan import follower, plan_tasks
from .study_report import aggregate, write_results


def report_partial(out: Path, plan, specs, make_meta) -> Path:
    """Aggregate the finished runs of ``plan`` (its run ``specs``) in ``out``; ``make_meta(records)``
    gives the report's ``meta``. Returns ``results.json``'s path.

    Raises ConfigError when no run has finished yet."""
    records, missing = [], []
    for _, spec, seed in plan_tasks(plan, specs):
        record = _finished_run(out, spec.name, seed, spec.steps)
        if record is None:
            missing.append(f"{spec.name} seed {seed}")
            continue
        records.append(record)
        name = follower(plan, spec.name, seed)
        if name:
            extra = _finished_run(out, name, seed, None)
            if extra is None:
                missing.append(f"{name} seed {seed}")
            else:
                records.append(extra)
    if not records:
        raise ConfigError(f"study --partial: no run in {out} has finished yet")
    main = [r for r in records if r.get("horizon", plan.steps) == plan.steps]
    meta = make_meta(records)
    meta["partial"] = {"finished": len(records), "missing": missing}
    return write_results(out, aggregate(main, plan), records, meta)


def _finished_run(out: Path, name: str, seed: int, steps: int | None) -> dict | None:
    """The record of run ``name`` at ``seed`` when it finished (``steps`` of them, if given)."""
    done = out / "runs" / name / f"seed{seed}" / "eval.json"
    if not done.is_file():
        return None
    record = read_json(done, "run record")
    return record if steps is None or record.get("steps") == steps else None
