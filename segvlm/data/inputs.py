"""Turning the command line's inputs into a fixed, ordered list of work units.

A work unit is what is labelled, written as one parquet shard and recorded as done in one ledger line:
one video, or a chunk of still images. The plan depends only on the inputs and ``images_per_unit``, so
running the same command again gives the same units with the same keys: that is what resume relies on.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from segvlm.video import IMAGE_SUFFIXES, VIDEO_SUFFIXES


@dataclass(frozen=True)
class WorkItem:
    """One input file.

    Attributes:
        path: absolute path of the file.
        source: the id written in the ``source`` column (path relative to the inputs' common folder).
        kind: ``"video"`` or ``"image"``.
    """

    path: str
    source: str
    kind: str


@dataclass(frozen=True)
class WorkUnit:
    """A group of items labelled and committed together.

    Attributes:
        index: position in the plan; shards are read back in this order.
        key: ``u000012-<hash>``: index plus a hash of the items, used as shard and ledger key.
        items: one video, or up to ``images_per_unit`` images.
    """

    index: int
    key: str
    items: tuple[WorkItem, ...]


def _kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix in IMAGE_SUFFIXES:
        return "image"
    return None


def discover(inputs: Sequence[str]) -> list[WorkItem]:
    """Expand files and folders (recursively, sorted) into work items.

    Files named on the command line are kept even with an unknown suffix (as videos) so that an unreadable
    one is reported in the errors file instead of vanishing; inside folders only known suffixes count.
    A path that does not exist is refused at once: that is a typo, not a bad input.
    """
    if not inputs:
        raise ValueError("no inputs given; pass video/image files or folders, e.g. `clips/ photos/cat.jpg`")
    found: list[Path] = []
    for raw in inputs:
        path = Path(raw).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"input {raw!r} does not exist (relative to {Path.cwd()}); check the path")
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and _kind(p) is not None)
            found.extend(files)
        else:
            found.append(path)
    absolute = list(dict.fromkeys(p.resolve() for p in found))  # dedupe, keep order
    if not absolute:
        raise ValueError(
            f"no videos or images found under {list(inputs)}; known suffixes: {sorted(VIDEO_SUFFIXES | IMAGE_SUFFIXES)}"
        )
    root = Path(os.path.commonpath([str(p.parent) for p in absolute]))
    return [WorkItem(path=str(p), source=p.relative_to(root).as_posix(), kind=_kind(p) or "video") for p in absolute]


def plan_units(items: Sequence[WorkItem], images_per_unit: int = 32) -> list[WorkUnit]:
    """Group items into units: each video alone, consecutive images in chunks of ``images_per_unit``."""
    if images_per_unit < 1:
        raise ValueError(f"images_per_unit must be >= 1, got {images_per_unit}")
    groups: list[list[WorkItem]] = []
    pending: list[WorkItem] = []
    for item in items:
        if item.kind == "image":
            pending.append(item)
            if len(pending) == images_per_unit:
                groups.append(pending)
                pending = []
        else:
            if pending:
                groups.append(pending)
                pending = []
            groups.append([item])
    if pending:
        groups.append(pending)
    units = []
    for index, group in enumerate(groups):
        digest = hashlib.sha1("\n".join(item.source for item in group).encode()).hexdigest()[:10]
        units.append(WorkUnit(index=index, key=f"u{index:06d}-{digest}", items=tuple(group)))
    return units


def plan_digest(units: Sequence[WorkUnit]) -> str:
    """A hash of the whole plan, recorded in ``build.json`` to refuse resuming with other inputs."""
    text = "\n".join(f"{unit.key}:{item.source}" for unit in units for item in unit.items)
    return hashlib.sha1(text.encode()).hexdigest()
