"""A correction session: a person edits a result for hours, and every prompt, approval and undo step holds.

``pipe.correct(result, video)`` (or :meth:`CorrectionSession.open` on a folder) gives a session that owns
the result and a promptable segmenter. Its semantics are SAM 2's interactive ones:

* every frame that holds a prompt for a track (the grounder's box, a person's clicks, box or painted mask)
  is a conditioning frame of that track, and all of them stay in the track's memory;
* an edit recomputes only the edited track: its frame, then forwards until the next frame that holds a
  prompt or an approval (lock) for the track, which keeps its mask, as does everything beyond it; backwards
  only when asked (``propagate="backward"`` or ``"both"``), and for a new object;
* approved (locked) frames are never overwritten by propagation, and cannot be edited until unlocked;
* every edit, undo and redo is written to the session's folder before the call returns.

Prompts on one frame combine as SAM's prompt encoder takes them: clicks accumulate on the frame's box (a
first click on a frame without a prompt takes the box of the mask shown there, so that a negative click
removes a part instead of starting over); a new box replaces the frame's box and clicks; a painted mask
(brush adds, eraser removes, applied to the mask shown) stands alone, and the frame shows exactly the
painted pixels. A click after painting starts the frame's prompt again from clicks.

Memory: the session holds the result (RLE masks), the prompts, one decoded frame at a time plus a small
cache, and for SAM 2 the image features of the last few frames and the outputs of the conditioning frames
(about 2 MB each at hiera-tiny size). Nothing grows with the video's length but the result itself, so a
10,000-frame video is edited like a short one; only an edit with no later prompt or lock re-propagates to the
end of the video (add a lock where the masks are right to bound it).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segvlm.corrections.changes import (
    Change,
    Diff,
    Effort,
    LabelDiff,
    LockDiff,
    MaskDiff,
    PromptDiff,
    apply_change,
    apply_diff,
    revert_change,
)
from segvlm.corrections.store import History, SessionFolderError, SessionInfo
from segvlm.errors import SegvlmError
from segvlm.masks import RLE
from segvlm.segmentation.base import ObjectPrompt, Sweep, TrackedMask
from segvlm.types import Box, Click, FramePrompt, ObjectMask, VideoSegmentation

DIRECTIONS = ("none", "forward", "backward", "both")
PART_SECONDS = 2.0  # a long propagation is journaled in parts at least this often


class CorrectionError(SegvlmError):
    """An edit that cannot be made as asked (a locked frame, an unknown direction, no segmenter support)."""


@dataclass
class Edit:
    """What one call did.

    Attributes:
        action: ``"add_points"``, ``"paint"``, ``"undo"``...
        track_id: the track edited (the new id for ``add_object``), None when several or none.
        frame_indices: source frame indices whose masks changed, ascending.
        completed: False when a propagation was cancelled part-way (the frames done are kept).
        seq: the change's number in the session history (None when nothing changed).
    """

    action: str
    track_id: int | None
    frame_indices: list[int] = field(default_factory=list)
    completed: bool = True
    seq: int | None = None


@dataclass
class TrackEffort:
    """A person's work on one track, summed over the session's history (undone edits included)."""

    track_id: int
    clicks: int = 0
    boxes: int = 0
    strokes: int = 0
    frames_edited: int = 0
    seconds: float = 0.0


FrameCallback = Callable[[int, int, ObjectMask | None], None]  # (frame index, track id, new object or None)


def _segmenter_of(pipe: Any) -> tuple[Any, int]:
    """The segmenter and minimum mask area of a Pipeline (or a bare segmenter); refuses prompt-less ones."""
    from segvlm.config import TrackingConfig

    segmenter, min_area = pipe, TrackingConfig().min_mask_area
    if hasattr(pipe, "segmenter") and hasattr(pipe, "config"):
        segmenter, min_area = pipe.segmenter, pipe.config.tracking.min_mask_area
    if not getattr(segmenter, "supports_corrections", False):
        name = type(segmenter).__name__
        raise CorrectionError(
            f"{name} finds objects from text and takes no clicks, boxes or masks, so it cannot re-propagate "
            "corrections; correct the result with a promptable segmenter instead: "
            "segvlm.Pipeline.from_preset('default').correct(result, video) (SAM 2.1), or the 'cpu-fast' preset "
            "(EdgeTAM)"
        )
    return segmenter, min_area


def _open_frames(video: Any, result: VideoSegmentation) -> Any:
    """Random access to the frames ``result`` was computed on, checked against the result's frame indices."""
    from segvlm.frames import FrameStore

    if video is None:
        video = result.info.source
        if video.startswith("<"):
            raise CorrectionError(
                "this result came from frames in memory or a one-shot iterator, which cannot be read again; pass "
                "them: pipe.correct(result, video=<path or list of frames>)"
            )
        if not Path(video).exists():
            raise CorrectionError(
                f"the result's source {video} does not exist from {Path.cwd()}; pass the video: "
                "pipe.correct(result, video=<path>)"
            )
    frames = FrameStore.open(video, stride=result.info.stride, max_frames=len(result))
    if len(frames) != len(result) or (
        len(result) and frames.frame_index(len(result) - 1) != result[len(result) - 1].frame_index
    ):
        raise CorrectionError(
            f"the video has {len(frames)} frames at stride {result.info.stride} but the result has {len(result)} "
            f"(frame indices {result[0].frame_index if len(result) else '-'}..."
            f"{result[-1].frame_index if len(result) else '-'}); pass the video the result was made from"
        )
    if (frames.height, frames.width) != (result.info.height, result.info.width):
        raise CorrectionError(
            f"the video's frames are {frames.width}x{frames.height} but the result's masks are "
            f"{result.info.width}x{result.info.height}; pass the video the result was made from"
        )
    return frames


