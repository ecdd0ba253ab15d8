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
