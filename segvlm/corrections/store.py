"""A correction session's folder: a snapshot of the result, a journal of every edit, and a lock.

Layout of ``FOLDER``:

* ``masks.json``: the result as ``VideoSegmentation.save`` writes it (COCO RLE, with prompts and approvals),
  a snapshot rewritten atomically every :data:`SNAPSHOT_EVERY` journal lines and when the session closes;
* ``session.json``: the video the session reads (absolute path, stride, frame count) and how many journal
  lines the snapshot already holds;
* ``history.jsonl``: the journal, one JSON line per edit part, undo or redo, appended and flushed to disk
  (``fsync``) before an edit returns. A long propagation is written in parts as it goes, so a kill keeps
  the frames already computed. A line cut short by a kill is dropped when the folder is reopened;
* ``.lock``: held (``flock``) by the process that has the session open; the lock dies with the process.

Reopening loads the snapshot and replays the journal lines after it. Every diff sets a value, so replaying a
line the snapshot already holds changes nothing (see :mod:`segvlm.corrections.changes`); the undo and redo
stacks are rebuilt from the whole journal, so undo works across a restart.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from segvlm.corrections.changes import (
    Change,
    Diff,
    apply_change,
    change_from_parts,
    change_header,
    diff_from_json,
    diff_to_json,
    revert_change,
)
from segvlm.errors import SegvlmError
from segvlm.types import VideoSegmentation

FORMAT_VERSION = 1
SNAPSHOT_EVERY = 50
SESSION_FILE, HISTORY_FILE, LOCK_FILE = "session.json", "history.jsonl", ".lock"


class SessionFolderError(SegvlmError):
    """A session folder that cannot be created or opened as asked (in use, missing, not a session)."""


@dataclass
class SessionInfo:
    """``session.json``: what the session reads and how far the snapshot goes.

    Attributes:
        video: absolute path of the video, image folder or image (``"<frames>"`` for frames given in memory).
        stride: every ``stride``-th source frame was processed.
        frames: number of processed frames.
        applied: journal lines already reflected in ``masks.json``.
    """

    video: str
    stride: int
    frames: int
    applied: int = 0
    format_version: int = FORMAT_VERSION


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


class History:
    """Undo and redo stacks over the session's changes, backed by the journal when there is a folder.

    Without a folder the changes stay in memory. With one, only each change's journal offsets stay in
    memory and an undo reads the change back from the file, so hours of edits cost little RAM.
    """

    def __init__(self, folder: Path | None = None):
        self.folder = folder
        self.undo_stack: list[int] = []
        self.redo_stack: list[int] = []
        self.next_seq = 1
        self.lines = 0  # journal lines written so far
        self._memory: dict[int, Change] = {}
        self._offsets: dict[int, list[int]] = {}  # seq -> byte offsets of its parts in the journal
        self._journal = None
        self._lock = None

    # -- folder lifecycle -----------------------------------------------------------------------------------
    @classmethod
    def create(cls, folder: Path, result: VideoSegmentation, info: SessionInfo) -> History:
        folder = Path(folder)
        if (folder / SESSION_FILE).exists():
            raise SessionFolderError(
                f"{folder} already holds a correction session; reopen it with CorrectionSession.open({str(folder)!r}, "
                "pipe) or choose an empty folder"
            )
        if folder.exists() and not folder.is_dir():
            raise SessionFolderError(f"{folder} is a file; give a folder for the session")
        if folder.is_dir() and any(folder.iterdir()):
            raise SessionFolderError(
                f"{folder} already holds other files; give an empty or new folder for the session (it writes "
                "masks.json, session.json and history.jsonl there)"
            )
        # Built beside the target and renamed into place: a kill during creation leaves no half-made session.
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = folder.with_name(f".{folder.name}.creating-{os.getpid()}")
        if staging.exists():
            import shutil

            shutil.rmtree(staging)
        staging.mkdir()
        result.save(str(staging))
        _write_atomic(staging / SESSION_FILE, json.dumps(asdict(info)))
        (staging / HISTORY_FILE).touch()
        os.replace(staging, folder)  # onto a missing or empty folder
        history = cls(folder)
        history._acquire()
        history._journal = open(folder / HISTORY_FILE, "ab")
        return history

    @classmethod
    def open(cls, folder: Path) -> tuple[History, VideoSegmentation, SessionInfo]:
        """Lock the folder, load the snapshot, replay the journal after it; returns the live state."""
        folder = Path(folder)
        if not (folder / SESSION_FILE).is_file():
            raise SessionFolderError(
                f"{folder} holds no correction session (no {SESSION_FILE}); create one with "
                "pipe.correct(result, video, folder=...)"
            )
        history = cls(folder)
        history._acquire()
        info = SessionInfo(**json.loads((folder / SESSION_FILE).read_text()))
        result = VideoSegmentation.load(str(folder))
        history._replay(result, info.applied)
        history._journal = open(folder / HISTORY_FILE, "ab")
        return history, result, info

    def _acquire(self) -> None:
        import fcntl

        path = self.folder / LOCK_FILE
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise SessionFolderError(
                f"the correction session in {self.folder} is open in {owner}; close it there first (two "
                "processes editing one session would overwrite each other's work)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()}")
        handle.flush()
        self._lock = handle

    def _replay(self, result: VideoSegmentation, applied: int) -> None:
        """Rebuild the stacks from the journal and apply the lines after the snapshot; drop a torn last line."""
        path = self.folder / HISTORY_FILE
        good_end = 0
        with open(path, "rb") as handle:
            while True:
                offset = handle.tell()
                line = handle.readline()
                if not line:
                    break
                if not line.endswith(b"\n"):
                    break  # the last line, cut short by a kill: the edit it belonged to never returned
                try:
                    entry = json.loads(line)
                except ValueError:
                    raise SessionFolderError(
                        f"{path} is damaged at line {self.lines + 1} (not JSON); the edits up to it are intact: keep a "
                        "copy, then cut the file before that line to reopen the session"
                    ) from None
                good_end = handle.tell()
                self._index(entry, offset)
                if self.lines >= applied:
                    self._redo_entry(result, entry)
                self.lines += 1
        if good_end < path.stat().st_size:
            with open(path, "r+b") as handle:
                handle.truncate(good_end)

    def _index(self, entry: dict[str, Any], offset: int) -> None:
        kind, seq = entry["type"], int(entry["seq"])
        if kind == "edit":
            if seq not in self._offsets:
                self._offsets[seq] = []
                self.undo_stack.append(seq)
                self.redo_stack.clear()
            self._offsets[seq].append(offset)
            self.next_seq = max(self.next_seq, seq + 1)
        elif kind == "undo":
            self.undo_stack.remove(seq)
            self.redo_stack.append(seq)
        elif kind == "redo":
            self.redo_stack.remove(seq)
            self.undo_stack.append(seq)

    def _redo_entry(self, result: VideoSegmentation, entry: dict[str, Any]) -> None:
        kind, seq = entry["type"], int(entry["seq"])
        if kind == "edit":
            apply_change(result, [diff_from_json(diff) for diff in entry["diffs"]])
        elif kind == "undo":
            revert_change(result, self.change(seq).diffs)
        elif kind == "redo":
            apply_change(result, self.change(seq).diffs)

    # -- recording ------------------------------------------------------------------------------------------
    def begin(self, change: Change) -> Change:
        """Give ``change`` the next sequence number; it joins the undo stack with its first part."""
        change.seq = self.next_seq
        self.next_seq += 1
        return change

    def write_part(self, change: Change) -> None:
        """Record the diffs of ``change`` not recorded yet (already applied) as its next part."""
        diffs: list[Diff] = change.diffs[change.journaled :]
        change.journaled = len(change.diffs)
        if change.seq not in self._offsets and change.seq not in self._memory:
            self.undo_stack.append(change.seq)
            self.redo_stack.clear()
        if self._journal is None:
            self._memory[change.seq] = change
            return
        entry = {"type": "edit", **change_header(change), "diffs": [diff_to_json(diff) for diff in diffs]}
        self._offsets.setdefault(change.seq, []).append(self._append(entry))

    def mark(self, kind: str, seq: int) -> None:
        """Record an undo or redo of change ``seq`` (the caller has applied it)."""
        if kind == "undo":
            self.undo_stack.remove(seq)
            self.redo_stack.append(seq)
        else:
            self.redo_stack.remove(seq)
            self.undo_stack.append(seq)
        if self._journal is not None:
            self._append({"type": kind, "seq": seq})

    def _append(self, entry: dict[str, Any]) -> int:
        offset = self._journal.tell()
        try:
            self._journal.write(json.dumps(entry, separators=(",", ":")).encode() + b"\n")
            self._journal.flush()
            os.fsync(self._journal.fileno())
        except OSError as error:  # a full disk: take the torn bytes back so later lines stay readable
            self._journal.seek(offset)
            self._journal.truncate(offset)
            raise SessionFolderError(
                f"cannot write the session journal {self.folder / HISTORY_FILE} ({error.strerror or error}); free "
                "disk space and make the edit again (the edits before it are saved)"
            ) from None
        self.lines += 1
        return offset

    def change(self, seq: int) -> Change:
        """The change with sequence number ``seq``, with all its parts."""
        if self.folder is None:
            return self._memory[seq]
        parts = []
        with open(self.folder / HISTORY_FILE, "rb") as handle:
            for offset in self._offsets[seq]:
                handle.seek(offset)
                parts.append(json.loads(handle.readline()))
        return change_from_parts(parts)

    def changes(self) -> list[Change]:
        """Every change ever recorded (undone ones included), oldest first: the effort log reads these."""
        return [self.change(seq) for seq in sorted({*self._offsets, *self._memory})]

    # -- snapshots ------------------------------------------------------------------------------------------
    def snapshot_due(self, info: SessionInfo) -> bool:
        return self.folder is not None and self.lines - info.applied >= SNAPSHOT_EVERY

    def snapshot(self, result: VideoSegmentation, info: SessionInfo) -> None:
        """Write ``masks.json``, then ``session.json`` saying the snapshot holds every journal line so far."""
        if self.folder is None:
            return
        result.save(str(self.folder))
        info.applied = self.lines
        _write_atomic(self.folder / SESSION_FILE, json.dumps(asdict(info)))

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None
