"""The video segmenter interface: a session that takes frames one at a time and prompts at any frame.

A :class:`SegmenterSession` is a streaming tracker: ``step(image, prompts)`` adds one frame, applies any
new prompts on that frame, and returns the masks of every object it tracks. The session keeps only the
state its memory needs, so a video of any length runs in bounded memory. ``track_clip`` runs a fresh,
short-lived session over a list of frames (used to back-fill objects found late and for corrections).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from segvlm.types import Box


@dataclass
class ObjectPrompt:
    """A prompt for one object on one frame: a box, clicks, both, or a mask.

    Attributes:
        obj_id: the object's id in the session (the pipeline uses track ids).
        box: xyxy box in original-frame pixels.
        points: (x, y) clicks in original-frame pixels.
        labels: one per point: 1 = on the object, 0 = background.
        mask: an (H, W) boolean mask (exclusive with box/points).
    """

    obj_id: int
    box: Box | None = None
    points: list[tuple[float, float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.mask is None and self.box is None and not self.points:
            raise ValueError(f"the prompt for object {self.obj_id} has no box, points or mask; give at least one")
        if len(self.points) != len(self.labels):
            raise ValueError(
                f"object {self.obj_id}: {len(self.points)} points but {len(self.labels)} labels; give one label "
                "(1 = object, 0 = background) per point"
            )
        if self.mask is not None and (self.box is not None or self.points):
            raise ValueError(f"object {self.obj_id}: a mask prompt cannot be combined with a box or points")


@dataclass
class FrameMasks:
    """The segmenter's output for one frame.

    Attributes:
        obj_ids: ids of the tracked objects, in session order.
        masks: (N, H, W) boolean masks at original frame size.
        scores: (N,) probability that each object is visible (sigmoid of the object-score logit).
    """

    obj_ids: list[int]
    masks: np.ndarray
    scores: np.ndarray

    @classmethod
    def empty(cls, height: int, width: int) -> FrameMasks:
        return cls([], np.zeros((0, height, width), dtype=bool), np.zeros((0,), dtype=np.float32))


class SegmenterSession(ABC):
    """One streaming tracking session over frames of a fixed size."""

    @abstractmethod
    def step(self, image: np.ndarray, prompts: Sequence[ObjectPrompt] = (), pixel_values=None) -> FrameMasks:
        """Add the next frame ((H, W, 3) uint8 RGB), apply ``prompts`` on it, return all objects' masks.

        ``pixel_values`` may carry the output of :meth:`VideoSegmenter.preprocess` computed ahead of time.
        """

    @abstractmethod
    def remove_objects(self, obj_ids: Sequence[int]) -> None:
        """Stop tracking these objects (their memory is dropped)."""

    @property
    @abstractmethod
    def obj_ids(self) -> list[int]:
        """Ids currently tracked."""

    @abstractmethod
    def state_size(self) -> int:
        """Number of per-frame entries held in the session's state (bounded by its memory window)."""


class VideoSegmenter(ABC):
    """A memory-equipped promptable segmenter (SAM 2 family)."""

    @abstractmethod
    def start(self, height: int, width: int) -> SegmenterSession:
        """A new streaming session for frames of this size."""

    def preprocess(self, image: np.ndarray):
        """Model input for one frame; safe to call on a background thread. Default: none needed."""
        return None

    def track_clip(self, frames: Iterable[np.ndarray], prompts: Sequence[ObjectPrompt]) -> Iterator[FrameMasks]:
        """Track ``prompts`` (given on the first frame) through ``frames`` in a fresh session.

        Lazy: one frame is read and segmented per output consumed, so a caller that stops early (an object
        that vanished) saves the rest of the compute, and a streamed clip is never held in memory.
        """
        session = None
        for frame in frames:
            if session is None:
                session = self.start(*frame.shape[:2])
                yield session.step(frame, prompts)
            else:
                yield session.step(frame)
