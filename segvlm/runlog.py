"""A run log: a long ``segment`` run writes each finished frame as it goes, so a kill loses nothing.

``Pipeline(...)(query, video, checkpoint="out/run.jsonl")`` appends one JSON line per processed frame, in
order, flushed as it is written (and synced to disk at least once a second): the frame's objects (COCO RLE),
masks that a new track back-filled into earlier frames, the detector prompts that started tracks on it, and the
tracker's state after it (ids, labels, lost-frame counters, the next free id). The first line records what the
run is (video, query, stride, frame limit, models) so that a resume refuses a log of another run.

``resume=True`` reads the log, drops a last line cut short by a kill, restores the frames and the tracker, and
continues: the last complete frame is decoded again and every track visible on it re-enters the segmenter with
its mask there as a mask prompt (so the ids stay the same), then frames after it are processed as usual. No
frame is lost or written twice. The memory of frames before the resume point is not restored (SAM 2's memory
starts again from the re-entry masks), so masks after a resume can differ from an uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segvlm.errors import SegvlmError
from segvlm.masks import RLE
from segvlm.types import FramePrompt, FrameResult, ObjectMask

FORMAT_VERSION = 1
SYNC_SECONDS = 1.0


class RunLogError(SegvlmError):
    """A run log that cannot be resumed as asked (another run's, damaged, or missing)."""


@dataclass
class TrackSnapshot:
    """What the tracker knows about one track between frames."""

    label: str
    phrase: str
    score: float
    lost_frames: int
    ended: bool


@dataclass
class ResumeState:
    """Everything a resumed run continues from.

    Attributes:
        frames: the processed frames written before the kill, in order (back-filled masks applied).
        tracks: the tracker's tracks after the last of them.
        next_id: the next free track id.
        prompts: the detector prompts that started tracks (track id -> frame index -> prompt).
    """

    frames: list[FrameResult] = field(default_factory=list)
    tracks: dict[int, TrackSnapshot] = field(default_factory=dict)
    next_id: int = 1
    prompts: dict[int, dict[int, FramePrompt]] = field(default_factory=dict)


def _object_json(obj: ObjectMask) -> list[Any]:
    return [obj.track_id, obj.label, obj.phrase, obj.score, list(obj.box_xyxy), obj.rle.to_coco()]


def _object(data: list[Any]) -> ObjectMask:
    track_id, label, phrase, score, box, rle = data
    return ObjectMask(int(track_id), label, phrase, float(score), tuple(box), RLE.from_coco(rle))


class RunLog:
    """An append-only log of one run's frames; create with :meth:`start` or :meth:`resume`."""

    def __init__(self, path: Path, handle: Any):
        self.path = path
        self._handle = handle
        self._synced = time.monotonic()

    @classmethod
    def start(cls, path: str | Path, header: dict[str, Any]) -> RunLog:
        """A new log at ``path`` (replacing an old one) beginning with ``header``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "wb")
        log = cls(path, handle)
        log._write({"type": "header", "version": FORMAT_VERSION, **header}, sync=True)
        return log

    @classmethod
    def resume(cls, path: str | Path, header: dict[str, Any]) -> tuple[RunLog, ResumeState]:
        """Open ``path`` to continue it: check it is the same run, drop a torn last line, restore the state."""
        path = Path(path)
        if not path.is_file():
            raise RunLogError(f"there is no run to resume at {path}; run without --resume to start one")
        lines, good_end = [], 0
        with open(path, "rb") as handle:
            for raw in handle:
                if not raw.endswith(b"\n"):
                    break
                try:
                    lines.append(json.loads(raw))
                except ValueError:
                    break
                good_end += len(raw)
        if not lines or lines[0].get("type") != "header":
            raise RunLogError(f"{path} is not a segvlm run log; remove it or choose another --out")
        saved = {key: lines[0].get(key) for key in header}
        different = [key for key in header if saved[key] != header[key]]
        if different:
            shown = ", ".join(f"{key}: {saved[key]!r} in the log, {header[key]!r} now" for key in different)
            raise RunLogError(
                f"{path} is the log of another run ({shown}); resume with the same video, query and options, or "
                "choose another --out"
            )
        state = ResumeState()
        for entry in lines[1:]:
            frame = FrameResult(
                int(entry["frame_index"]),
                int(entry["height"]),
                int(entry["width"]),
                entry.get("timestamp"),
                [_object(data) for data in entry["objects"]],
            )
            state.frames.append(frame)
            for position, data in entry.get("backfill", []):
                target = state.frames[position]
                target.objects = sorted([*target.objects, _object(data)], key=lambda obj: obj.track_id)
            for track_id, frame_index, prompt in entry.get("prompts", []):
                state.prompts.setdefault(int(track_id), {})[int(frame_index)] = FramePrompt.from_json(prompt)
            tracker = entry["tracker"]
            state.next_id = int(tracker["next_id"])
            state.tracks = {int(k): TrackSnapshot(*v) for k, v in tracker["tracks"].items()}
        with open(path, "r+b") as handle:
            handle.truncate(good_end)
        return cls(path, open(path, "ab")), state

    def append(
        self,
        frame: FrameResult,
        backfilled: list[tuple[int, ObjectMask]],
        prompts: list[tuple[int, int, FramePrompt]],
        tracks: dict[int, TrackSnapshot],
        next_id: int,
    ) -> None:
        """Write one finished frame and the tracker's state after it."""
        self._write(
            {
                "type": "frame",
                "frame_index": frame.frame_index,
                "height": frame.height,
                "width": frame.width,
                "timestamp": frame.timestamp,
                "objects": [_object_json(obj) for obj in frame.objects],
                "backfill": [[position, _object_json(obj)] for position, obj in backfilled],
                "prompts": [[track_id, index, prompt.to_json()] for track_id, index, prompt in prompts],
                "tracker": {
                    "next_id": next_id,
                    "tracks": {str(k): [t.label, t.phrase, t.score, t.lost_frames, t.ended] for k, t in tracks.items()},
                },
            }
        )

    def _write(self, entry: dict[str, Any], sync: bool = False) -> None:
        self._handle.write(json.dumps(entry, separators=(",", ":")).encode() + b"\n")
        self._handle.flush()
        if sync or time.monotonic() - self._synced > SYNC_SECONDS:
            os.fsync(self._handle.fileno())
            self._synced = time.monotonic()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            self._handle = None
