"""State shared by the tools of one :func:`segvlm.agents.get_tools` call.

One :class:`ToolRuntime` holds the path guard, one lazily built :class:`segvlm.Pipeline` (models load on the
first call, once, then every tool reuses them), the VLM for describe_region, and the latest result per
input so that describe_region can refer to a track id found by an earlier call. A lock serialises model
use, so tools invoked from several threads (parallel tool calls) never share a segmenter session.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.tools import ToolException

from segvlm.agents.config import AgentToolsConfig
from segvlm.agents.paths import PathGuard
from segvlm.types import VideoSegmentation
from segvlm.video import VIDEO_SUFFIXES

_CACHE_SIZE = 16


class _TimeLimitReached(Exception):
    """Raised from the pipeline's per-frame callback to stop a call that ran out of time."""


@dataclass
class PipelineRun:
    """One bounded pipeline call: the result and what the limits changed (said to the agent in ``notes``)."""

    result: VideoSegmentation
    notes: list[str]


class ToolRuntime:
    """Pipeline, VLM, limits and recent results behind the tools (see the module docstring)."""

    def __init__(self, config: AgentToolsConfig):
        self.config = config
        self.guard = PathGuard(config.roots, config.output_dir)
        self._pipeline = config.pipeline
        self._pipeline_config = None if config.pipeline is not None else self._resolve_config(config)
        self._pipeline_ready = False
        self._vlm = config.vlm if not isinstance(config.vlm, (str, Path)) else None
        self.lock = threading.RLock()
        self._results: OrderedDict[Path, VideoSegmentation] = OrderedDict()

    @staticmethod
    def _resolve_config(config: AgentToolsConfig) -> Any:
        """The PipelineConfig to build from, read now (cheap) so that a bad preset fails in get_tools."""
        from segvlm.config import load_config

        resolved = config.pipeline_config or load_config(config.preset)
        if config.device is not None:
            resolved = dataclasses.replace(resolved, device=config.device)  # never edit the caller's object
        return resolved

    # -- models -------------------------------------------------------------------------------------------
    @property
    def pipeline(self) -> Any:
        """The shared Pipeline with its models loaded (built and loaded on first access only)."""
        with self.lock:
            if self._pipeline is None:
                from segvlm.tracking import Pipeline

                self._pipeline = Pipeline(self._pipeline_config)
            if not self._pipeline_ready:
                _ = self._pipeline.grounder, self._pipeline.segmenter, self._pipeline.reranker
                self._pipeline_ready = True
            return self._pipeline

    @property
    def vlm(self) -> Any:
        """The VLM for describe_region, loaded on first use; a ToolException when none is configured."""
        with self.lock:
            if self._vlm is None and isinstance(self.config.vlm, (str, Path)):
                from segvlm.vlm import MaskAwareVLM

                self._vlm = MaskAwareVLM.from_pretrained(
                    str(self.config.vlm), mask_tokenizer=self.config.vlm_mask_tokenizer
                )
            if self._vlm is None:
                raise ToolException(
                    "describe_region is not available: no VLM is configured for these tools; use segment_image, "
                    "track_video or count_objects instead (the application can enable it with "
                    "AgentToolsConfig(vlm=...))"
                )
            return self._vlm

    # -- running ------------------------------------------------------------------------------------------
    def run_pipeline(self, query: str, path: Path, max_frames: int | None = None, stride: int = 1) -> PipelineRun:
        """Segment ``query`` in ``path`` within the frame and time limits; remembers the result for ``path``."""
        notes = []
        limit = self.config.max_frames
        if max_frames is None:
            max_frames = limit
        elif max_frames > limit:
            notes.append(f"max_frames={max_frames} is above this tool's limit of {limit}; processed at most {limit}")
            max_frames = limit
        with self.lock:
            pipeline = self.pipeline
            on_frame, clock = self._deadline(path)
            try:
                result = pipeline(query, str(path), max_frames=max_frames, stride=stride, on_frame=on_frame)
            except _TimeLimitReached as stop:
                raise ToolException(str(stop)) from None
            notes.extend(self._truncation_note(result, path, max_frames, stride))
            result.provenance = dataclasses.replace(result.provenance, agent_seconds=round(clock(), 3))
            self.remember(path, result)
        return PipelineRun(result, notes)

    def _deadline(self, path: Path) -> tuple[Callable[..., None] | None, Callable[[], float]]:
        started = time.perf_counter()
        limit = self.config.time_limit_s

        def elapsed() -> float:
            return time.perf_counter() - started

        if limit is None:
            return None, elapsed

        def on_frame(frame: Any, progress: Any) -> None:
            if elapsed() > limit:
                raise _TimeLimitReached(
                    f"stopped after {progress.frames_done} frames of {self.guard.display(path)}: the call took "
                    f"{elapsed():.0f} s, over the time limit of {limit:g} s; call again with a smaller max_frames "
                    f"or a larger stride (about {max(progress.frames_done - 1, 1)} frames fit in the limit)"
                )

        return on_frame, elapsed

    @staticmethod
    def _truncation_note(result: VideoSegmentation, path: Path, max_frames: int, stride: int) -> list[str]:
        if len(result) < max_frames or path.suffix.lower() not in VIDEO_SUFFIXES:
            return []
        from segvlm.video import read_frames

        total = read_frames(str(path)).meta.num_frames
        if total is None or total <= result.frames[-1].frame_index + stride:
            return []
        return [
            f"processed {len(result)} frames (up to source frame {result.frames[-1].frame_index}) of about {total}; "
            "the rest of the video was not looked at"
        ]

    # -- results ------------------------------------------------------------------------------------------
    def remember(self, path: Path, result: VideoSegmentation) -> None:
        self._results.pop(path, None)
        self._results[path] = result
        while len(self._results) > _CACHE_SIZE:
            self._results.popitem(last=False)

    def recall(self, path: Path) -> VideoSegmentation | None:
        """The latest result computed for ``path`` by any tool of this runtime, or None."""
        return self._results.get(path)
