"""Aggregation and reporting of a ``sned study``: ``results.json``, ``results.md`` and the plot
of validation loss vs training compute per preset."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..report import markdown_table
from ..store.files import atomic_write_text, write_json

SUPERNETS = ("supernet", "uniform-draws", "no-distill", "previous-recipe", "parent-third",
             "parent-two-thirds", "grown-from-B", "supernet-uniform", "zero-init-off",
             "per-tensor-adam", "constant-lr", "supernet-sandwich", "no-warmup", "plain-adamw",
             "per-resolution")
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
    per-resolution method's two supernets together), plus the parent a run started from
    (``parent_compute``: grown-from-B's standalone B)."""
    total: dict[tuple[str, str, int], int] = defaultdict(int)
    for r in records:
        total[r["method"], r["budget"], r["seed"]] += r["compute"] + r.get("parent_compute", 0)
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
    goal: every gap's upper 95 % end ≤ 3 % at a ratio ≤ 40 %.

    ``gap_of_spread``: the same gaps as a fraction of the standalone S–B difference of the
    seed, ``(method − standalone) / (standalone S − standalone B)`` (1.0: as far from
    standalone as S is from B; with one seed its interval is the sample-paired one scaled by
    standalone / spread, the spread's own noise left out); ``spread``: per resolution,
    ``(S − B) / B`` of the standalone runs; ``horizon``: the standalone runs' steps."""
    spent = method_compute(records)
    alone = {(r["seed"], row["preset"], row["resolution"]): (row, r["compute"])
             for r in records if r["method"] == "standalone" and r["budget"] == "same-steps"
             for row in r["rows"]}
    horizon = max((r.get("horizon", r.get("steps", 0)) for r in records
                   if r["method"] == "standalone"), default=None)
    out = []
    for method in SUPERNETS:
        of_spread: dict[tuple[str, int], list[tuple[float, float]]] = defaultdict(list)
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
                s_b = [alone.get((r["seed"], p, row["resolution"])) for p in "SB"]
                if None not in s_b:
                    spread = s_b[0][0]["val_loss"] - s_b[1][0]["val_loss"]
                    scale = ref[0]["val_loss"] / spread if spread else float("nan")
                    of_spread[key].append(((row["val_loss"] - ref[0]["val_loss"]) / spread
                                           if spread else float("nan"),
                                           gaps[key][-1][1] * scale))
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
        spread_cells = {f"{p}@{res}": _gap_stat(of_spread[p, res]) for p, res in order
                        if of_spread.get((p, res))}
        out.append({"method": method, "horizon": horizon, "gap": cells,
                    "gap_of_spread": spread_cells, "spread": spreads(records),
                    "worst_gap": worst,
                    "worst_upper": worst_upper, "compute_ratio": ratio, "reach": reached,
                    "goal_met": bool(worst_upper <= 0.03 and ratio is not None
                                     and ratio["mean"] <= 0.40)})
    return out


def spreads(records: list[dict]) -> dict[str, dict]:
    """Per resolution, how much better standalone B is than standalone S: ``(S − B) / B`` of
    the same-steps standalone runs, per seed (``{"16": stat}``) — the scale of
    ``gap_of_spread``."""
    by: dict[tuple[int, int], dict[str, float]] = defaultdict(dict)
    for r in records:
        if r["method"] == "standalone" and r["budget"] == "same-steps":
            for row in r["rows"]:
                by[r["seed"], row["resolution"]][row["preset"]] = row["val_loss"]
    out: dict[int, list[float]] = defaultdict(list)
    for (seed, res), v in sorted(by.items()):
        if "S" in v and "B" in v:
            out[res].append(v["S"] / v["B"] - 1)
    return {str(res): _stat(vals) for res, vals in sorted(out.items())}


def _mean_by_seed(records, method) -> dict:
    """``{(preset, res): {seed: (val_loss, compute)}}`` of a method's same-steps records."""
    out: dict[tuple[str, int], dict[int, tuple[float, int]]] = defaultdict(dict)
    for r in records:
        if r["method"] != method or r["budget"] != "same-steps":
            continue
        for row in r["rows"]:
            out[row["preset"], row["resolution"]][r["seed"]] = (
                row["val_loss"], r["compute"] + r.get("parent_compute", 0))
    return out


def log_reach(points: list[tuple[float, float]], target: float) -> dict:
    """The compute at which a loss-vs-compute path through ``points`` ((compute, final loss)
    of separate runs, ascending compute) reaches ``target``: linear in log-compute between
    consecutive points. ``{"macs", "bound"}``: bound ``"reached"`` (interpolated),
    ``"at_most"`` (already at the first point: macs is that point's) or ``"above"`` (not
    reached by the last point: macs None)."""
    pts = sorted(points)
    if not pts:
        return {"macs": None, "bound": "above"}
    if pts[0][1] <= target:
        return {"macs": int(pts[0][0]), "bound": "at_most"}
    for (c0, l0), (c1, l1) in zip(pts, pts[1:]):
        if l1 <= target:
            x = math.log(c0) + (math.log(c1) - math.log(c0)) * (l0 - target) / (l0 - l1)
            return {"macs": int(round(math.exp(x))), "bound": "reached"}
    return {"macs": None, "bound": "above"}


def plateau(records: list[dict], horizons: list[int]) -> dict:
    """The plateau test and compute-to-reach from separate horizons (each run its own full
    schedule). ``change``: per method (supernet, standalone) and preset@res, the final loss at
    2N over N − 1, paired by the seeds trained at both (``plateaued``: |change| < 3 %).
    ``reach``: per supernet method trained at both horizons and preset@res, the compute at
    which its final losses (mean over seeds, at N and 2N) reach each standalone horizon's
    mean final loss, interpolated in log-compute (:func:`log_reach`), also as a fraction of
    that standalone run's compute (``of_standalone``) and of the four standalone runs'
    (``of_four``) at that horizon."""
    if len(horizons) < 2:
        return {}
    at = {h: [r for r in records if r.get("horizon", horizons[0]) == h] for h in horizons}
    n, n2 = horizons[0], horizons[1]
    change: dict[str, dict] = {}
    for method in ("standalone", "supernet"):
        a, b = _mean_by_seed(at[n], method), _mean_by_seed(at[n2], method)
        cells = {}
        for key in sorted(set(a) & set(b), key=lambda k: (k[1], "SMLB".index(k[0]))):
            seeds = sorted(set(a[key]) & set(b[key]))
            if not seeds:
                continue
            lo = float(np.mean([a[key][s][0] for s in seeds]))
            hi = float(np.mean([b[key][s][0] for s in seeds]))
            cells[f"{key[0]}@{key[1]}"] = {
                "N": lo, "2N": hi, "change": hi / lo - 1, "seeds": len(seeds),
                "plateaued": bool(abs(hi / lo - 1) < 0.03)}
        if cells:
            change[method] = cells
    reach: dict[str, dict] = {}
    alone = {h: _mean_by_seed(at[h], "standalone") for h in horizons}
    four = {h: float(np.mean(list(_four(at[h]).values()))) if _four(at[h]) else None
            for h in horizons}
    for method in SUPERNETS:
        sup = {h: _mean_by_seed(at[h], method) for h in horizons}
        if not all(sup[h] for h in horizons):
            continue
        cells = {}
        for key in sup[n]:
            pts = [(float(np.mean([c for _, c in sup[h][key].values()])),
                    float(np.mean([v for v, _ in sup[h][key].values()])))
                   for h in horizons if sup[h].get(key)]
            for h in horizons:
                ref = alone[h].get(key)
                if not ref:
                    continue
                target = float(np.mean([v for v, _ in ref.values()]))
                spent = float(np.mean([c for _, c in ref.values()]))
                got = log_reach(pts, target)
                frac = None if got["macs"] is None else got["macs"] / spent
                cells[f"{key[0]}@{key[1]}@{h}"] = {
                    **got, "target": target, "of_standalone": frac,
                    "of_four": (None if got["macs"] is None or not four[h]
                                else got["macs"] / four[h])}
        reach[method] = cells
    return {"horizons": horizons, "change": change, "reach": reach}


def _four(records: list[dict]) -> dict[int, int]:
    """Per seed, the compute of the four same-steps standalone runs (seeds with all four)."""
    runs: dict[int, dict[str, int]] = defaultdict(dict)
    for r in records:
        if r["method"] == "standalone" and r["budget"] == "same-steps":
            runs[r["seed"]][r["rows"][0]["preset"]] = r["compute"]
    return {s: sum(v.values()) for s, v in runs.items() if len(v) == 4}


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


def _ci_plain(s: dict | None) -> str:
    if s is None:
        return "–"
    text = f"{s['mean']:+.2f}"
    return text + (f" ± {s['ci95']:.2f}" if s.get("ci95") is not None else "")


def _plateau_md(plat: dict) -> list[str]:
    n, n2 = plat["horizons"][:2]
    md = [f"## Horizons {n} and {n2} steps (separate runs, each its own schedule)", "",
          f"Final val loss at {n} and {n2} steps (mean over the seeds trained at both); "
          f"plateaued = changed by less than 3 %.", ""]
    rows = [{"method": m, "cell": k, "n": f"{c['N']:.4f}", "n2": f"{c['2N']:.4f}",
             "change": f"{c['change'] * 100:+.1f} %", "seeds": str(c["seeds"]),
             "plat": "yes" if c["plateaued"] else "no"}
            for m, cells in plat["change"].items() for k, c in cells.items()]
    md += [markdown_table(rows, [("method", "Method"), ("cell", "Preset"), ("n", f"{n}"),
                                 ("n2", f"{n2}"), ("change", "Change"), ("seeds", "Seeds"),
                                 ("plat", "Plateaued")]), ""]
    md += ["Compute at which the supernet's final losses (at the two horizons, interpolated in "
           "log-compute) reach each standalone model's final loss at a horizon, as a fraction "
           "of training the four alone to that horizon (≤: already at the shorter horizon; "
           "> : not by the longer):", ""]
    rt = []
    for m, cells in plat["reach"].items():
        for k, c in cells.items():
            text = "> 2N" if c["macs"] is None else (
                ("≤ " if c["bound"] == "at_most" else "") + f"{c['of_four']:.0%}"
                if c["of_four"] is not None else f"{c['macs'] / 1e12:.2f} TMACs")
            rt.append({"method": m, "cell": k, "reach": text})
    md += [markdown_table(rt, [("method", "Method"), ("cell", "Preset@res@standalone steps"),
                               ("reach", "Compute to reach")]), ""]
    return md


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
    """``results.json`` (rows and goal check at the first horizon, per-run records, meta; with
    a second horizon its rows and goal under ``horizons`` and the plateau test under
    ``plateau``), ``results.md`` and the plot."""
    horizons = meta.get("horizons") or [meta["plan"]["steps"]]
    main = [r for r in records if r.get("horizon", horizons[0]) == horizons[0]]
    goal = goal_check(main)
    longer = {}
    for h in horizons[1:]:
        recs = [r for r in records if r.get("horizon") == h]
        longer[str(h)] = {"rows": aggregate(recs, None), "goal": goal_check(recs)}
    plat = plateau(records, horizons)
    runs = [{k: v for k, v in r.items() if k != "rows"} for r in records]
    path = out / "results.json"
    write_json(path, {"meta": meta, "rows": rows, "goal": goal, "runs": runs,
                      "horizons": longer, "plateau": plat})
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
    if meta.get("partial"):
        missing = meta["partial"]["missing"]
        md += [f"**Partial report** (`--partial`): {meta['partial']['finished']} runs finished, "
               f"{len(missing)} still missing ({', '.join(missing) or 'none'}).", ""]
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
        spread = goal[0].get("spread") or {}
        md += ["The same gaps as a fraction of the standalone S–B difference (S − B of the "
               "same seed; 1.0 = as far from standalone as S is from B): " + ", ".join(
                   f"standalone B is {_ci(v).replace('%', '% better than S')} at {res} px"
                   for res, v in spread.items()) + ".", ""]
        st = [{"method": g["method"], **{k: _ci_plain(g["gap_of_spread"].get(k))
                                         for k in keys}} for g in goal]
        md += [markdown_table(st, [("method", "Method")] + [(k, k) for k in keys]), ""]
    if plat and (plat.get("change") or plat.get("reach")):  # a partial study may have no 2N run
        md += _plateau_md(plat)
    md += ["![val loss vs compute](val_loss_vs_compute.png)", ""]
    atomic_write_text(out / "results.md", "\n".join(md))
    return path
