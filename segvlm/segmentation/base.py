"""The two kinds of segmenter backend: promptable (SAM 2 family) and text-native (SAM 3).

Both are a :class:`Segmenter` (a :class:`segvlm.backend.Backend`): built by ``from_config``, declaring their
``Options``, checkpoints and what they support. The pipeline picks its loop by kind: a
:class:`VideoSegmenter` tracks the boxes a grounder finds; a :class:`TextVideoSegmenter` finds and tracks
objects from the query's phrases itself, so no grounder runs. Asking one kind for the other's operation
(``start_text`` on SAM 2, ``start`` or a correction on SAM 3) is refused with a message that names the fix.

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
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from segvlm.backend import Backend
from segvlm.types import Box

if TYPE_CHECKING:
    from segvlm.config import SegmenterConfig


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


@dataclass
class TextFrameMasks:
    """A text-native segmenter's output for one frame.

    Attributes:
        obj_ids: the segmenter's object ids (0, 1, ...; stable across frames), ascending.
        labels: for each object, the phrase that found it.
        masks: (N, H, W) boolean masks at original frame size.
        scores: (N,) detection probability of each object (from the frame where it was found).
    """

    obj_ids: list[int]
    labels: list[str]
    masks: np.ndarray
    scores: np.ndarray

    @classmethod
    def empty(cls, height: int, width: int) -> TextFrameMasks:
        return cls([], [], np.zeros((0, height, width), dtype=bool), np.zeros((0,), dtype=np.float32))


class TextSegmenterSession(ABC):
    """One streaming session of a text-native segmenter, for a fixed set of phrases and frame size."""

    @abstractmethod
    def step(self, image: np.ndarray, pixel_values=None) -> TextFrameMasks:
        """Add the next frame ((H, W, 3) uint8 RGB) and return every object the segmenter sees in it.

        ``pixel_values`` may carry the output of :meth:`Segmenter.preprocess` computed ahead of time.
        """

    @property
    @abstractmethod
    def obj_ids(self) -> list[int]:
        """Ids currently tracked (including ones not visible in the last frame)."""

    @abstractmethod
    def state_size(self) -> int:
        """Number of per-frame entries held in the session's state (bounded by its memory window)."""


class Segmenter(Backend):
    """What both kinds of segmenter share: construction from a :class:`segvlm.config.SegmenterConfig`,
    per-frame preprocessing, and refusals for the operations of the other kind."""

    kind: ClassVar[str] = "segmenter"
    text_native: ClassVar[bool] = False  # the earlier name of ``supports_text``, kept for code that reads it

    @classmethod
    @abstractmethod
    def from_config(cls, config: SegmenterConfig, device: str = "cpu") -> Segmenter:
        """Build the segmenter from ``config`` (its ``model``, ``dtype``, ``mask_threshold`` and ``options``)."""

    def preprocess(self, image: np.ndarray):
        """Model input for one frame; safe to call on a background thread. Default: none needed."""
        return None

    def start(self, height: int, width: int) -> SegmenterSession:
        """A new streaming session for box, click and mask prompts on frames of this size."""
        raise self.refuse(
            "box, click or mask prompts",
            "it finds objects from text: call start_text(height, width, phrases), or use a promptable segmenter "
            "(sam2, edgetam, sam) to track boxes",
        )

    def start_text(self, height: int, width: int, phrases: Sequence[str]) -> TextSegmenterSession:
        """A new streaming session that finds and tracks every instance of ``phrases`` in frames of this size."""
        raise self.refuse(
            "text phrases",
            "it tracks boxes, clicks and masks: pair it with a grounder (Pipeline does), or use the sam3 "
            "segmenter to find objects from text",
        )

    def propagate_object(
        self,
        frames: FrameSequence,
        obj_id: int,
        prompts: Mapping[int, ObjectPrompt],
        sweeps: Sequence[Sweep],
        memory: Any = None,
    ) -> Iterator[TrackedMask]:
        """Track one object through ``sweeps`` from its prompts (what a correction session runs)."""
        raise self.refuse(
            "corrections (re-propagating an object from clicks, boxes or masks)",
            "correct the result with a promptable segmenter instead (sam2, edgetam, sam)",
        )


class TextVideoSegmenter(Segmenter):
    """A segmenter that finds objects from text phrases itself and tracks them (SAM 3).

    The pipeline runs no grounder for it: :meth:`start_text` opens a session for the query's phrases and
    ``session.step(image)`` returns every object found in that frame, with the segmenter's own ids and the
    phrase that found each one (:class:`TextFrameMasks`). It takes no prompts, so no correction session runs
    on it.
    """

    supports_text: ClassVar[bool] = True
    text_native: ClassVar[bool] = True

    @abstractmethod
    def start_text(self, height: int, width: int, phrases: Sequence[str]) -> TextSegmenterSession:
        """A new streaming session that finds and tracks every instance of ``phrases`` in frames of this size."""


class VideoSegmenter(Segmenter):
    """A memory-equipped promptable segmenter (SAM 2 family): boxes, clicks or masks in, tracked masks out.

    It takes prompts and supports corrections (:meth:`propagate_object`); the pipeline gives it the boxes
    its grounder finds.
    """

    supports_prompts: ClassVar[bool] = True
    supports_corrections: ClassVar[bool] = True

    @classmethod
    def from_config(cls, config: SegmenterConfig, device: str = "cpu") -> VideoSegmenter:
        """Build the segmenter from ``config``; segmenters that load a model override it."""
        raise NotImplementedError(f"{cls.__name__} cannot be built from a config; construct it directly")

    @abstractmethod
    def start(self, height: int, width: int) -> SegmenterSession:
        """A new streaming session for frames of this size."""

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
