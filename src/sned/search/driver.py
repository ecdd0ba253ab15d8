"""``sned search`` as a function: search one loaded supernet and write the front.

:func:`search_denoiser` runs the evolutionary search (and the random baseline with the same
budget) on a :class:`sned.loading.Denoiser` against the validation-loss proxy (or any
``objective(arch) -> float``), then writes ``pareto.json``, ``pareto_random.json``,
``pareto.png``, ``search.json`` and, under a latency budget, ``latency_table.json``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

from ..metrics.latency import LatencyTable, denoiser_latency
from ..models.inputs import example_inputs
from .evolution import Constraints, Point, evolutionary_search, random_search
from .pareto import hypervolume_2d, pareto_front, plot_pareto, reference_point, save_pareto_json
from ..store.files import atomic_write_text
from .proxy import heldout_proxy


def search_denoiser(den, out: Path, resolution: int, *, budget: int = 100,
                    population: int = 16, n_videos: int = 32, frames: int | None = None,
                    constraints: Constraints = Constraints(), random_baseline: bool = True,
                    seed: int = 0, objective: Callable | None = None, data=None
                    ) -> tuple[dict, list[Point]]:
    """Search ``den``'s supernet at ``resolution`` under ``constraints`` (a latency cap is
    measured on this machine unless ``constraints.latency_fn`` is given); returns (summary,
    evolution's front).

    ``objective`` defaults to the validation-loss proxy on ``n_videos`` held-out clips of
    ``frames`` frames of ``data`` (the run's DataConfig, :mod:`sned.heldout`; None = synthetic);
    its source record goes into ``search.json`` and every point of ``pareto.json``
    (``val_data``).
    """
    space = den.space  # the floors the supernet was trained to
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if objective is None:
        objective = heldout_proxy(den.model, den.diffusion, resolution, n_videos, frames,
                                  data=data, codec=den.codec)
    val_data = getattr(objective, "source", None)
    if constraints.max_latency_ms and constraints.latency_fn is None:
        table = LatencyTable(out / "latency_table.json")
        inputs = example_inputs(den.model, batch=1, resolution=resolution, frames=frames)
        latency_fn = table.latency_fn(den.config.name, resolution, inputs["sample"].shape[2],
                                      1, "fp32", lambda a: denoiser_latency(den.model, a, inputs))
        constraints = dataclasses.replace(constraints, latency_fn=latency_fn)
    common = dict(budget=budget, resolution=resolution, frames=frames, constraints=constraints,
                  seed=seed)
    evo = evolutionary_search(space, objective, population_size=population,
                              parents=max(1, min(5, population // 3)), **common)
    runs = {"evolution": evo.points}
    summary = {"config": den.config.name, "checkpoint": den.source, "resolution": resolution,
               "budget": budget, "evolution": evo.summary(), "val_data": val_data}
    if random_baseline:
        rnd = random_search(space, objective, **common)
        runs["random"] = rnd.points
        ref, ideal = reference_point(evo.points, rnd.points)
        hv = {k: hypervolume_2d(pareto_front(v), ref, ideal_point=ideal) for k, v in runs.items()}
        summary.update(random=rnd.summary(), hypervolume=hv,
                       best_val_loss={"evolution": evo.best.objective,
                                      "random": rnd.best.objective})
        save_pareto_json(out / "pareto_random.json", rnd.points, val_data=val_data)
    save_pareto_json(out / "pareto.json", evo.points, val_data=val_data)
    plot_pareto(out / "pareto.png", runs, title=f"{den.config.name} @ {resolution}px")
    atomic_write_text(out / "search.json", json.dumps(summary, indent=1, default=str))
    return summary, pareto_front(evo.points)


def search_schedule_denoiser(den, out: Path, resolution: int, segments: int, *,
                             max_macs: float | None = None, max_macs_fraction: float | None = None,
                             scheduler: str = "ddim", steps: int = 50, budget: int = 24,
                             levels: int = 3, n_videos: int = 32, pairs_per_clip: int = 8,
                             frames: int | None = None, data=None, seed: int = 0
                             ) -> dict:
    """``sned search --schedule-segments K``: search an arch per segment of the sampler's
    trajectory (:mod:`sned.search.schedules`) under a cap on its MACs — ``max_macs``, or
    ``max_macs_fraction`` of B's trajectory (B: the largest arch under the resolution's cap).

    Writes ``schedules.json`` (the front, the presets as one-arch schedules, B's trajectory
    MACs, the held-out set), ``best.json`` (the best schedule under the cap, a schedule file
    ``sned sample --schedule`` takes), ``schedule_pareto.png`` and ``report.md`` / ``.html``.
    ``budget``: distinct archs scored per segment, split over ``levels`` per-forward caps.
    """
    from ..report import write_report
    from ..schedule import Schedule, sampler_timesteps, trajectory_macs
    from .schedules import TrajectoryObjective, search_schedule

    space = den.space
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frames = den.config.frames if frames is None else frames
    T = den.diffusion.num_train_timesteps
    ts = sampler_timesteps(den.diffusion, scheduler, steps)
    top = space.largest_under_cap(resolution)
    b_macs = trajectory_macs(Schedule.single(top, T, "B"), space, ts, frames)
    cap = max_macs if max_macs_fraction is None else max_macs_fraction * b_macs
    proxy = heldout_proxy(den.model, den.diffusion, resolution, n_videos, frames, data=data,
                          codec=den.codec, pairs_per_clip=pairs_per_clip)
    objective = TrajectoryObjective(proxy, ts)
    found = search_schedule(space, objective, segments, cap, resolution=resolution,
                            frames=frames, budget=max(1, -(-budget // levels)), levels=levels,
                            seed=seed)

    def row(schedule: Schedule) -> dict:
        macs = trajectory_macs(schedule, space, ts, frames)
        return {"label": schedule.label, "macs": macs, "fraction_of_B": macs / b_macs,
                **objective.evaluate(schedule), "schedule": schedule.to_dict()}

    front = [row(p.schedule(space, ts, found["segments"], T)) for p in found["front"]]
    presets = [row(Schedule.single(space.preset(p, resolution), T, p)) for p in "SMLB"]
    best = None
    if found["best"] is not None:
        sched = found["best"].schedule(space, ts, found["segments"], T)
        sched.save(out / "best.json")
        best = row(sched)
    summary = {"config": den.config.name, "checkpoint": den.source, "resolution": resolution,
               "frames": frames, "scheduler": scheduler, "steps": steps, "timesteps": ts,
               "segments": [[ts[r[0]], ts[r[-1]]] for r in found["segments"]],
               "max_macs": cap, "B_macs": b_macs, "budget": budget, "levels": levels,
               "evaluated": found["evaluated"], "pairs": int(proxy.t.numel()),
               "val_data": proxy.source, "best": best, "front": front, "presets": presets}
    (out / "schedules.json").write_text(json.dumps(summary, indent=1, default=str))
    _plot_schedule_front(out / "schedule_pareto.png", front, presets, b_macs, cap)
    cols = [("label", "Schedule (subnet + timesteps)"), ("pct", "% of B's MACs"),
            ("obj", "Trajectory val loss [95 %]")]
    table = [{"label": r["label"], "pct": f"{100 * r['fraction_of_B']:.1f}",
              "obj": f"{r['mean']:.4f} [{r['ci95'][0]:.4f}–{r['ci95'][1]:.4f}]"}
             for r in front + presets]
    intro = (f"{den.source}: an arch per segment of the {scheduler} trajectory ({steps} steps, "
             f"{segments} segments of consecutive steps) at {resolution}px, {frames} frames; "
             f"cap {_cap_text(cap, b_macs)}; objective: "
             f"the held-out val loss along the trajectory on {summary['pairs']} pairs "
             f"(search-time estimate: the same pairs chose the schedule).")
    write_report(out, "sned search --schedule-segments", intro,
                 [{"title": "Pareto front (schedules) and the presets", "rows": table,
                   "columns": cols, "images": ["schedule_pareto.png"]}])
    return summary


def _plot_schedule_front(path: Path, front: list[dict], presets: list[dict], b_macs: int,
                         cap: float | None) -> None:
    import matplotlib
    from matplotlib.figure import Figure

    matplotlib.use("Agg", force=False)
    fig = Figure(figsize=(6, 4), dpi=110)
    ax = fig.add_subplot()
    for rows, style, name in ((front, "o-", "searched schedules"), (presets, "s--", "presets")):
        xs = [100 * r["fraction_of_B"] for r in rows]
        ax.errorbar(xs, [r["mean"] for r in rows],
                    yerr=[[r["mean"] - r["ci95"][0] for r in rows],
                          [r["ci95"][1] - r["mean"] for r in rows]], fmt=style, ms=4,
                    capsize=2, label=name)
    for r in presets:
        ax.annotate(r["label"].split("@")[0], (100 * r["fraction_of_B"], r["mean"]),
                    textcoords="offset points", xytext=(4, 4), fontsize=8)
    if cap:
        ax.axvline(100 * cap / b_macs, color="grey", lw=0.8, ls=":", label="cap")
    ax.set_xlabel("sampling MACs (% of B's trajectory)")
    ax.set_ylabel("held-out val loss along the trajectory")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def _cap_text(cap: float | None, b_macs: int) -> str:
    if cap is None:
        return f"none (B's trajectory: {b_macs:,} MACs)"
    return f"{cap:,.0f} MACs ({100 * cap / b_macs:.0f} % of B's {b_macs:,})"
