"""Architecture search over a trained supernet: evolution, random baseline and Pareto fronts.

::

    from sned.search import (Constraints, evolutionary_search, plot_pareto, random_search,
                             save_pareto_json)

    caps = Constraints(max_params=2e6)
    evo = evolutionary_search(space, evaluate, budget=200, constraints=caps, seed=0)
    rnd = random_search(space, evaluate, budget=200, constraints=caps, seed=0)
    save_pareto_json("out/pareto.json", evo.points)
    plot_pareto("out/pareto.png", {"evolution": evo.points, "random": rnd.points})
"""

from __future__ import annotations

from .evolution import (ArchScore, Constraints, Point, SearchError, SearchResult, canonical, crossover,
                        evolutionary_search, mutate, random_search)
from .pareto import (hypervolume_2d, load_pareto_json, pareto_front, plot_pareto,
                     reference_point, save_arch, save_pareto_json)

__all__ = ["ArchScore", "Constraints", "Point", "SearchError", "SearchResult", "canonical", "crossover",
           "evolutionary_search", "hypervolume_2d", "load_pareto_json", "mutate",
           "pareto_front", "plot_pareto", "random_search", "reference_point", "save_arch",
           "save_pareto_json"]
