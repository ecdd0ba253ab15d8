"""DiffNAS (arXiv 2311.04950): distillation-based block-wise NAS from a pretrained teacher.

:func:`run_diffnas` runs the whole pipeline (``sned diffnas``): block-wise supernet training
with distillation supervision (:mod:`.search`), block-wise local search, retraining with the
dynamic joint loss (:mod:`.retrain`) and the comparison report (:mod:`.report`).
"""

from .pipeline import Options, run_diffnas

__all__ = ["Options", "run_diffnas"]
