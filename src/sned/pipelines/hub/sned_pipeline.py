"""``custom_pipeline=`` target: the installed :class:`sned.SnedPipeline` (see ``__init__``)."""

from sned.pipelines.diffusers_pipeline import SnedPipeline  # noqa: F401
