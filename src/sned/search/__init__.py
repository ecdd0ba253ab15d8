"""Architecture search over a trained supernet: evolution, random baseline and Pareto fronts.

::

    from sned.search import evolutionary_search, random_search, save_pareto_json, plot_pareto

    evo = evolutionary_search(space, evaluate, budget=200, max_params=2e6, seed=0)
    rnd = random_search(space, evaluate, budget=200, max_params=2e6, seed=0)
    save_pareto_json("out/pareto.json", evo.points)
    plot_pareto("out/pareto.png", {"evolution": evo.points, "random": rnd.points})
"""

from __future__ import annotations

from .evolution import (Point, SearchError, SearchResult, canonical, crossover,
                        evolutionary_search, mutate, random_search)
from .pareto import (hypervolume_2d, load_pareto_json, pareto_front, plot_pareto,
                     reference_point, save_arch, save_pareto_json)

__all__ = ["Point", "SearchError", "SearchResult", "canonical", "crossover",
           "evolutionary_search", "hypervolume_2d", "load_pareto_json", "mutate",
           "pareto_front", "plot_pareto", "random_search", "reference_point", "save_arch",
           "save_pareto_json"]
