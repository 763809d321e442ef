"""segvlm: text-grounded video segmentation, and masks as a VLM input modality.

``segvlm.pipeline("segment the red car", "drive.mp4")`` grounds the phrase with an open-vocabulary
detector, tracks the objects with SAM 2 and returns a :class:`VideoSegmentation`.

Importing segvlm is cheap: torch and transformers load only when a model is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from segvlm.lazy import lazy_getattr

__version__ = "0.1.0"

# Public names and the module each lives in, resolved on first access (PEP 562).
_EXPORTS = {
    "pipeline": "segvlm.tracking",
    "Pipeline": "segvlm.tracking",
    "Progress": "segvlm.tracking",
    "PipelineConfig": "segvlm.config",
    "load_config": "segvlm.config",
    "list_presets": "segvlm.config",
    "parse_query": "segvlm.query",
    "read_frames": "segvlm.video",
    "RLE": "segvlm.masks",
    "Detection": "segvlm.types",
    "ObjectMask": "segvlm.types",
    "FrameResult": "segvlm.types",
    "Track": "segvlm.types",
    "VideoInfo": "segvlm.types",
    "VideoSegmentation": "segvlm.types",
    "SegvlmError": "segvlm.errors",
    "VideoReadError": "segvlm.errors",
    "QueryError": "segvlm.errors",
    "UnknownBackendError": "segvlm.errors",
    "ConfigError": "segvlm.errors",
    "CorrectionSession": "segvlm.corrections.session",
}

__all__ = [
    "__version__",
    "pipeline",
    "Pipeline",
    "Progress",
    "PipelineConfig",
    "load_config",
    "list_presets",
    "parse_query",
    "read_frames",
    "RLE",
    "Detection",
    "ObjectMask",
    "FrameResult",
    "Track",
    "VideoInfo",
    "VideoSegmentation",
    "SegvlmError",
    "VideoReadError",
    "QueryError",
    "UnknownBackendError",
    "ConfigError",
    "CorrectionSession",
]


__getattr__ = lazy_getattr(__name__, _EXPORTS)


if TYPE_CHECKING:
    from segvlm.config import PipelineConfig, list_presets, load_config
    from segvlm.corrections.session import CorrectionSession
    from segvlm.errors import ConfigError, QueryError, SegvlmError, UnknownBackendError, VideoReadError
    from segvlm.masks import RLE
    from segvlm.query import parse_query
    from segvlm.tracking import Pipeline, Progress, pipeline
    from segvlm.types import Detection, FrameResult, ObjectMask, Track, VideoInfo, VideoSegmentation
    from segvlm.video import read_frames
