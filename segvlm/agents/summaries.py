"""What the tools tell the model: small dataclasses, rendered as compact JSON.

The agent reads these as text, so they carry only what helps it decide the next step (ids, labels, boxes,
frame ranges, where files were written) with numbers rounded; masks themselves stay in the artifacts.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segvlm.types import FrameResult, VideoSegmentation

BoxList = list[float]


def to_json(summary: object) -> str:
    """A dataclass as compact JSON text (no spaces), ``None`` fields dropped."""
    data = dataclasses.asdict(summary)
    return json.dumps(_drop_none(data), separators=(",", ":"), ensure_ascii=False)


def _drop_none(value: object) -> object:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def round_box(box: tuple[float, ...] | np.ndarray) -> BoxList:
    return [round(float(v), 1) for v in box]


@dataclass
class ToolArtifact:
    """What a tool hands back to the program (not the model) next to its text: ``ToolMessage.artifact``.

    Attributes:
        output_dir: the call's output folder, when it wrote files.
        mask_files: one PNG per object (segment_image) or the described region (describe_region).
        overlay_path: the overlay picture or video.
        coco_path: ``masks.json``, COCO instances with RLE masks (reload with ``VideoSegmentation.load``).
        result: the full :class:`segvlm.types.VideoSegmentation`, when the tool ran the pipeline.
    """

    output_dir: Path | None = None
    mask_files: list[Path] = field(default_factory=list)
    overlay_path: Path | None = None
    coco_path: Path | None = None
    result: VideoSegmentation | None = None

    def paths(self) -> list[Path]:
        """Every file this call wrote."""
        return [*self.mask_files, *(p for p in (self.overlay_path, self.coco_path) if p is not None)]


@dataclass
class ObjectSummary:
    """One object in an image: ``id`` (usable as ``track_id`` in describe_region), label, score, box
    ``[x0, y0, x1, y1]`` in pixels, ``area_share`` = mask pixels / image pixels."""

    id: int
    label: str
    score: float
    box: BoxList
    area_share: float


@dataclass
class ImageSegmentSummary:
    """segment_image's answer."""

    image: str
    width: int
    height: int
    query: str
    phrases: list[str]
    objects: list[ObjectSummary]
    overlay: str
    coco_file: str
    mask_files: list[str]
    warning: str | None = None


@dataclass
class TrackSummary:
    """One tracked object over a video.

    ``present_ranges`` lists runs of consecutive processed frames as ``[first, last]`` source frame indices;
    ``mean_box`` is the average ``[x0, y0, x1, y1]`` over the frames where it is visible.
    """

    id: int
    label: str
    score: float
    first_frame: int
    last_frame: int
    frames_present: int
    present_ranges: list[list[int]]
    mean_box: BoxList


@dataclass
class VideoTrackSummary:
    """track_video's answer."""

    video: str
    width: int
    height: int
    fps: float | None
    stride: int
    frames_processed: int
    frame_range: list[int]
    query: str
    phrases: list[str]
    tracks: list[TrackSummary]
    overlay_video: str
    coco_file: str
    notes: list[str] = field(default_factory=list)
    warning: str | None = None


@dataclass
class FrameCounts:
    """Objects per phrase in one source frame."""

    frame: int
    counts: dict[str, int]


@dataclass
class CountSummary:
    """count_objects' answer.

    ``counts``: distinct objects per phrase (tracks, for a video). For a video, ``max_in_frame`` is the
    largest number seen in one frame and ``per_frame`` lists the counts at the first frame and at every
    frame where they change (the counts hold until the next entry).
    """

    path: str
    kind: str
    query: str
    counts: dict[str, int]
    total: int
    frames_processed: int
    max_in_frame: dict[str, int] | None = None
    per_frame: list[FrameCounts] | None = None
    coco_file: str | None = None
    notes: list[str] = field(default_factory=list)
    warning: str | None = None


@dataclass
class RegionSummary:
    """The region describe_region asked about: a track's mask, or a box."""

    frame: int
    box: BoxList
    track_id: int | None = None
    label: str | None = None


@dataclass
class DescribeSummary:
    """describe_region's answer."""

    path: str
    question: str
    region: RegionSummary
    answer: str
    mask_file: str


# -- builders -------------------------------------------------------------------------------------------------
def object_summaries(frame: FrameResult) -> list[ObjectSummary]:
    pixels = max(frame.height * frame.width, 1)
    return [
        ObjectSummary(
            obj.track_id, obj.label, round(obj.score, 3), round_box(obj.box_xyxy), round(obj.area / pixels, 4)
        )
        for obj in frame
    ]


def _runs(frame_indices: list[int], processed: list[int]) -> list[list[int]]:
    """Runs of consecutive *processed* frames, as ``[first, last]`` source indices."""
    position = {index: k for k, index in enumerate(processed)}
    runs: list[list[int]] = []
    previous = None
    for index in frame_indices:
        if previous is not None and position[index] == position[previous] + 1:
            runs[-1][1] = index
        else:
            runs.append([index, index])
        previous = index
    return runs


def track_summaries(result: VideoSegmentation) -> list[TrackSummary]:
    processed = [frame.frame_index for frame in result]
    summaries = []
    for track in result.tracks():
        boxes = np.asarray([obj.box_xyxy for obj in result.masklet(track.track_id).values()], dtype=np.float64)
        summaries.append(
            TrackSummary(
                id=track.track_id,
                label=track.label,
                score=round(track.mean_score, 3),
                first_frame=track.first_frame,
                last_frame=track.last_frame,
                frames_present=len(track),
                present_ranges=_runs(list(track.frame_indices), processed),
                mean_box=round_box(boxes.mean(axis=0)),
            )
        )
    return summaries


def frame_counts(frame: FrameResult, phrases: list[str]) -> dict[str, int]:
    counted = Counter(obj.label for obj in frame)
    labels = list(dict.fromkeys([*phrases, *counted]))
    return {label: counted.get(label, 0) for label in labels}


def count_summary(result: VideoSegmentation, path: str, kind: str) -> CountSummary:
    """Distinct objects per phrase; for a video also the per-frame counts where they change."""
    labels = list(dict.fromkeys([*result.phrases, *(t.label for t in result.tracks())]))
    distinct = Counter(track.label for track in result.tracks())
    counts = {label: distinct.get(label, 0) for label in labels}
    summary = CountSummary(
        path=path,
        kind=kind,
        query=result.query,
        counts=counts,
        total=sum(counts.values()),
        frames_processed=len(result),
    )
    if kind == "video":
        per_frame, maximum, last = [], dict.fromkeys(labels, 0), None
        for frame in result:
            now = frame_counts(frame, labels)
            maximum = {label: max(maximum[label], now[label]) for label in labels}
            if now != last:
                per_frame.append(FrameCounts(frame.frame_index, now))
                last = now
        summary.max_in_frame = maximum
        summary.per_frame = per_frame
    return summary


def random_weights_warning(result: VideoSegmentation) -> str | None:
    if result.provenance.random_weights:
        return "the pipeline runs random-weight test models: labels, boxes and masks are meaningless"
    return None
