"""One more supernet recipe, trained and evaluated exactly as a finished ``sned study``'s runs.

    python benchmarks/study_probe.py --study study-plateau --out probes sandwich2 \\
        train.sampler=sandwich train.sandwich_k=0

Trains the study plan's ``supernet`` run (seed ``--seed``; with ``--grown``, its
``grown-from-B`` run, started from the study's standalone B of that seed) with the given
run-config overrides added, evaluates it with the study's :class:`~sned.app.study_eval.Evaluator` (the same
held-out pairs), and prints / writes ``OUT/NAME.json``: per preset the val loss, its gap to
the study's standalone run of the same seed (paired by evaluation pair) and the study
supernet's own gap, and the probe's training compute. The study folder is only read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--study", required=True, help="a finished sned study folder (read only)")
    ap.add_argument("--out", required=True, help="folder for the probe's run and JSON")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--grown", action="store_true",
                    help="probe the grown-from-B run (from the study's standalone B) instead")
    ap.add_argument("name", help="the probe's name (its run folder)")
    ap.add_argument("overrides", nargs="*", help="key=value run-config overrides")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from sned.app.study import _train_and_evaluate
    from sned.app.study_plan import PRESETS, RunSpec, StudyPlan, grown_spec, plan_runs
    from sned.app.study_eval import Evaluator

    study = Path(args.study)
    raw = json.loads((study / "study.json").read_text())
    raw["batch"] = {int(k): v for k, v in raw["batch"].items()}
    for key in ("methods", "resolutions"):
        raw[key] = tuple(raw[key]) if raw[key] is not None else None
    plan = StudyPlan(**raw)
    resolutions = plan.resolutions or (16,)
    base = next(s for s in plan_runs(plan, resolutions) if s.name == "supernet")
    spec = RunSpec("supernet", args.name, base.overrides + args.overrides, plan.steps, PRESETS)
    if args.grown:
        parent = study.resolve() / "runs" / "standalone-B" / f"seed{args.seed}"
        base = grown_spec(plan, json.loads((parent / "eval.json").read_text()), parent)
        spec = RunSpec("grown-from-B", args.name, base.overrides + args.overrides, base.steps,
                       PRESETS, horizon=base.horizon, init_from=base.init_from,
                       parent_compute=base.parent_compute)
    out = Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    record = _train_and_evaluate(plan, resolutions, "cpu", out, spec, args.seed,
                                 Evaluator(plan, min(resolutions), out, "cpu"))
    runs = study / "runs"
    supernet = json.loads((runs / "supernet" / f"seed{args.seed}" / "eval.json").read_text())
    if args.grown:  # compare with the study's own grown-from-B run
        supernet = json.loads((runs / "grown-from-B" / f"seed{args.seed}" / "eval.json")
                              .read_text())
    result = {"name": args.name, "overrides": args.overrides, "seed": args.seed,
              "grown": args.grown, "compute": record["compute"],
              "parent_compute": record.get("parent_compute", 0), "seconds": record["seconds"]}
    for row in record["rows"]:
        p, res = row["preset"], row["resolution"]
        alone = next(r for r in json.loads((runs / f"standalone-{p}" / f"seed{args.seed}" /
                                             "eval.json").read_text())["rows"]
                     if r["resolution"] == res)
        own = next(r for r in supernet["rows"] if (r["preset"], r["resolution"]) == (p, res))
        a, b, c = (np.array(x["losses"]) for x in (row, alone, own))
        result[f"{p}@{res}"] = {"val_loss": float(a.mean()),
                                "gap_vs_standalone": float(a.mean() / b.mean() - 1),
                                "study_supernet_gap": float(c.mean() / b.mean() - 1)}
    print(json.dumps(result))
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
