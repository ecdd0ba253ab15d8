"""Aggregation and reporting of a ``sned study``: ``results.json``, ``results.md`` and the plot
of validation loss vs training compute per preset."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..report import markdown_table
from ..store.files import atomic_write_text, write_json

SUPERNETS = ("supernet", "supernet-uniform", "zero-init-off", "per-tensor-adam", "constant-lr",
             "supernet-sandwich", "no-warmup", "plain-adamw", "per-resolution")
ORDER = ("supernet", "standalone") + SUPERNETS[1:]


def t_interval(values: list[float], level: float = 0.95) -> float | None:
    """Half-width of the Student-t confidence interval of the mean (None for n < 2)."""
    n = len(values)
    if n < 2:
        return None
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2, n - 1) * np.std(values, ddof=1) / math.sqrt(n))


def _stat(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)),
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "ci95": t_interval(values), "n": len(values), "values": [float(v) for v in values]}


def method_compute(records: list[dict]) -> dict[tuple[str, str, int], int]:
    """Training MACs of each (method, budget, seed): every run of the method summed (the
    per-resolution method's two supernets together)."""
    total: dict[tuple[str, str, int], int] = defaultdict(int)
    for r in records:
        total[r["method"], r["budget"], r["seed"]] += r["compute"]
    return dict(total)


def aggregate(records: list[dict], plan) -> list[dict]:
    """One row per (method, budget, preset, resolution), statistics over seeds.

    ``compute``: the mean over seeds of the training MACs of the model(s) that produced the row
    — a supernet method's whole training (all its runs), or the one standalone run.
    """
    spent = method_compute(records)
    groups: dict[tuple, list[tuple[dict, dict]]] = defaultdict(list)
    for rec in records:
        for row in rec["rows"]:
            groups[rec["method"], rec["budget"], row["preset"], row["resolution"]].append(
                (rec, row))
    out = []
    for (method, budget, preset, res), items in groups.items():
        standalone = method == "standalone"
        compute = [rec["compute"] if standalone else spent[method, budget, rec["seed"]]
                   for rec, _ in items]
        row = {"method": method, "budget": budget, "preset": preset, "resolution": res,
               "seeds": len(items), "steps": int(np.mean([rec["steps"] for rec, _ in items])),
               "val_loss": _stat([r["val_loss"] for _, r in items]),
               "compute": int(np.mean(compute)), "fvd": None, "kvd": None,
               "caption_accuracy": None}
        caps = [r["caption_accuracy"] for _, r in items if "caption_accuracy" in r]
        if caps:
            row["caption_accuracy"] = _stat(caps)
            row["caption"] = {k: float(np.mean([r["caption"][k] for _, r in items]))
                              for k in ("color", "shape", "direction")}
        for k in ("fvd", "kvd"):
            vals = [r[k] for _, r in items if r.get(k) is not None]
            row[k] = _stat(vals) if vals else None
        out.append(row)
    order = {m: i for i, m in enumerate(ORDER)}
    out.sort(key=lambda r: (r["resolution"], "SMLB".index(r["preset"]), order[r["method"]],
                            r["budget"]))
    return out


def paired_gap(sup: list[float], alone: list[float]) -> tuple[float, float]:
    """Relative gap ``mean(sup) / mean(alone) − 1`` of two models on the same pairs, and its
    standard error from the per-pair differences (delta method)."""
    a, b = np.asarray(sup, dtype=float), np.asarray(alone, dtype=float)
    gap = a.mean() / b.mean() - 1
    if len(a) < 2:
        return float(gap), float("nan")
    d = a - (1 + gap) * b
    return float(gap), float(d.std(ddof=1) / math.sqrt(len(d)) / b.mean())


def _gap_stat(per_seed: list[tuple[float, float]]) -> dict:
    """Gap statistics over seeds: ``values`` (one per seed), ``ci95`` the t-interval over
    seeds (training noise and evaluation noise together) — with one seed, 1.96 × the
    sample-paired standard error — and ``ci95_samples`` (the evaluation noise alone:
    1.96 × the pooled per-pair standard error of the mean gap)."""
    stat = _stat([g for g, _ in per_seed])
    ses = [se for _, se in per_seed if math.isfinite(se)]
    stat["ci95_samples"] = (1.96 * math.sqrt(sum(se ** 2 for se in ses)) / len(ses)
                            if ses else None)
    if stat["ci95"] is None:
        stat["ci95"] = stat["ci95_samples"]
    stat["upper"] = stat["mean"] + (stat["ci95"] or 0.0)
    return stat


def reach_compute(curve: list[dict], preset: str, res: int, target: float) -> int | None:
    """Training MACs at which a run's learning curve first reaches val loss ``target`` at
    ``preset@res`` (linear between curve points; None when it never does)."""
    pts = sorted((c["compute"], c["val_loss"]) for c in curve
                 if c["preset"] == preset and c["resolution"] == res)
    prev = (0, math.inf)
    for x, y in pts:
        if y <= target:
            if not math.isfinite(prev[1]):
                return int(x)
            return round(prev[0] + (x - prev[0]) * (prev[1] - target) / (prev[1] - y))
        prev = (x, y)
    return None


def goal_check(records: list[dict]) -> list[dict]:
    """Each supernet method against standalone training, per preset and resolution, paired by
    seed and (where per-pair losses were kept) by evaluation pair: the relative val-loss gap
    ``(method − standalone) / standalone``, the compute ratio ``method / (standalone S + M +
    L + B, same steps)`` and ``reach``: the training compute the method's curve needs to
    reach each standalone model's final loss, as a fraction of that standalone run's. The
    goal: every gap's upper 95 % end ≤ 3 % at a ratio ≤ 40 %."""
    spent = method_compute(records)
    alone = {(r["seed"], row["preset"], row["resolution"]): (row, r["compute"])
             for r in records if r["method"] == "standalone" and r["budget"] == "same-steps"
             for row in r["rows"]}
    out = []
    for method in SUPERNETS:
        gaps: dict[tuple[str, int], list[tuple[float, float]]] = defaultdict(list)
        reach: dict[tuple[str, int], list[float | None]] = defaultdict(list)
        ratios = []
        for r in records:
            if r["method"] != method:
                continue
            for row in r["rows"]:
                ref = alone.get((r["seed"], row["preset"], row["resolution"]))
                if ref is None:
                    continue
                key = row["preset"], row["resolution"]
                if "losses" in row and "losses" in ref[0]:
                    gaps[key].append(paired_gap(row["losses"], ref[0]["losses"]))
                else:
                    gaps[key].append((row["val_loss"] / ref[0]["val_loss"] - 1, float("nan")))
                if r.get("curve"):
                    c = reach_compute(r["curve"], *key, ref[0]["val_loss"])
                    reach[key].append(None if c is None else c / ref[1])
        for seed in sorted({r["seed"] for r in records if r["method"] == method}):
            four = spent.get(("standalone", "same-steps", seed))
            if four:
                ratios.append(spent[method, "same-steps", seed] / four)
        if not gaps:
            continue
        order = sorted(gaps, key=lambda k: (k[1], "SMLB".index(k[0])))
        cells = {f"{p}@{res}": _gap_stat(gaps[p, res]) for p, res in order}
        reached = {f"{p}@{res}": (None if not reach[p, res] or None in reach[p, res]
                                  else _stat(reach[p, res])) for p, res in order
                   if (p, res) in reach}
        worst = max(c["mean"] for c in cells.values())
        worst_upper = max(c["upper"] for c in cells.values())
        ratio = _stat(ratios) if ratios else None
        out.append({"method": method, "gap": cells, "worst_gap": worst,
                    "worst_upper": worst_upper, "compute_ratio": ratio, "reach": reached,
                    "goal_met": bool(worst_upper <= 0.03 and ratio is not None
                                     and ratio["mean"] <= 0.40)})
    return out


def _pm(s: dict | None, fmt: str = "{:.4f}", scale: float = 1.0) -> str:
    if s is None:
        return "–"
    text = fmt.format(s["mean"] * scale)
    if s["n"] > 1:
        text += " ± " + fmt.replace("+", "").format(s["std"] * scale)
    return text


def _ci(s: dict | None) -> str:
    if s is None:
        return "–"
    text = f"{s['mean'] * 100:+.1f} %"
    return text + (f" ± {s['ci95'] * 100:.1f}" if s.get("ci95") is not None else "")


def plot(path: Path, rows: list[dict]) -> Path:
    """Val loss (mean ± std over seeds) vs training compute, one panel per preset; colour =
    method, marker = resolution."""
    import matplotlib
    import matplotlib.lines
    from matplotlib.figure import Figure

    matplotlib.use("Agg", force=False)
    fig = Figure(figsize=(13, 3.8), dpi=110)
    axes = fig.subplots(1, 4, sharey=False)
    labels = sorted({(r["method"], r["budget"]) for r in rows},
                    key=lambda k: [r for r in rows if (r["method"], r["budget"]) == k][0]["method"])
    colors = {k: f"C{i}" for i, k in enumerate(labels)}
    res_list = sorted({r["resolution"] for r in rows})
    markers = {res: m for res, m in zip(res_list, "os^Dv")}
    for ax, preset in zip(axes, "SMLB"):
        for r in (r for r in rows if r["preset"] == preset):
            key = (r["method"], r["budget"])
            ax.errorbar(r["compute"] / 1e12, r["val_loss"]["mean"], yerr=r["val_loss"]["std"],
                        color=colors[key], marker=markers[r["resolution"]], capsize=2,
                        linestyle="none")
        ax.set_xlim(left=0)
        ax.set_title(f"preset {preset}")
        ax.set_xlabel("training TMACs (fwd + bwd)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("held-out val loss (mean ± std)")
    handles = [matplotlib.lines.Line2D([], [], color=colors[k], marker="o", linestyle="none",
                                       label=k[0] + (" (matched compute)"
                                                     if k[1] == "matched-compute" else ""))
               for k in labels]
    handles += [matplotlib.lines.Line2D([], [], color="grey", marker=markers[res],
                                        linestyle="none", label=f"{res}px") for res in res_list]
    fig.legend(handles=handles, loc="center right", fontsize=7)
    fig.tight_layout(rect=(0, 0, 0.83, 1))
    fig.savefig(path)
    return path


def write_results(out: Path, rows: list[dict], records: list[dict], meta: dict) -> Path:
    """``results.json`` (rows, goal check, per-run records, meta), ``results.md`` and the plot."""
    goal = goal_check(records)
    runs = [{k: v for k, v in r.items() if k != "rows"} for r in records]
    path = out / "results.json"
    write_json(path, {"meta": meta, "rows": rows, "goal": goal, "runs": runs})
    plot(out / "val_loss_vs_compute.png", rows)
    plan = meta["plan"]
    n = plan["seeds"]
    md = ["# sned study", "",
          f"{meta['date']} · {meta['device']} · wall time {meta['wall_seconds'] / 60:.1f} min "
          f"(this invocation) · config {plan['config']}, {plan['frames']} frames, batch "
          f"{plan['batch']} per resolution, {plan['steps']} steps per supernet run, lr "
          f"{plan['lr']}, EMA {plan['ema_decay']}, {n} seed(s).", "",
          f"Val loss: {meta.get('eval_pairs')} held-out (clip, timestep, noise) pairs per "
          f"resolution ({plan['val_videos']} synthetic clips × {plan.get('pairs_per_clip', 1)}"
          f", stratified timesteps, the same pairs for every model), EMA weights; mean ± std over {n} seed(s). Caption "
          f"accuracy (colour, shape and motion all right) at {meta['caption_resolution']} px on "
          f"{meta['caption_prompts']} prompts, DDIM {plan['caption_steps']} steps, CFG "
          f"{plan['cfg']}. Compute: total training MACs (forward + backward = 3 × forward) of "
          f"the method (a supernet method: its whole training; standalone: that preset's run).",
          ""]
    if meta.get("fvd_note"):
        md += [meta["fvd_note"] + ".", ""]
    cols = [("method", "Method"), ("budget", "Budget"), ("preset", "Preset"),
            ("steps", "Steps"), ("val", "Val loss"), ("cap", "Caption acc."),
            ("fvd", "FVD"), ("tmacs", "Compute (TMACs)")]
    for res in sorted({r["resolution"] for r in rows}):
        table = [{"method": r["method"], "budget": r["budget"], "preset": r["preset"],
                  "steps": str(r["steps"]), "val": _pm(r["val_loss"]),
                  "cap": _pm(r["caption_accuracy"], "{:.0%}") if r["caption_accuracy"] else "–",
                  "fvd": _pm(r["fvd"], "{:.1f}") if r["fvd"] else "–",
                  "tmacs": f"{r['compute'] / 1e12:.3f}"}
                 for r in rows if r["resolution"] == res]
        md += [f"## {res} px", "", markdown_table(table, cols), ""]
    if goal:
        md += ["## Against standalone training", "",
               f"Relative val-loss gap to the standalone model of the same preset trained for "
               f"the same steps, paired by seed and by evaluation pair ({meta.get('eval_pairs')}"
               f" pairs per resolution): mean ± 95 % interval (over seeds; with one seed the "
               f"sample-paired interval); positive = worse than standalone. Compute ratio: the "
               f"method's compute as a fraction of training S, M, L and B alone. Goal: every "
               f"gap's upper end ≤ 3 % at ≤ 40 % of the compute.", ""]
        keys = list(goal[0]["gap"])
        gcols = [("method", "Method")] + [(k, k) for k in keys] + [("ratio", "Compute ratio"),
                                                                   ("met", "Goal met")]
        gt = [{"method": g["method"], **{k: _ci(g["gap"].get(k)) for k in keys},
               "ratio": _pm(g["compute_ratio"], "{:.0%}") if g["compute_ratio"] else "–",
               "met": "yes" if g["goal_met"] else "no"} for g in goal]
        md += [markdown_table(gt, gcols), ""]
        md += ["Training compute the method needs to reach each standalone model's final val "
               "loss (from its learning curve), as a fraction of that standalone run's compute "
               "(– = not reached within the run):", ""]
        rt = [{"method": g["method"], **{k: (_pm(g["reach"][k], "{:.2f}") if g["reach"].get(k)
                                             else "–") for k in keys}} for g in goal]
        md += [markdown_table(rt, [("method", "Method")] + [(k, k) for k in keys]), ""]
    md += ["![val loss vs compute](val_loss_vs_compute.png)", ""]
    atomic_write_text(out / "results.md", "\n".join(md))
    return path
