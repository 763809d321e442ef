"""Where a result came from: the typed provenance record a :class:`segvlm.types.VideoSegmentation` carries.

The pipeline fills a :class:`Provenance` (the backends and checkpoints it ran, whether their weights were
random, the tracking settings, timings); consumers read its fields (``result.provenance.random_weights``)
instead of looking up string keys. Saved results hold its JSON form (``VideoSegmentation.meta``, the
``segvlm.meta`` entry of ``masks.json``), which :meth:`Provenance.to_json` writes and
:meth:`Provenance.from_json` reads back; keys this version does not know are kept in ``extra``, so a record
written by another tool or version survives a round trip.

This module imports nothing from segvlm, so every package can use it without an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class StageRecord:
    """The backend one stage ran.

    Attributes:
        name: the backend's registry name (``owlv2``, ``sam2``...).
        model: the checkpoint (hub id, folder or ``tiny-random:<kind>``).
        box_threshold: the grounder's detection threshold (None for a segmenter).
        options: the backend's own options as configured (empty when none were set).
    """

    name: str
    model: str
    box_threshold: float | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "model": self.model}
        if self.box_threshold is not None:
            data["box_threshold"] = self.box_threshold
        if self.options:
            data["options"] = dict(self.options)
        return data

    @classmethod
    def from_json(cls, data: Any) -> StageRecord | None:
        if not isinstance(data, dict) or "name" not in data:
            return None
        options = data.get("options")
        return cls(
            str(data["name"]),
            str(data.get("model", "")),
            data.get("box_threshold"),
            dict(options) if isinstance(options, dict) else {},
        )


@dataclass(frozen=True)
class TrackingRecord:
    """The tracking settings that decide which objects a run finds (see :class:`segvlm.config.TrackingConfig`)."""

    reground_every: int
    match_iou: float

    def to_json(self) -> dict[str, Any]:
        return {"reground_every": self.reground_every, "match_iou": self.match_iou}

    @classmethod
    def from_json(cls, data: Any) -> TrackingRecord | None:
        if not isinstance(data, dict) or "reground_every" not in data or "match_iou" not in data:
            return None
        return cls(data["reground_every"], data["match_iou"])


# The keys a pipeline run always writes, in the order it writes them.
_RUN_KEYS = (
    "segvlm_version",
    "preset",
    "grounder",
    "segmenter",
    "reranker",
    "tracking",
    "max_frames",
    "random_weights",
)


@dataclass(frozen=True)
class Provenance:
    """What produced a result.

    Attributes:
        segvlm_version: the version that ran the pipeline (None for a result not made by the pipeline).
        preset: the preset the configuration came from.
        grounder, segmenter: the backends and checkpoints that ran.
        reranker: the CLIP re-ranker's model, None when it was off.
        tracking: the tracking settings.
        max_frames: the frame limit of the run.
        random_weights: a model with random weights (``tiny-random:``) ran: boxes and masks are meaningless.
        seconds: wall time of the run.
        stopped_after_frames: the run was stopped early (``StopPipeline``) after this many frames.
        agent_seconds: wall time of an agent tool call that ran the pipeline.
        annotated_by_hand: the result was made by hand in ``segvlm annotate`` (no pipeline ran).
        extra: keys this version does not know (another tool's, a labeler's), kept as read.
    """

    segvlm_version: str | None = None
    preset: str | None = None
    grounder: StageRecord | None = None
    segmenter: StageRecord | None = None
    reranker: str | None = None
    tracking: TrackingRecord | None = None
    max_frames: int | None = None
    random_weights: bool = False
    seconds: float | None = None
    stopped_after_frames: int | None = None
    agent_seconds: float | None = None
    annotated_by_hand: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def from_pipeline(self) -> bool:
        """True for the record of a pipeline run (it names the segmenter that ran)."""
        return self.segmenter is not None

    def to_json(self) -> dict[str, Any]:
        """The JSON form saved with a result. A pipeline run's record always holds the run keys (``null`` where
        unset); the other facts appear only when set."""
        data: dict[str, Any] = {}
        if self.from_pipeline:
            data.update(
                segvlm_version=self.segvlm_version,
                preset=self.preset,
                grounder=self.grounder.to_json() if self.grounder else None,
                segmenter=self.segmenter.to_json(),
                reranker=self.reranker,
                tracking=self.tracking.to_json() if self.tracking else None,
                max_frames=self.max_frames,
                random_weights=self.random_weights,
            )
        else:
            for key in ("segvlm_version", "preset", "reranker", "max_frames"):
                if getattr(self, key) is not None:
                    data[key] = getattr(self, key)
            if self.random_weights:
                data["random_weights"] = True
        for key in ("stopped_after_frames", "seconds", "agent_seconds"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        if self.annotated_by_hand:
            data["annotated_by_hand"] = True
        data.update({key: value for key, value in self.extra.items() if key not in data})
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Provenance:
        """The record saved as ``data`` (a result's ``meta``); tolerant of missing keys and older files."""
        data = dict(data or {})
        known = {
            *_RUN_KEYS,
            "seconds",
            "stopped_after_frames",
            "agent_seconds",
            "annotated_by_hand",
        }
        return cls(
            segvlm_version=data.get("segvlm_version"),
            preset=data.get("preset"),
            grounder=StageRecord.from_json(data.get("grounder")),
            segmenter=StageRecord.from_json(data.get("segmenter")),
            reranker=data.get("reranker"),
            tracking=TrackingRecord.from_json(data.get("tracking")),
            max_frames=data.get("max_frames"),
            random_weights=bool(data.get("random_weights", False)),
            seconds=data.get("seconds"),
            stopped_after_frames=data.get("stopped_after_frames"),
            agent_seconds=data.get("agent_seconds"),
            annotated_by_hand=bool(data.get("annotated_by_hand", False)),
            extra={key: value for key, value in data.items() if key not in known},
        )
