"""Edits as data: each edit of a correction session is a :class:`Change`, a list of diffs that set values.

Every diff records the value before and after, for one key of the result: one track's mask on one frame
(:class:`MaskDiff`), one track's prompt on one frame (:class:`PromptDiff`), one approval
(:class:`LockDiff`), or a track's label (:class:`LabelDiff`). Applying sets the "after" values, reverting
sets the "before" values in reverse order. Because a diff sets a value rather than adjusting one, replaying a
journal of changes over a snapshot that already holds some of them gives the same state: that is what makes
the session's folder safe to reopen after a kill at any moment.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from segvlm.masks import RLE
from segvlm.types import FramePrompt, ObjectMask, VideoSegmentation


@dataclass(frozen=True)
class MaskDiff:
    """One track's mask on one processed frame (``None``: the track is not on that frame)."""

    position: int
    track_id: int
    before: ObjectMask | None
    after: ObjectMask | None


@dataclass(frozen=True)
class PromptDiff:
    """One track's prompt on one source frame (``None``: no prompt there)."""

    track_id: int
    frame_index: int
    before: FramePrompt | None
    after: FramePrompt | None


@dataclass(frozen=True)
class LockDiff:
    """Whether a person approved one track on one source frame."""

    track_id: int
    frame_index: int
    before: bool
    after: bool


@dataclass(frozen=True)
class LabelDiff:
    """A track's label, recorded in the result and set on every frame where it appears ("": none recorded)."""

    track_id: int
    before: str
    after: str


Diff = MaskDiff | PromptDiff | LockDiff | LabelDiff


@dataclass
class Effort:
    """What an edit cost a person: the effort log of an annotation project sums these per track."""

    clicks: int = 0
    boxes: int = 0
    strokes: int = 0
    seconds: float = 0.0

    def __add__(self, other: Effort) -> Effort:
        return Effort(
            self.clicks + other.clicks,
            self.boxes + other.boxes,
            self.strokes + other.strokes,
            self.seconds + other.seconds,
        )


@dataclass
class Change:
    """One edit: what was done (``action`` on ``track_ids`` at ``frame_index``) and its diffs, in order."""

    seq: int
    action: str
    track_ids: list[int]
    frame_index: int | None = None
    diffs: list[Diff] = field(default_factory=list)
    effort: Effort = field(default_factory=Effort)
    completed: bool = True  # False when a propagation was cancelled part-way (the frames done are kept)
    journaled: int = 0  # how many of ``diffs`` are already written to the session's journal

    def frame_positions(self) -> list[int]:
        """Processed-frame positions whose masks this change sets, ascending."""
        return sorted({diff.position for diff in self.diffs if isinstance(diff, MaskDiff)})


# -- applying ------------------------------------------------------------------------------------------------


def apply_diff(result: VideoSegmentation, diff: Diff, undo: bool = False) -> None:
    """Set the diff's "after" value in ``result`` (its "before" value when ``undo``)."""
    if isinstance(diff, MaskDiff):
        value = diff.before if undo else diff.after
        frame = result.frames[diff.position]
        objects = [obj for obj in frame.objects if obj.track_id != diff.track_id]
        if value is not None:
            objects.append(value)
        frame.objects = sorted(objects, key=lambda obj: obj.track_id)
    elif isinstance(diff, PromptDiff):
        value = diff.before if undo else diff.after
        per_frame = result.prompts.setdefault(diff.track_id, {})
        if value is None:
            per_frame.pop(diff.frame_index, None)
        else:
            per_frame[diff.frame_index] = value
        if not per_frame:
            del result.prompts[diff.track_id]
    elif isinstance(diff, LockDiff):
        locked = result.locks.setdefault(diff.track_id, set())
        if diff.before if undo else diff.after:
            locked.add(diff.frame_index)
        else:
            locked.discard(diff.frame_index)
        if not locked:
            del result.locks[diff.track_id]
    else:
        label = diff.before if undo else diff.after
        if label:
            result.labels[diff.track_id] = label
        else:
            result.labels.pop(diff.track_id, None)
        for frame in result.frames:
            frame.objects = [
                replace(obj, label=label) if obj.track_id == diff.track_id else obj for obj in frame.objects
            ]


