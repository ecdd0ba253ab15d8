"""``custom_pipeline=`` target: the installed :class:`sned.SnedLatentPipeline` (see
``__init__``)."""

from sned.pipelines.diffusers_pipeline import SnedLatentPipeline  # noqa: F401