def _source_path(video: Any, result: VideoSegmentation) -> str:
    source = video if isinstance(video, (str, Path)) else (None if video is not None else result.info.source)
    if source is None or str(source).startswith("<"):
        return "<frames>"
    return str(Path(source).resolve())


class CorrectionSession:
    """Edits of one result with a promptable segmenter; see the module docstring for the semantics.

    Create it with ``pipe.correct(result, video, folder=None)`` or :meth:`create`; reopen a folder with
    :meth:`open`. Every edit method takes a source ``frame_index`` (as ``FrameResult.frame_index``), returns
    an :class:`Edit`, and accepts ``on_frame(frame_index, track_id, obj)`` (called as each frame's mask is
    set) and ``cancel`` (a ``threading.Event``: set it to stop a propagation; the frames done are kept).
    """

    def __init__(
        self,
        result: VideoSegmentation,
        segmenter: Any,
        frames: Any,
        min_mask_area: int = 1,
        history: History | None = None,
        info: SessionInfo | None = None,
    ):
        self.result = result
        self.segmenter = segmenter
        self.frames = frames
        self.min_mask_area = max(int(min_mask_area), 1)
        self.history = history or History()
        self.info = info or SessionInfo(video="<frames>", stride=result.info.stride, frames=len(result))
        self._memory = segmenter.new_memory()
        self._lock = threading.RLock()

    # -- opening and closing --------------------------------------------------------------------------------
    @classmethod
    def create(
        cls, result: VideoSegmentation, pipe: Any, video: Any = None, folder: str | Path | None = None
    ) -> CorrectionSession:
        """A session on ``result`` with ``pipe``'s segmenter (a Pipeline or a segmenter); see the class doc.

        With ``folder``, the session persists there from the first edit on (the folder must not hold a session).
        """
        segmenter, min_area = _segmenter_of(pipe)
        frames = _open_frames(video, result)
        info = SessionInfo(video=_source_path(video, result), stride=result.info.stride, frames=len(result))
        history = History.create(Path(folder), result, info) if folder is not None else History()
        return cls(result, segmenter, frames, min_area, history, info)

    @classmethod
    def open(cls, folder: str | Path, pipe: Any, video: Any = None) -> CorrectionSession:
        """Reopen a session folder: the result, prompts, approvals and undo history as they were last saved.

        ``video`` defaults to the path recorded in the folder. Raises :class:`SessionFolderError` when another
        process has the folder open.
        """
        segmenter, min_area = _segmenter_of(pipe)
        history, result, info = History.open(Path(folder))
        try:
            if video is None and info.video == "<frames>":
                raise CorrectionError(
                    f"the session in {folder} was made on frames in memory; pass them: "
                    "CorrectionSession.open(folder, pipe, video=<frames>)"
                )
            frames = _open_frames(video if video is not None else info.video, result)
        except BaseException:
            history.close()
            raise
        return cls(result, segmenter, frames, min_area, history, info)

    def save(self) -> None:
        """Write a snapshot of the result now (edits are journaled anyway; this makes reopening quicker)."""
        with self._lock:
            self.history.snapshot(self.result, self.info)

    def close(self) -> None:
        """Snapshot and release the folder (another process may open it afterwards)."""
        with self._lock:
            if self.history.folder is not None and self.history.lines > self.info.applied:
                self.history.snapshot(self.result, self.info)
            self.history.close()
            if hasattr(self.frames, "close"):
                self.frames.close()

    def export(self, format: str, out: str | Path) -> Any:
        """Export the result through the format registry, reading pixels from the session's video."""
        from segvlm.export.registry import export

        with self._lock:
            video: Any = self.info.video
            if video == "<frames>":  # frames given in memory: hand them over again
                video = [self.frames[position] for position in range(len(self.frames))]
            return export(self.result, format, out, video=video)

    def __enter__(self) -> CorrectionSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        folder = self.history.folder
        return (
            f"CorrectionSession(frames={len(self.result)}, tracks={self.result.track_ids}, "
            f"undo={len(self.history.undo_stack)}, redo={len(self.history.redo_stack)}, folder={str(folder)!r})"
        )

    # -- reading --------------------------------------------------------------------------------------------
    @property
    def can_undo(self) -> bool:
        return bool(self.history.undo_stack)

    @property
    def can_redo(self) -> bool:
        return bool(self.history.redo_stack)

    @property
    def track_ids(self) -> list[int]:
        """Tracks with a mask on some frame or a prompt on some frame."""
        return sorted({*self.result.track_ids, *self.result.prompts})

    def prompts(self, track_id: int) -> dict[int, FramePrompt]:
        """The track's prompts by source frame index."""
        return dict(sorted(self.result.prompts.get(track_id, {}).items()))

    def locked(self, track_id: int) -> list[int]:
        """The source frame indices approved for this track, ascending."""
        return sorted(self.result.locks.get(track_id, set()))

    def effort(self) -> list[TrackEffort]:
        """Clicks, boxes, brush strokes, frames edited and active seconds per track, over the whole history."""
        return effort_log(self.history.changes())

    def warm(self, frame_index: int) -> None:
        """Compute ahead what a click on this frame needs (SAM 2: the image features; a person is looking at
        the frame), so the click answers in a fraction of the time."""
        with self._lock:
            self.segmenter.warm(self.frames, self._position(frame_index), self._memory)

    # -- edits on one frame, then propagation ---------------------------------------------------------------
    def add_points(
        self,
        track_id: int,
        frame_index: int,
        points: Sequence[tuple[float, float]],
        labels: Sequence[int],
        *,
        propagate: str = "forward",
        seconds: float = 0.0,
        on_frame: FrameCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Edit:
        """Add clicks (label 1 on the object, 0 on the background) to a track's prompt on a frame."""
        if len(points) != len(labels) or not len(points):
            raise CorrectionError(
                f"{len(points)} points and {len(labels)} labels; give one label (1 = object, 0 = background) "
                "per point, at least one point"
            )
        with self._lock:
            self._check_track(track_id)
            position = self._editable(track_id, frame_index)
            clicks = tuple(Click(float(x), float(y), bool(label)) for (x, y), label in zip(points, labels))
            current = self.result.prompts.get(track_id, {}).get(frame_index)
            if current is not None and current.mask is None:
                prompt = FramePrompt(box=current.box, clicks=current.clicks + clicks)
            else:
                shown = self.result[position].get(track_id)
                box = shown.box_xyxy if shown is not None else None
                prompt = FramePrompt(box=box, clicks=clicks)
            effort = Effort(clicks=len(clicks), seconds=seconds)
            return self._prompt_edit("add_points", track_id, position, prompt, propagate, effort, on_frame, cancel)

    def add_box(
        self,
        track_id: int,
        frame_index: int,
        box_xyxy: Box,
        *,
        propagate: str = "forward",
        seconds: float = 0.0,
        on_frame: FrameCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Edit:
        """Replace a track's prompt on a frame with a box."""
        with self._lock:
            self._check_track(track_id)
            position = self._editable(track_id, frame_index)
            prompt = FramePrompt(box=self._valid_box(box_xyxy))
            effort = Effort(boxes=1, seconds=seconds)
            return self._prompt_edit("add_box", track_id, position, prompt, propagate, effort, on_frame, cancel)

    def paint(
        self,
        track_id: int,
        frame_index: int,
        *,
        add: np.ndarray | None = None,
        erase: np.ndarray | None = None,
        mask: np.ndarray | None = None,
        strokes: int = 1,
        propagate: str = "forward",
        seconds: float = 0.0,
        on_frame: FrameCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Edit:
        """Brush (``add``) and erase (``erase``) pixels of a track's mask on a frame, or set its ``mask`` whole.

        The edited mask becomes the frame's prompt (a mask prompt) and is shown exactly; erasing every pixel
        says "the object is not here", which SAM 2's memory also learns.
        """
        with self._lock:
            self._check_track(track_id)
            position = self._editable(track_id, frame_index)
            painted = self._painted(position, track_id, add, erase, mask)
            prompt = FramePrompt(mask=RLE.encode(painted))
            effort = Effort(strokes=strokes, seconds=seconds)
            return self._prompt_edit("paint", track_id, position, prompt, propagate, effort, on_frame, cancel)

    def add_object(
        self,
        frame_index: int,
        *,
        box: Box | None = None,
        points: Sequence[tuple[float, float]] = (),
        labels: Sequence[int] = (),
        mask: np.ndarray | None = None,
        label: str = "object",
        propagate: str = "both",
        seconds: float = 0.0,
        on_frame: FrameCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Edit:
        """Start a new track on any frame from a box, clicks, or a painted mask; tracked both ways by default.

        Returns an :class:`Edit` whose ``track_id`` is the new id (one above every id in use).
        """
        if mask is None and box is None and not len(points):
            raise CorrectionError("a new object needs a box, clicks or a mask on the frame")
        if len(points) != len(labels):
            raise CorrectionError(f"{len(points)} points and {len(labels)} labels; give one label per point")
        if mask is not None and (box is not None or len(points)):
            raise CorrectionError("give a new object a mask, or a box and clicks, not both")
        with self._lock:
            position = self._position(frame_index)
            track_id = max([0, *self.track_ids, *self.result.labels]) + 1
            if mask is not None:
                prompt = FramePrompt(mask=RLE.encode(self._painted(position, track_id, None, None, mask)))
                effort = Effort(strokes=1, seconds=seconds)
            else:
                clicks = tuple(Click(float(x), float(y), bool(v)) for (x, y), v in zip(points, labels))
                prompt = FramePrompt(box=self._valid_box(box) if box is not None else None, clicks=clicks)
                effort = Effort(clicks=len(clicks), boxes=int(box is not None), seconds=seconds)
            label_diff = LabelDiff(track_id, "", str(label).strip() or "object")
            return self._prompt_edit(
                "add_object", track_id, position, prompt, propagate, effort, on_frame, cancel, first=label_diff
            )

    def propagate(
        self,
        track_id: int,
        frame_index: int,
        direction: str = "forward",
        *,
        on_frame: FrameCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Edit:
        """Re-propagate a track from a frame without a new prompt, up to its next prompt or lock that way.

        A frame with no prompt behind it (in the direction of travel) starts from the mask shown there.
        """
        direction = self._direction(direction)
        with self._lock:
            self._check_track(track_id)
            position = self._position(frame_index)
            with self._change("propagate", [track_id], frame_index) as change:
                sweeps = self._sweeps(track_id, position, direction)
                self._propagate(change, track_id, sweeps, on_frame, cancel)
            return self._finish(change, track_id)

    def reach(self, track_id: int, frame_index: int, direction: str = "forward") -> list[int]:
        """The source frame indices :meth:`propagate` would recompute from ``frame_index`` (for progress bars)."""
        direction = self._direction(direction)
        with self._lock:
            position = self._position(frame_index)
            positions = {p for sweep in self._sweeps(track_id, position, direction) for p in sweep.positions()}
            return [self.result[p].frame_index for p in sorted(positions)]

    def propagate_all(self, *, on_frame: FrameCallback | None = None, cancel: threading.Event | None = None) -> Edit:
        """Re-propagate every prompted track over the whole video from its earliest prompt, forwards then
        backwards, with all its prompts in memory (locked and painted frames keep their masks).

        With SAM 2 this equals transformers' offline loop given the same prompts in one inference session.
        Tracks without any prompt (imported results) are left as they are.
        """
        with self._lock:
            tracks = sorted(self.result.prompts)
            with self._change("propagate_all", tracks) as change:
                last = len(self.result) - 1
                for track_id in tracks:
                    if cancel is not None and cancel.is_set():
                        change.completed = False
                        break
                    first = min(self._prompt_positions(track_id))
                    sweeps = [Sweep(first, last)] + ([Sweep(first, 0)] if first > 0 else [])
                    self._propagate(change, track_id, sweeps, on_frame, cancel)
            return self._finish(change, None)

    def adopt(self, other: VideoSegmentation, action: str = "autolabel") -> Edit:
        """Take ``other``'s tracks (an auto-label run over the same frames) into this session as one undoable
        edit: their masks, detector prompts and labels. Only while the session has no track."""
        with self._lock:
            if self.track_ids:
                raise CorrectionError(
                    f"the session already has tracks {self.track_ids}; auto-label runs on a video without any "
                    "(delete them first)"
                )
            if [f.frame_index for f in other] != [f.frame_index for f in self.result][: len(other)]:
                raise CorrectionError("the result to adopt was made on other frames; run it on this session's video")
            with self._change(action, sorted({*other.track_ids, *other.prompts})) as change:
                for position, frame in enumerate(other):
                    for obj in frame.objects:
                        self._set_mask(change, position, obj.track_id, obj)
                for track_id, per_frame in other.prompts.items():
                    for frame_index, prompt in per_frame.items():
                        self._record(change, PromptDiff(track_id, frame_index, None, prompt))
            return self._finish(change, None)

    # -- edits without recomputation ------------------------------------------------------------------------
    def relabel(self, track_id: int, label: str, *, seconds: float = 0.0) -> Edit:
        """Give a track another label on every frame."""
        label = str(label).strip()
        if not label:
            raise CorrectionError("a label cannot be empty")
        with self._lock:
            self._check_track(track_id)
            with self._change("relabel", [track_id], effort=Effort(seconds=seconds)) as change:
                self._record(change, LabelDiff(track_id, self._track_info(track_id)[0], label))
            return self._finish(change, track_id)

    def merge(self, source_id: int, into_id: int, *, seconds: float = 0.0) -> Edit:
        """Merge track ``source_id`` into ``into_id`` (one object tracked under two ids).

        On each frame the masks are united under ``into_id`` with its label; ``source_id``'s prompts move
        to ``into_id`` on frames where it has none (where both have one, ``into_id``'s stays); approvals unite.
        """
        if source_id == into_id:
            raise CorrectionError(f"cannot merge track {source_id} into itself; give two different track ids")
        with self._lock:
            self._check_track(source_id)
            self._check_track(into_id)
            label, phrase = self._track_info(into_id)
            with self._change("merge", [into_id, source_id], effort=Effort(seconds=seconds)) as change:
                approved = self._locked_positions(into_id)
                for position, frame in enumerate(self.result):
                    moved = frame.get(source_id)
                    if moved is None:
                        continue
                    target = frame.get(into_id)
                    if position in approved:  # an approved mask of into_id is never overwritten
                        self._set_mask(change, position, source_id, None)
                        continue
                    union = moved.mask | target.mask if target is not None else moved.mask
                    score = max(moved.score, target.score) if target is not None else moved.score
                    self._set_mask(change, position, into_id, self._object(into_id, union, score, (label, phrase)))
                    self._set_mask(change, position, source_id, None)
                into_prompts = self.result.prompts.get(into_id, {})
                for frame_index, prompt in self.prompts(source_id).items():
                    if frame_index not in into_prompts:
                        self._record(change, PromptDiff(into_id, frame_index, None, prompt))
                    self._record(change, PromptDiff(source_id, frame_index, prompt, None))
                for frame_index in self.locked(source_id):
                    if frame_index not in self.result.locks.get(into_id, set()):
                        self._record(change, LockDiff(into_id, frame_index, False, True))
                    self._record(change, LockDiff(source_id, frame_index, True, False))
            return self._finish(change, into_id)

    def delete(self, track_id: int, from_frame_index: int | None = None, *, seconds: float = 0.0) -> Edit:
        """Delete a track everywhere, or on ``from_frame_index`` and every frame after it (with its prompts
        and approvals there: deleting is an explicit act, so approvals do not protect against it)."""
        with self._lock:
            self._check_track(track_id)
            start = 0 if from_frame_index is None else self._position(from_frame_index)
            first_index = self.result[start].frame_index
            with self._change("delete", [track_id], first_index, effort=Effort(seconds=seconds)) as change:
                for position in range(start, len(self.result)):
                    if self.result[position].get(track_id) is not None:
                        self._set_mask(change, position, track_id, None)
                for frame_index, prompt in self.prompts(track_id).items():
                    if frame_index >= first_index:
                        self._record(change, PromptDiff(track_id, frame_index, prompt, None))
                for frame_index in self.locked(track_id):
                    if frame_index >= first_index:
                        self._record(change, LockDiff(track_id, frame_index, True, False))
            return self._finish(change, track_id)

    def lock(self, track_id: int, frame_index: int, last_frame_index: int | None = None) -> Edit:
        """Approve a track's mask on a frame (or on every processed frame up to ``last_frame_index``)."""
        return self._set_locks(track_id, frame_index, last_frame_index, True)

    def unlock(self, track_id: int, frame_index: int, last_frame_index: int | None = None) -> Edit:
        """Withdraw approvals set by :meth:`lock`."""
        return self._set_locks(track_id, frame_index, last_frame_index, False)

    def _set_locks(self, track_id: int, frame_index: int, last_frame_index: int | None, value: bool) -> Edit:
        with self._lock:
            self._check_track(track_id)
            first = self._position(frame_index)
            last = self._position(last_frame_index) if last_frame_index is not None else first
            if last < first:
                first, last = last, first
            locked = self.result.locks.get(track_id, set())
            with self._change("lock" if value else "unlock", [track_id], frame_index) as change:
                for position in range(first, last + 1):
                    index = self.result[position].frame_index
                    if (index in locked) != value:
                        self._record(change, LockDiff(track_id, index, not value, value))
            return self._finish(change, track_id)

    # -- undo and redo --------------------------------------------------------------------------------------
    def undo(self) -> Edit | None:
        """Revert the last edit (None when there is none); the masks come back byte for byte."""
        with self._lock:
            if not self.history.undo_stack:
                return None
            change = self.history.change(self.history.undo_stack[-1])
            revert_change(self.result, change.diffs)
            self.history.mark("undo", change.seq)
            return self._summary(f"undo {change.action}", change)

    def redo(self) -> Edit | None:
        """Apply the last undone edit again (None when there is none)."""
        with self._lock:
            if not self.history.redo_stack:
                return None
            change = self.history.change(self.history.redo_stack[-1])
            apply_change(self.result, change.diffs)
            self.history.mark("redo", change.seq)
            return self._summary(f"redo {change.action}", change)

    # -- internals: positions, prompts, boundaries ----------------------------------------------------------
    def _position(self, frame_index: int) -> int:
        return self.result.position_of(int(frame_index))

    def _check_track(self, track_id: int) -> None:
        if track_id not in self.track_ids:
            raise KeyError(f"no track with id {track_id}; known track ids: {self.track_ids}")

    def _editable(self, track_id: int, frame_index: int) -> int:
        position = self._position(frame_index)
        if frame_index in self.result.locks.get(track_id, set()):
            raise CorrectionError(
                f"frame {frame_index} of track {track_id} is approved (locked); unlock it first: "
                f"session.unlock({track_id}, {frame_index})"
            )
        return position

    @staticmethod
    def _direction(direction: str) -> str:
        if direction not in DIRECTIONS:
            raise CorrectionError(f"propagate={direction!r} is not one of {', '.join(DIRECTIONS)}")
        return direction

    def _valid_box(self, box: Box) -> Box:
        x0, y0, x1, y1 = (float(v) for v in box)
        if not (x1 > x0 and y1 > y0):
            raise CorrectionError(f"box {tuple(box)} is empty; give (x0, y0, x1, y1) with x1 > x0 and y1 > y0")
        return (x0, y0, x1, y1)

    def _painted(self, position: int, track_id: int, add, erase, mask) -> np.ndarray:
        shape = (self.result.info.height, self.result.info.width)
        for name, value in (("add", add), ("erase", erase), ("mask", mask)):
            if value is not None and np.shape(value) != shape:
                raise CorrectionError(f"{name} has shape {np.shape(value)}; give an (H, W) = {shape} boolean array")
        if mask is not None:
            return np.asarray(mask, dtype=bool)
        shown = self.result[position].get(track_id)
        painted = shown.mask if shown is not None else np.zeros(shape, dtype=bool)
        if add is not None:
            painted = painted | np.asarray(add, dtype=bool)
        if erase is not None:
            painted = painted & ~np.asarray(erase, dtype=bool)
        return painted

    def _prompt_positions(self, track_id: int) -> dict[int, FramePrompt]:
        return {self._position(index): prompt for index, prompt in self.result.prompts.get(track_id, {}).items()}

    def _locked_positions(self, track_id: int) -> set[int]:
        return {self._position(index) for index in self.result.locks.get(track_id, set())}

    def _sweeps(self, track_id: int, position: int, direction: str) -> list[Sweep]:
        """The frames an edit on ``position`` recomputes: up to (not including) the next prompt or lock."""
        stops = set(self._prompt_positions(track_id)) | self._locked_positions(track_id)
        stops.discard(position)
        after = min((p for p in stops if p > position), default=len(self.result))
        before = max((p for p in stops if p < position), default=-1)
        sweeps = [Sweep(position, after - 1 if direction in ("forward", "both") else position)]
        if direction in ("backward", "both") and before < position - 1:
            sweeps.append(Sweep(position, before + 1))
        return sweeps

    def _track_info(self, track_id: int) -> tuple[str, str]:
        """(label, phrase) of a track: its recorded label, else those of its first mask."""
        label = self.result.labels.get(track_id)
        for frame in self.result:
            obj = frame.get(track_id)
            if obj is not None:
                return label or obj.label, obj.phrase
        return label or "object", self.result.query

    def _object(self, track_id: int, mask: np.ndarray, score: float, info: tuple[str, str]) -> ObjectMask | None:
        if mask.sum() < self.min_mask_area:
            return None
        rle = RLE.encode(mask)
        return ObjectMask(track_id, info[0], info[1], float(score), rle.bbox_xyxy(), rle)

    # -- internals: recording -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _change(
        self, action: str, track_ids: list[int], frame_index: int | None = None, effort: Effort | None = None
    ) -> Iterator[Change]:
        """A new change; if the edit fails part-way, what it set and did not journal yet is set back."""
        change = self.history.begin(Change(0, action, list(track_ids), frame_index, effort=effort or Effort()))
        try:
            yield change
        except BaseException:
            revert_change(self.result, change.diffs[change.journaled :])
            del change.diffs[change.journaled :]
            if change.journaled:  # parts are on disk: they stay, as an incomplete edit that undo can take back
                change.completed = False
            else:
                self.history.next_seq -= 1
            raise

    def _record(self, change: Change, diff: Diff) -> None:
        apply_diff(self.result, diff)
        change.diffs.append(diff)

    def _set_mask(self, change: Change, position: int, track_id: int, obj: ObjectMask | None) -> bool:
        before = self.result[position].get(track_id)
        if before == obj:
            return False
        self._record(change, MaskDiff(position, track_id, before, obj))
        return True

    def _prompt_edit(
        self,
        action: str,
        track_id: int,
        position: int,
        prompt: FramePrompt,
        propagate: str,
        effort: Effort,
        on_frame: FrameCallback | None,
        cancel: threading.Event | None,
        first: Diff | None = None,
    ) -> Edit:
        direction = self._direction(propagate)
        frame_index = self.result[position].frame_index
        with self._change(action, [track_id], frame_index, effort=effort) as change:
            if first is not None:
                self._record(change, first)
            before = self.result.prompts.get(track_id, {}).get(frame_index)
            self._record(change, PromptDiff(track_id, frame_index, before, prompt))
            sweeps = self._sweeps(track_id, position, direction)
            self._propagate(change, track_id, sweeps, on_frame, cancel)
        return self._finish(change, track_id)

    def _propagate(
        self,
        change: Change,
        track_id: int,
        sweeps: list[Sweep],
        on_frame: FrameCallback | None,
        cancel: threading.Event | None,
    ) -> None:
        """Run the segmenter over ``sweeps`` and set each frame's mask (not on locked frames), journaling parts."""
        frame_prompts = self._prompt_positions(track_id)
        prompts = {p: _object_prompt(track_id, fp) for p, fp in frame_prompts.items()}
        for sweep in sweeps:  # a sweep with no prompt behind it starts from the mask shown (not recorded)
            start = sweep.first
            if start in prompts or any((p >= start if sweep.reverse else p <= start) for p in prompts):
                continue
            shown = self.result[start].get(track_id)
            if shown is None:
                raise CorrectionError(
                    f"track {track_id} has no mask on frame {self.result[start].frame_index} and no prompt before it "
                    "in that direction; click on the object there first"
                )
            prompts[start] = ObjectPrompt(track_id, mask=shown.mask)
        retain = getattr(self._memory, "retain", None)
        if retain is not None:  # outputs of prompts that no longer exist (deleted, merged, undone) are dropped
            retain(
                {(t, p) for t in self.result.prompts for p in self._prompt_positions(t)}
                | {(track_id, p) for p in prompts}
            )
        locked = self._locked_positions(track_id)
        info = self._track_info(track_id)
        done: set[int] = set()
        last_flush = time.monotonic()
        tracked: TrackedMask
        outputs = self.segmenter.propagate_object(self.frames, track_id, prompts, sweeps, self._memory)
        try:
            for tracked in outputs:
                position = tracked.position
                if position in done or position in locked:
                    continue
                done.add(position)
                painted = frame_prompts.get(position)
                if painted is not None and painted.mask is not None:
                    obj = self._object(track_id, painted.mask.decode(), 1.0, info)
                else:
                    obj = self._object(track_id, tracked.mask, tracked.score, info)
                self._set_mask(change, position, track_id, obj)
                if on_frame is not None:
                    on_frame(self.result[position].frame_index, track_id, obj)
                if time.monotonic() - last_flush > PART_SECONDS and len(change.diffs) > change.journaled:
                    self.history.write_part(change)  # a kill from here on keeps the frames done so far
                    last_flush = time.monotonic()
                if cancel is not None and cancel.is_set():
                    change.completed = False
                    break
        finally:
            close = getattr(outputs, "close", None)
            if close is not None:
                close()

    def _finish(self, change: Change, track_id: int | None) -> Edit:
        """Journal what is not journaled yet; snapshot when due; describe the edit."""
        if not change.diffs:
            self.history.next_seq -= 1  # nothing changed: the number is reused
            return Edit(change.action, track_id)
        if len(change.diffs) > change.journaled:
            self.history.write_part(change)
        if self.history.snapshot_due(self.info):
            self.history.snapshot(self.result, self.info)
        edit = self._summary(change.action, change)
        edit.track_id = track_id
        return edit

    def _summary(self, action: str, change: Change) -> Edit:
        indices = [self.result[p].frame_index for p in change.frame_positions()]
        track = change.track_ids[0] if len(change.track_ids) == 1 else None
        return Edit(action, track, indices, change.completed, change.seq)


def effort_log(changes: Sequence[Change]) -> list[TrackEffort]:
    """Per track, the work recorded in ``changes`` (undone edits included: they were work too)."""
    totals: dict[int, Effort] = {}
    edited: dict[int, set[int]] = {}
    for change in changes:
        if not change.track_ids:
            continue
        track_id = change.track_ids[0]
        totals[track_id] = totals.get(track_id, Effort()) + change.effort
        if change.effort.clicks or change.effort.boxes or change.effort.strokes:
            edited.setdefault(track_id, set()).add(change.frame_index)
    return [
        TrackEffort(t, e.clicks, e.boxes, e.strokes, len(edited.get(t, ())), round(e.seconds, 3))
        for t, e in sorted(totals.items())
    ]


def _object_prompt(track_id: int, prompt: FramePrompt) -> ObjectPrompt:
    """What the segmenter reads from a frame prompt."""
    if prompt.mask is not None:
        return ObjectPrompt(track_id, mask=prompt.mask.decode())
    points = [(c.x, c.y) for c in prompt.clicks]
    return ObjectPrompt(track_id, box=prompt.box, points=points, labels=[int(c.positive) for c in prompt.clicks])


__all__ = ["CorrectionSession", "CorrectionError", "Edit", "TrackEffort", "SessionFolderError", "effort_log"]
