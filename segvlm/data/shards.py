"""Crash-safe files: atomic writes, per-unit parquet shards and the ledger of finished units.

The rules that make a build resumable after ``kill -9`` at any instant:
    * every file is written under a temporary name in the same folder, flushed, then ``os.replace``-d to
      its final name, so a final name always holds a complete file;
    * a unit's rows live in exactly one shard whose name is the unit's key, so redoing a unit replaces its
      shard instead of adding a second copy;
    * the ledger is append-only JSON lines written by one process; a torn last line is cut off on open.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

TMP_MARK = ".tmp-"
RECORD_KEY = b"segvlm_unit"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one."""
    tmp = path.with_name(f"{TMP_MARK}{uuid.uuid4().hex[:8]}-{path.name}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def remove_temporaries(folder: Path) -> int:
    """Delete files left half-written by a killed run; returns how many there were."""
    count = 0
    if folder.is_dir():
        for path in folder.iterdir():
            if path.name.startswith(TMP_MARK):
                path.unlink(missing_ok=True)
                count += 1
    return count


def shard_path(data_dir: Path, key: str, rows: int) -> Path:
    """Where a unit's output lives: ``<key>.parquet``, or ``<key>.empty.json`` for a unit with no rows.

    Empty units get no parquet file because ``datasets``' parquet reader rejects zero-row files; the JSON
    still marks the unit as done.
    """
    return data_dir / (f"{key}.parquet" if rows else f"{key}.empty.json")


def find_unit_output(data_dir: Path, key: str) -> Path | None:
    """The finished output of a unit (shard or empty marker), or None when it is not done."""
    for rows in (1, 0):
        path = shard_path(data_dir, key, rows)
        if path.exists():
            return path
    return None


def write_unit_output(table: Any, data_dir: Path, record: UnitRecord) -> Path:
    """Write a unit's rows as a parquet shard, atomically, with ``record`` in its footer; returns the path.

    The footer copy makes a shard self-describing: if a kill lands after the rename but before the ledger
    line, the next run rebuilds the ledger line from the shard (:func:`read_unit_record`).
    """
    import pyarrow.parquet as pq

    path = shard_path(data_dir, record.key, table.num_rows)
    if table.num_rows == 0:
        atomic_write_text(path, record.to_json())
        return path
    metadata = dict(table.schema.metadata or {})
    metadata[RECORD_KEY] = record.to_json().encode()
    table = table.replace_schema_metadata(metadata)
    tmp = path.with_name(f"{TMP_MARK}{uuid.uuid4().hex[:8]}-{path.name}")
    pq.write_table(table, tmp, compression="zstd")
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def read_unit_record(path: Path) -> UnitRecord:
    """The :class:`UnitRecord` stored with a unit's output by :func:`write_unit_output`."""
    import pyarrow.parquet as pq

    if path.name.endswith(".empty.json"):
        return UnitRecord.from_json(path.read_text())
    metadata = pq.read_schema(path).metadata or {}
    if RECORD_KEY not in metadata:
        raise ValueError(
            f"{path} has no segvlm unit record in its footer; it was not written by the builder. "
            "Delete it and run the build again to redo that unit"
        )
    return UnitRecord.from_json(metadata[RECORD_KEY].decode())


@dataclass
class ItemError:
    """An input that could not be labelled: recorded in ``errors.jsonl`` and skipped."""

    source: str
    path: str
    reason: str


@dataclass
class UnitRecord:
    """One ledger line: a unit that is finished (its shard is in place).

    Attributes:
        key: the unit's key (also the shard's file stem).
        rows: rows in the shard.
        regions: regions over all rows.
        label_counts: regions per label.
        errors: inputs of this unit that were skipped, with the reason.
        meta: the labeler's provenance (models, thresholds) from the first labelled item, if any.
        seconds: wall time spent on the unit.
        finished_at: when the unit's output was complete (``time.time()`` on the worker).
    """

    key: str
    rows: int
    regions: int = 0
    label_counts: dict[str, int] = field(default_factory=dict)
    errors: list[ItemError] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    finished_at: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> UnitRecord:
        value = json.loads(text)
        value["errors"] = [ItemError(**error) for error in value.get("errors", [])]
        return cls(**value)


class Ledger:
    """The append-only list of finished units (``ledger.jsonl``), keyed by unit key.

    Opening it repairs a torn last line left by a kill during an append, so the next append starts on a
    fresh line. Only the driver process writes it.
    """

    def __init__(self, path: Path):
        self.path = path
        self.records: dict[str, UnitRecord] = {}
        self._repair_and_load()

    def _repair_and_load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end != len(data):  # torn append: drop the partial line
            with open(self.path, "rb+") as handle:
                handle.truncate(end)
            data = data[:end]
        for line in data.decode().splitlines():
            if line.strip():
                record = UnitRecord.from_json(line)
                self.records[record.key] = record

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def __iter__(self) -> Iterator[UnitRecord]:
        return iter(self.records.values())

    def __len__(self) -> int:
        return len(self.records)

    def append(self, record: UnitRecord) -> None:
        """Record a finished unit durably (write, flush, fsync)."""
        with open(self.path, "a") as handle:
            handle.write(record.to_json() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.records[record.key] = record
