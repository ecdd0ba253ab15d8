"""``DataConfig``: where training videos and captions come from (the ``data`` section of a run)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config_parsing import ConfigError, section_from_dict
from .synthetic import MOTION_STARTS


@dataclass(frozen=True)
class DataConfig:
    """Where training videos and captions come from.

    Attributes:
        kind: ``synthetic`` (the embedded captioned shapes set) or ``folder``.
        root: folder of videos / frame folders (``kind=folder``).
        captions: optional CSV/JSONL sidecar of captions (``kind=folder``).
        num_videos: size of the synthetic set.
        max_objects: objects per synthetic video.
        textured_background: synthetic backgrounds with texture.
        motion_start: where a synthetic object starts along its motion: ``anywhere`` (a
            uniform start such that the motion stays in frame) or ``edge`` (at the margin it
            moves away from — "moving left" enters from the right — so that the caption's
            direction also says where the object is: issue 31).
        stride: frame stride of clips (``kind=folder``).
        num_workers: DataLoader workers; ``auto`` (the default): none when training on the
            CPU (workers would take the cores the step computes on), else
            ``min(8, CPUs per rank - 1)`` so decoding and rendering overlap the GPU step.
        text_encoder: local Hugging Face encoder folder; None = packaged all-MiniLM-L6-v2.
        seed: dataset seed.
        val_fraction: ``kind=folder``: share of the videos (chosen by a hash of their relative
            path, stable when files are added) held out from training for evaluation, search
            and FVD's real set.
    """

    kind: str = "synthetic"
    root: str | None = None
    captions: str | None = None
    num_videos: int = 1024
    max_objects: int = 1
    textured_background: bool = False
    motion_start: str = "anywhere"
    stride: int = 1
    num_workers: int | str = "auto"
    text_encoder: str | None = None
    seed: int = 0
    val_fraction: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in [0, 1), got {self.val_fraction!r}")
        if self.motion_start not in MOTION_STARTS:
            raise ConfigError(f"data.motion_start {self.motion_start!r} must be one of "
                              f"{list(MOTION_STARTS)}")
        if self.kind not in ("synthetic", "folder"):
            raise ConfigError(f"data.kind {self.kind!r} must be 'synthetic' or 'folder'")
        if self.kind == "folder" and not self.root:
            raise ConfigError("data.root is required when data.kind is 'folder'")
        workers = self.num_workers
        if isinstance(workers, str) and workers != "auto":
            try:
                workers = int(workers, 10)
            except ValueError:
                raise ConfigError(f"data.num_workers: expected an integer or 'auto' (got "
                                  f"{self.num_workers!r})") from None
            object.__setattr__(self, "num_workers", workers)
        if isinstance(workers, bool) or not isinstance(workers, (int, str)):
            raise ConfigError(f"data.num_workers: expected an integer or 'auto' (got "
                              f"{self.num_workers!r})")
        if self.num_videos < 1 or self.stride < 1 or (isinstance(workers, int)
                                                      and workers < 0):
            raise ConfigError("data.num_videos and data.stride must be >= 1, "
                              "data.num_workers >= 0")

    @classmethod
    def from_dict(cls, raw: dict | None, source: str = "data") -> "DataConfig":
        """A DataConfig from a mapping (e.g. the ``data`` section of a run's ``state.json``);
        unknown keys and bad values raise ConfigError naming ``source`` and the key."""
        return section_from_dict(cls, raw, "data", source)
