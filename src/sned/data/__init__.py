"""Datasets: synthetic captioned shapes and folders of real videos.

Both yield dicts with ``video`` (3, T, H, W) float32 in [-1, 1] and ``caption`` (str); batch
them with :func:`collate` (``video`` → (B, 3, T, H, W), other keys → lists).
"""

from .folder import (CaptionFileError, NoVideosError, SkippedVideoWarning, SkipTally,
                     VideoFolderDataset, split_of)
from .synthetic import (COLORS, DIRECTIONS, SHAPES, SPEEDS, SyntheticVideoDataset, caption_for,
                        held_out_prompts, render, sample_attributes, sample_prompts)
from .transforms import collate, frames_to_video, resize_center_crop, resize_video

__all__ = [
    "COLORS", "DIRECTIONS", "SHAPES", "SPEEDS", "CaptionFileError", "NoVideosError",
    "SkipTally", "SkippedVideoWarning", "SyntheticVideoDataset", "VideoFolderDataset",
    "caption_for", "collate", "frames_to_video", "held_out_prompts", "render",
    "resize_center_crop", "resize_video", "sample_attributes", "sample_prompts", "split_of",
]
