"""The video segmenter interface: a streaming session for the pipeline, per-object propagation for corrections.

A :class:`SegmenterSession` is a streaming tracker: ``step(image, prompts)`` adds one frame, applies any
new prompts on that frame, and returns the masks of every object it tracks. The session keeps only the
state its memory needs, so a video of any length runs in bounded memory. ``track_clip`` runs a fresh,
short-lived session over a list of frames (used to back-fill objects found late).

:meth:`VideoSegmenter.propagate_object` is what a correction session calls: one object, every frame that
holds a prompt for it (its conditioning frames), and one or more sweeps over a range of frames, forwards or
backwards, read from a random-access :class:`FrameSequence`. The default implementation streams from the
nearest prompt behind each sweep; SAM 2 overrides it to keep every conditioning frame in memory at once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

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


class FrameSequence(Protocol):
    """Random access to a video's processed frames: ``frames[position]`` is an (H, W, 3) uint8 RGB array."""

    def __len__(self) -> int: ...

    def __getitem__(self, position: int) -> np.ndarray: ...


@dataclass(frozen=True)
class Sweep:
    """Frames ``first`` to ``last`` inclusive, in that order: backwards when ``last < first``."""

    first: int
    last: int

    @property
    def reverse(self) -> bool:
        return self.last < self.first

    def positions(self) -> range:
        step = -1 if self.reverse else 1
        return range(self.first, self.last + step, step)


@dataclass
class TrackedMask:
    """One object's mask on one frame, as propagation computes it.

    Attributes:
        position: the frame's position in the processed video.
        mask: (H, W) boolean mask at original frame size.
        score: probability that the object is visible.
    """

    position: int
    mask: np.ndarray
    score: float


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
    """A memory-equipped promptable segmenter (SAM 2 family).

    ``supports_prompts`` says whether the segmenter takes clicks, boxes and masks, and so whether a
    correction session can run on it.
    """

    supports_prompts: bool = True

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

    def new_memory(self) -> Any:
        """State a correction session keeps between calls of :meth:`propagate_object` (caches); default none."""
        return None

    def warm(self, frames: FrameSequence, position: int, memory: Any = None) -> None:
        """Compute ahead what a prompt on frame ``position`` will need (SAM 2: its image features), so that
        a click there answers quickly. Default: nothing to compute ahead."""
        return None

    def propagate_object(
        self,
        frames: FrameSequence,
        obj_id: int,
        prompts: Mapping[int, ObjectPrompt],
        sweeps: Sequence[Sweep],
        memory: Any = None,
    ) -> Iterator[TrackedMask]:
        """Track one object through ``sweeps``, conditioned on ``prompts`` (position -> prompt); lazy.

        This default streams each sweep through a fresh :meth:`start` session that begins at the nearest
        prompted frame at or behind the sweep's first frame (frames between it and the sweep are computed
        but not yielded) and applies any prompt it meets on the way. Segmenters whose memory can hold several
        conditioning frames at once (SAM 2) override it.
        """
        for sweep in sweeps:
            behind = [p for p in prompts if (p >= sweep.first if sweep.reverse else p <= sweep.first)]
            if not behind:
                raise ValueError(
                    f"object {obj_id} has no prompt at or before frame position {sweep.first} in the direction "
                    "of propagation; prompt it on a frame first"
                )
            start = min(behind) if sweep.reverse else max(behind)
            wanted = set(sweep.positions())
            session = None
            for position in Sweep(start, sweep.last).positions():
                image = frames[position]
                if session is None:
                    session = self.start(*image.shape[:2])
                prompt = prompts.get(position)
                output = session.step(image, [_with_id(prompt, obj_id)] if prompt is not None else [])
                if position not in wanted:
                    continue
                if obj_id in output.obj_ids:
                    index = output.obj_ids.index(obj_id)
                    yield TrackedMask(position, output.masks[index], float(output.scores[index]))
                else:
                    yield TrackedMask(position, np.zeros(image.shape[:2], dtype=bool), 0.0)


def _with_id(prompt: ObjectPrompt, obj_id: int) -> ObjectPrompt:
    if prompt.obj_id == obj_id:
        return prompt
    return ObjectPrompt(obj_id, box=prompt.box, points=prompt.points, labels=prompt.labels, mask=prompt.mask)