def apply_change(result: VideoSegmentation, diffs: list[Diff]) -> None:
    for diff in diffs:
        apply_diff(result, diff)


def revert_change(result: VideoSegmentation, diffs: list[Diff]) -> None:
    for diff in reversed(diffs):
        apply_diff(result, diff, undo=True)


# -- JSON ----------------------------------------------------------------------------------------------------


def _object_to_json(obj: ObjectMask | None) -> dict[str, Any] | None:
    if obj is None:
        return None
    return {
        "label": obj.label,
        "phrase": obj.phrase,
        "score": obj.score,
        "box": list(obj.box_xyxy),
        "rle": obj.rle.to_coco(),
    }


def _object_from_json(track_id: int, data: dict[str, Any] | None) -> ObjectMask | None:
    if data is None:
        return None
    return ObjectMask(
        track_id, data["label"], data["phrase"], float(data["score"]), tuple(data["box"]), RLE.from_coco(data["rle"])
    )


def _prompt_to_json(prompt: FramePrompt | None) -> dict[str, Any] | None:
    return None if prompt is None else prompt.to_json()


def _prompt_from_json(data: dict[str, Any] | None) -> FramePrompt | None:
    return None if data is None else FramePrompt.from_json(data)


def diff_to_json(diff: Diff) -> dict[str, Any]:
    if isinstance(diff, MaskDiff):
        return {
            "kind": "mask",
            "position": diff.position,
            "track_id": diff.track_id,
            "before": _object_to_json(diff.before),
            "after": _object_to_json(diff.after),
        }
    if isinstance(diff, PromptDiff):
        return {
            "kind": "prompt",
            "track_id": diff.track_id,
            "frame_index": diff.frame_index,
            "before": _prompt_to_json(diff.before),
            "after": _prompt_to_json(diff.after),
        }
    if isinstance(diff, LockDiff):
        return {
            "kind": "lock",
            "track_id": diff.track_id,
            "frame_index": diff.frame_index,
            "before": diff.before,
            "after": diff.after,
        }
    return {"kind": "label", "track_id": diff.track_id, "before": diff.before, "after": diff.after}


def diff_from_json(data: dict[str, Any]) -> Diff:
    kind, track_id = data["kind"], int(data["track_id"])
    if kind == "mask":
        before = _object_from_json(track_id, data["before"])
        return MaskDiff(int(data["position"]), track_id, before, _object_from_json(track_id, data["after"]))
    if kind == "prompt":
        before = _prompt_from_json(data["before"])
        return PromptDiff(track_id, int(data["frame_index"]), before, _prompt_from_json(data["after"]))
    if kind == "lock":
        return LockDiff(track_id, int(data["frame_index"]), bool(data["before"]), bool(data["after"]))
    if kind == "label":
        return LabelDiff(track_id, data["before"], data["after"])
    raise ValueError(f"unknown diff kind {kind!r} in the session history")


def change_header(change: Change) -> dict[str, Any]:
    """Everything of a change but its diffs (written with each journal part)."""
    effort = change.effort
    return {
        "seq": change.seq,
        "action": change.action,
        "track_ids": change.track_ids,
        "frame_index": change.frame_index,
        "effort": [effort.clicks, effort.boxes, effort.strokes, effort.seconds],
        "completed": change.completed,
    }


def change_from_parts(parts: list[dict[str, Any]]) -> Change:
    """Rebuild a change from its journal parts (one or more lines with the same ``seq``)."""
    head = parts[-1]
    clicks, boxes, strokes, seconds = head.get("effort", [0, 0, 0, 0.0])
    return Change(
        seq=int(head["seq"]),
        action=head["action"],
        track_ids=[int(t) for t in head["track_ids"]],
        frame_index=head.get("frame_index"),
        diffs=[diff_from_json(diff) for part in parts for diff in part["diffs"]],
        effort=Effort(int(clicks), int(boxes), int(strokes), float(seconds)),
        completed=bool(head.get("completed", True)),
    )
