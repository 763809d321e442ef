"""The data types that flow between segvlm's stages.

One result type, :class:`VideoSegmentation`, is what the pipeline returns and what every consumer reads
(exports, mask tokenizers, dataset builders, agent tools). It is a list of :class:`FrameResult`, one per
processed frame, each holding the :class:`ObjectMask` of every object visible in that frame. Masks are
kept as COCO RLE (:class:`segvlm.masks.RLE`) and decoded on demand.

Conventions:
    * boxes are ``(x0, y0, x1, y1)`` in pixels of the original frame (not the model's resized copy);
    * masks are at the original frame size, ``(H, W)``;
    * ``frame_index`` is the index in the source video (so with ``stride=2`` it runs 0, 2, 4, ...);
      ``result[i]`` is the i-th processed frame.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from segvlm.masks import RLE
from segvlm.provenance import Provenance

if TYPE_CHECKING:
    import supervision as sv

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Detection:
    """One grounded box from a detector, before it has a mask or a track.

    Attributes:
        box_xyxy: the box in original-frame pixels.
        score: the detector's confidence (after re-ranking, if any), in [0, 1].
        label: the noun phrase that was grounded, e.g. ``"red car"``.
        phrase: the query's own words for this label (``"the red car"``; see
            :func:`segvlm.query.source_phrases`), carried to the track's :attr:`ObjectMask.phrase`.
    """

    box_xyxy: Box
    score: float
    label: str
    phrase: str = ""


@dataclass(frozen=True)
class Click:
    """One click on a frame, in original-frame pixels: ``positive`` on the object, otherwise background."""

    x: float
    y: float
    positive: bool = True


@dataclass(frozen=True)
class FramePrompt:
    """What the segmenter was told about one track on one frame: a box, clicks, or a painted mask.

    A frame that holds a prompt is a conditioning frame of its track: the segmenter computes its mask from
    the prompt and keeps it in the track's memory. A painted ``mask`` stands alone (box and clicks are then
    empty); a box and clicks combine, as SAM's prompt encoder takes them.

    Attributes:
        box: xyxy box in original-frame pixels.
        clicks: positive/negative clicks, in the order they were made.
        mask: a painted mask (brush and eraser applied to the mask shown at the time).
        source: ``"detector"`` for the grounder's box that started a track, ``"user"`` for a person's edit.
    """

    box: Box | None = None
    clicks: tuple[Click, ...] = ()
    mask: RLE | None = None
    source: str = "user"

    def __post_init__(self) -> None:
        if self.mask is None and self.box is None and not self.clicks:
            raise ValueError("a prompt needs a box, clicks or a mask")
        if self.mask is not None and (self.box is not None or self.clicks):
            raise ValueError("a painted mask prompt stands alone; it cannot be combined with a box or clicks")

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"source": self.source}
        if self.box is not None:
            data["box"] = [float(v) for v in self.box]
        if self.clicks:
            data["clicks"] = [[c.x, c.y, int(c.positive)] for c in self.clicks]
        if self.mask is not None:
            data["mask"] = self.mask.to_coco()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FramePrompt:
        box = data.get("box")
        return cls(
            box=tuple(float(v) for v in box) if box is not None else None,
            clicks=tuple(Click(float(x), float(y), bool(positive)) for x, y, positive in data.get("clicks", [])),
            mask=RLE.from_coco(data["mask"]) if data.get("mask") else None,
            source=data.get("source", "user"),
        )


@dataclass(frozen=True)
class ObjectMask:
    """One object in one frame.

    Attributes:
        track_id: stable id of the object across frames (1, 2, ...).
        label: the grounded noun phrase (``"red car"``), the same for every object the phrase found.
        phrase: the query's own words for this object: the part of the query its label came from, with its
            determiners and counts, without the command or the other objects. For the query ``"find the dog
            and the two children"`` an object labelled ``"children"`` has phrase ``"the two children"`` and one
            labelled ``"dog"`` has ``"the dog"``; for a list query it is the list item (``"a cat"``). It is what
            a ``{phrase}`` caption template (:mod:`segvlm.data.schema`) writes; the whole query is
            :attr:`VideoSegmentation.query`. Objects added by hand hold what the correction gave them, and
            results saved by older versions may hold the whole query.
        score: detection score of the track (segmenter confidence for propagated frames).
        box_xyxy: tight box around the mask, original-frame pixels.
        rle: the mask, COCO RLE at original frame size.
    """

    track_id: int
    label: str
    phrase: str
    score: float
    box_xyxy: Box
    rle: RLE

    @property
    def mask(self) -> np.ndarray:
        """The dense (H, W) boolean mask, decoded on each access."""
        return self.rle.decode()

    @property
    def area(self) -> int:
        return self.rle.area


@dataclass
class FrameResult:
    """All objects in one processed frame.

    Attributes:
        frame_index: index of the frame in the source (before stride).
        timestamp: seconds from the start of the video, when known.
        height, width: original frame size.
        objects: one entry per visible object, sorted by track id.
    """

    frame_index: int
    height: int
    width: int
    timestamp: float | None = None
    objects: list[ObjectMask] = field(default_factory=list)

    def __iter__(self) -> Iterator[ObjectMask]:
        return iter(self.objects)

    def __len__(self) -> int:
        return len(self.objects)

    def get(self, track_id: int) -> ObjectMask | None:
        """The object with this track id in this frame, or None."""
        for obj in self.objects:
            if obj.track_id == track_id:
                return obj
        return None

    @property
    def track_ids(self) -> list[int]:
        return [obj.track_id for obj in self.objects]

    def masks(self) -> np.ndarray:
        """Dense masks of all objects: an (N, H, W) boolean array."""
        if not self.objects:
            return np.zeros((0, self.height, self.width), dtype=bool)
        return np.stack([obj.mask for obj in self.objects])

    def boxes(self) -> np.ndarray:
        """Boxes of all objects: an (N, 4) float32 xyxy array."""
        return np.asarray([obj.box_xyxy for obj in self.objects], dtype=np.float32).reshape(-1, 4)

    def to_supervision(self) -> sv.Detections:
        """This frame as ``supervision.Detections`` (``tracker_id``, ``mask``, ``data['label']``...)."""
        from segvlm.export.supervision import to_detections

        return to_detections(self)

    @classmethod
    def from_supervision(cls, detections: sv.Detections, frame_index: int, height: int, width: int) -> FrameResult:
        """Build a frame from ``supervision.Detections`` (masks required; ids from ``tracker_id``)."""
        from segvlm.export.supervision import from_detections

        return from_detections(detections, frame_index=frame_index, height=height, width=width)


@dataclass(frozen=True)
class Track:
    """Summary of one masklet over the whole video.

    Attributes:
        track_id: the object's id.
        label, phrase: what was grounded.
        frame_indices: source frame indices where the object is visible, ascending.
        mean_score: mean of the per-frame scores.
    """

    track_id: int
    label: str
    phrase: str
    frame_indices: tuple[int, ...]
    mean_score: float

    @property
    def first_frame(self) -> int:
        return self.frame_indices[0]

    @property
    def last_frame(self) -> int:
        return self.frame_indices[-1]

    def __len__(self) -> int:
        return len(self.frame_indices)


@dataclass(frozen=True)
class VideoInfo:
    """Where the frames came from.

    Attributes:
        source: path of the video/image/folder, or a short description (``"<frames>"``).
        height, width: original frame size.
        fps: frames per second of the source (after stride), when known.
        stride: every ``stride``-th source frame was processed.
    """

    source: str
    height: int
    width: int
    fps: float | None = None
    stride: int = 1


@dataclass
class VideoSegmentation:
    """The pipeline's result: per-frame objects with stable track ids. A plain value.

    Iterate it for frames, index it by position, ask for a track by id, export it (``to_coco``,
    ``save``, ``save_overlay``). It holds data only: corrections run in a
    :class:`segvlm.corrections.CorrectionSession` (``pipe.correct(result, video)``), which edits this value
    and records its prompts and approvals here, so a saved and reloaded result is the same value.

    Attributes:
        info: video source and size.
        query: the query as given.
        phrases: the noun phrases that were grounded.
        frames: one :class:`FrameResult` per processed frame, in order.
        meta: the JSON form of the result's :class:`segvlm.provenance.Provenance` (models, thresholds, preset
            name), as saved; read and write it typed through :attr:`provenance`.
        prompts: per track id, per source frame index, the prompt the segmenter was given there (the
            grounder's box that started the track, a person's clicks, boxes and painted masks).
        locks: per track id, the source frame indices a person approved (never overwritten by propagation).
        labels: per track id, the label a person gave it (kept even while the track has no mask).
    """

    info: VideoInfo
    query: str
    phrases: list[str]
    frames: list[FrameResult] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    prompts: dict[int, dict[int, FramePrompt]] = field(default_factory=dict)
    locks: dict[int, set[int]] = field(default_factory=dict)
    labels: dict[int, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        objects = sum(len(frame) for frame in self.frames)
        return (
            f"VideoSegmentation(source={self.info.source!r}, frames={len(self.frames)}, "
            f"size={self.info.width}x{self.info.height}, tracks={self.track_ids}, objects={objects}, "
            f"query={self.query!r})"
        )

    @property
    def provenance(self) -> Provenance:
        """What produced this result, as a typed record (read from :attr:`meta`)."""
        return Provenance.from_json(self.meta)

    @provenance.setter
    def provenance(self, record: Provenance) -> None:
        self.meta = record.to_json()

    # -- container protocol -------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[FrameResult]:
        return iter(self.frames)

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, position: int) -> FrameResult:
        return self.frames[position]

    def frame(self, frame_index: int) -> FrameResult:
        """The result for a source frame index (not a position)."""
        position = self.position_of(frame_index)
        return self.frames[position]

    def position_of(self, frame_index: int) -> int:
        """Position in ``frames`` of a source frame index; a clear error if it was not processed."""
        if self.frames:  # frames are evenly strided: try the arithmetic position first (O(1) on long videos)
            guess = (frame_index - self.frames[0].frame_index) // max(self.info.stride, 1)
            if 0 <= guess < len(self.frames) and self.frames[guess].frame_index == frame_index:
                return guess
        for position, frame in enumerate(self.frames):
            if frame.frame_index == frame_index:
                return position
        processed = [f.frame_index for f in self.frames]
        shown = processed[:5] + (["..."] if len(processed) > 5 else [])
        raise KeyError(f"frame {frame_index} was not processed (processed frames: {shown}); check stride/max_frames")

    @property
    def is_empty(self) -> bool:
        """True when no object was found in any frame."""
        return not any(frame.objects for frame in self.frames)

    # -- tracks -------------------------------------------------------------------------------------------
    @property
    def track_ids(self) -> list[int]:
        return sorted({obj.track_id for frame in self.frames for obj in frame.objects})

    def tracks(self) -> list[Track]:
        """A summary of every track, by id."""
        return [self.track(track_id) for track_id in self.track_ids]

    def track(self, track_id: int) -> Track:
        """The summary of one track; ``KeyError`` naming the known ids if it does not exist."""
        found = [(frame.frame_index, obj) for frame in self.frames for obj in frame.objects if obj.track_id == track_id]
        if not found:
            raise KeyError(f"no track with id {track_id}; known track ids: {self.track_ids}")
        first = found[0][1]
        return Track(
            track_id=track_id,
            label=first.label,
            phrase=first.phrase,
            frame_indices=tuple(index for index, _ in found),
            mean_score=float(np.mean([obj.score for _, obj in found])),
        )

    def masklet(self, track_id: int) -> dict[int, ObjectMask]:
        """Every appearance of one track, keyed by source frame index."""
        self.track(track_id)  # raises for unknown ids
        return {frame.frame_index: obj for frame in self.frames for obj in frame.objects if obj.track_id == track_id}

    # -- exports ------------------------------------------------------------------------------------------
    def to_coco(self) -> dict:
        """A COCO instances dict (RLE masks, ``track_id`` on each annotation) that pycocotools loads."""
        from segvlm.export.coco import to_coco

        return to_coco(self)

    def save(self, directory: str, overlay: bool = False) -> None:
        """Write ``masks.json`` (COCO, with segvlm's metadata) into ``directory``; optionally ``overlay.mp4``."""
        from segvlm.export.coco import save

        save(self, directory, overlay=overlay)

    @classmethod
    def load(cls, directory: str) -> VideoSegmentation:
        """Read a result written by :meth:`save` (or a ``masks.json`` path)."""
        from segvlm.export.coco import load

        return load(directory)

    def save_overlay(self, path: str, video: Any = None, alpha: float = 0.5) -> str:
        """Render coloured masks, ids and labels over the frames into a video file (mp4/webm) with PyAV.

        ``video`` defaults to ``info.source``; pass frames yourself when the source was an iterator.
        """
        from segvlm.export.overlay import save_overlay

        return save_overlay(self, path, video=video, alpha=alpha)

    def to_supervision(self) -> list[sv.Detections]:
        """One ``supervision.Detections`` per processed frame."""
        return [frame.to_supervision() for frame in self.frames]

    def export(self, format: str, out: str | None = None, video: Any = None) -> Any:
        """Export through the format registry: ``coco``, ``overlay``, ``png`` (DAVIS palette masks), ``yolo``
        (Ultralytics segmentation), ``ytvis`` (YouTube-VIS), ``supervision``; see
        :func:`segvlm.export.registry.export`. Returns the written paths (or the value, for ``supervision``)."""
        from segvlm.export.registry import export

        return export(self, format, out, video=video)

    def describe(self, track_id: int, frame_index: int, question: str, vlm: Any, **kwargs: Any) -> str:
        """Ask a :class:`segvlm.vlm.MaskAwareVLM` about one object in one frame ("what is object 3 doing?").

        The frame is read from ``info.source`` unless ``image=`` or ``video=`` is given; see
        :func:`segvlm.vlm.describe`.
        """
        from segvlm.vlm.describe import describe

        return describe(self, track_id=track_id, frame_index=frame_index, question=question, vlm=vlm, **kwargs)

    # -- editing (data only) ------------------------------------------------------------------------------
    def remove_track(self, track_id: int) -> None:
        """Remove a track from every frame, with its prompts and approvals (no recomputation needed)."""
        self.track(track_id)  # raises for unknown ids
        for frame in self.frames:
            frame.objects = [obj for obj in frame.objects if obj.track_id != track_id]
        self.prompts.pop(track_id, None)
        self.locks.pop(track_id, None)
        self.labels.pop(track_id, None)
