"""An annotation project: the media given on the command line, and one correction session per item.

``segvlm annotate PATH... --project DIR`` makes a project of every video, image folder and image among PATHs
(a folder of videos gives one item per video; a folder of images is one item, its images the frames). The
project folder holds nothing but segvlm's own files:

* ``DIR/project.json``: the media items (id, absolute source path, kind);
* ``DIR/sessions/<id>/``: each item's :class:`segvlm.corrections.CorrectionSession` folder, created empty (every
  frame, no object) the first time the item is opened; an auto-label run enters it as one undoable edit;
* ``DIR/exports/<id>/<format>/``: what the export button and ``segvlm export`` write.

Paths are confined: the server reads only the media found here (symlinks that leave the given folders are
skipped) and writes only under ``DIR``. Requests name items by id, never by path.
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from segvlm.errors import SegvlmError
from segvlm.video import IMAGE_SUFFIXES, VIDEO_SUFFIXES

PROJECT_FILE = "project.json"


class ProjectError(SegvlmError):
    """A path or project folder that cannot be used as given."""


@dataclass(frozen=True)
class MediaItem:
    """One video to annotate.

    Attributes:
        id: a short name unique in the project (the file or folder stem), used in URLs and folder names.
        source: absolute path of the video file, image folder or image.
        kind: ``"video"``, ``"images"`` (a folder of frames) or ``"image"``.
    """

    id: str
    source: str
    kind: str


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "media"


def _inside(path: Path, roots: list[Path]) -> bool:
    resolved = path.resolve()
    return any(resolved == root or resolved.is_relative_to(root) for root in roots)


def discover(paths: list[str | Path]) -> list[MediaItem]:
    """The media items among ``paths`` (videos, images, image folders, folders of videos), in a stable order."""
    items: list[tuple[Path, str]] = []
    roots = []
    for given in paths:
        path = Path(given)
        if not path.exists():
            raise ProjectError(f"no such file or folder: {given}; check the path (relative to {Path.cwd()})")
        root = path.resolve()
        roots.append(root if root.is_dir() else root.parent)
        if path.is_file():
            suffix = path.suffix.lower()
            if suffix not in VIDEO_SUFFIXES | IMAGE_SUFFIXES:
                raise ProjectError(
                    f"{given} is not a video or an image segvlm reads ({', '.join(sorted(VIDEO_SUFFIXES))}, "
                    f"{', '.join(sorted(IMAGE_SUFFIXES))})"
                )
            items.append((root, "video" if suffix in VIDEO_SUFFIXES else "image"))
            continue
        entries = sorted(p for p in path.iterdir() if not p.name.startswith("."))
        usable = [p for p in entries if _inside(p, [root])]  # symlinks out of the folder are not followed
        videos = [p for p in usable if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES]
        images = [p for p in usable if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        if images:
            items.append((root, "images"))
        items += [(video.resolve(), "video") for video in videos]
        if not images and not videos:
            raise ProjectError(f"{given} holds no video and no image; give videos, images or folders of them")
    result, taken = [], set()
    for source, kind in items:
        base = _slug(source.stem if kind != "images" else source.name)
        name, counter = base, 2
        while name in taken:
            name, counter = f"{base}-{counter}", counter + 1
        taken.add(name)
        result.append(MediaItem(name, str(source), kind))
    return result


class Project:
    """The media of one annotation project and their correction sessions (opened on first use).

    ``pipe`` is the :class:`segvlm.Pipeline` whose segmenter every session uses and whose grounder the
    auto-label runs; sessions share its models.
    """

    def __init__(self, folder: str | Path, items: list[MediaItem], pipe: Any):
        self.folder = Path(folder).resolve()
        self.items = {item.id: item for item in items}
        self.pipe = pipe
        self.roots = [Path(item.source) if item.kind != "video" else Path(item.source).parent for item in items]
        self._sessions: dict[str, Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def open(cls, folder: str | Path, paths: list[str | Path], pipe: Any) -> Project:
        """A project in ``folder`` over ``paths`` (added to the media it already lists)."""
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise ProjectError(f"--project {folder} is a file; give a folder (it is created if missing)")
        known: list[MediaItem] = []
        if (folder / PROJECT_FILE).is_file():
            data = json.loads((folder / PROJECT_FILE).read_text())
            known = [MediaItem(**item) for item in data.get("media", []) if Path(item["source"]).exists()]
        elif folder.is_dir() and any(folder.iterdir()):
            raise ProjectError(
                f"--project {folder} is a folder with other files in it; give an empty or new folder (the project "
                "writes project.json, sessions/ and exports/ there)"
            )
        found = discover(paths) if paths else []
        if not found and not known:
            raise ProjectError("nothing to annotate: give a video, an image folder, or a folder of videos")
        sources = {item.source for item in known}
        taken = {item.id for item in known}
        for item in found:
            if item.source in sources:
                continue
            name, counter = item.id, 2
            while name in taken:
                name, counter = f"{item.id}-{counter}", counter + 1
            taken.add(name)
            known.append(MediaItem(name, item.source, item.kind))
        try:
            folder.mkdir(parents=True, exist_ok=True)
            temporary = folder / f".{PROJECT_FILE}.tmp"
            temporary.write_text(json.dumps({"version": 1, "media": [asdict(item) for item in known]}, indent=1))
            os.replace(temporary, folder / PROJECT_FILE)
        except OSError as error:
            raise ProjectError(
                f"cannot write the project folder {folder} ({error}); choose a writable folder"
            ) from None
        return cls(folder, known, pipe)

    def item(self, item_id: str) -> MediaItem:
        found = self.items.get(item_id)
        if found is None:
            raise KeyError(f"no video {item_id!r} in this project; known: {', '.join(self.items)}")
        return found

    def session_folder(self, item_id: str) -> Path:
        return self.folder / "sessions" / self.item(item_id).id

    def export_folder(self, item_id: str) -> Path:
        return self.folder / "exports" / self.item(item_id).id

    def has_session(self, item_id: str) -> bool:
        return item_id in self._sessions or (self.session_folder(item_id) / "session.json").is_file()

    def session(self, item_id: str) -> Any:
        """The item's correction session, opened (or created empty) on first use."""
        from segvlm.corrections import CorrectionSession

        with self._lock:
            if item_id in self._sessions:
                return self._sessions[item_id]
            item = self.item(item_id)
            folder = self.session_folder(item_id)
            if (folder / "session.json").is_file():
                session = CorrectionSession.open(folder, self.pipe, video=item.source)
            else:
                session = CorrectionSession.create(empty_result(item), self.pipe, video=item.source, folder=folder)
            self._sessions[item_id] = session
            return session

    def close(self) -> None:
        with self._lock:
            for session in self._sessions.values():
                session.close()
            self._sessions.clear()


def empty_result(item: MediaItem) -> Any:
    """A result with every frame of the item and no object: the start of annotation by hand."""
    from segvlm.frames import FrameStore
    from segvlm.provenance import Provenance
    from segvlm.types import FrameResult, VideoInfo, VideoSegmentation

    with FrameStore.open(item.source) as frames:
        info = VideoInfo(item.source, frames.height, frames.width, frames.fps, 1)
        rows = [
            FrameResult(frames.frame_index(p), frames.height, frames.width, frames.timestamp(p))
            for p in range(len(frames))
        ]
    return VideoSegmentation(info, "", [], rows, meta=Provenance(annotated_by_hand=True).to_json())
