"""COCO instances JSON with RLE masks, readable by pycocotools, and segvlm's save/load on top of it.

One image entry per processed frame (``id`` = position + 1, ``frame_index`` = source index), one category
per grounded phrase, one annotation per object and frame with ``segmentation`` as compressed RLE and the
object's ``track_id``. ``save`` adds a ``segvlm`` key (query, phrases, video info, provenance) so that
``load`` rebuilds the result exactly; pycocotools ignores it.

:class:`CocoWriter` and :func:`coco_file_name` are the one way segvlm writes COCO: a result here, a dataset in
:func:`segvlm.data.export.to_coco`.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from segvlm.errors import FormatError
from segvlm.masks import RLE
from segvlm.types import FramePrompt, FrameResult, ObjectMask, VideoInfo, VideoSegmentation

FORMAT_VERSION = 1
_REQUIRED = object()  # marks a field without a default in the loader's checks
_KIND_NAMES = {int: "an integer", float: "a number", str: "a string", dict: "an object", list: "a list"}


def coco_file_name(source: str, frame_index: int) -> str:
    """The ``file_name`` of frame ``frame_index`` of ``source``: a still image keeps its own name, a frame of a
    video, folder or glob is ``<source without suffix>/<frame_index:06d>.jpg``.

    The name is always relative, so images written under it stay inside the folder they are written to: a
    relative source keeps its folders (a dataset's sources are relative to its root, so names stay unique),
    an absolute one or one that climbs out with ``..`` keeps only its last part, a glob pattern names its
    folder, and a source that is no path (``"<frames>"``) is ``frames``.
    """
    from segvlm.video import IMAGE_SUFFIXES, has_glob

    path = PurePosixPath(Path(source).as_posix()) if not source.startswith("<") else PurePosixPath("frames")
    if has_glob(path.name):
        path = path.parent
    if path.is_absolute() or ".." in path.parts:
        path = PurePosixPath(path.name)
    if not path.name:
        path = PurePosixPath("frames")
    if path.suffix.lower() in IMAGE_SUFFIXES and frame_index == 0:
        return path.as_posix()
    return f"{path.with_suffix('').as_posix()}/{frame_index:06d}.jpg"


@dataclass
class CocoWriter:
    """A COCO instances document built one image and one annotation at a time.

    Image ids and annotation ids count from 1 in the order they are added; a category is made for each new
    label (ids from 1, in first-seen order; add labels up front with :meth:`category` to fix that order).
    Extra keyword arguments become extra keys of the entry (segvlm's ``source``, ``caption``...), which COCO
    tools ignore and segvlm's readers use.
    """

    images: list[dict[str, Any]] = field(default_factory=list)
    annotations: list[dict[str, Any]] = field(default_factory=list)
    categories: dict[str, int] = field(default_factory=dict)

    def category(self, label: str) -> int:
        """The id of ``label``'s category, made when new."""
        return self.categories.setdefault(label, len(self.categories) + 1)

    def add_image(
        self, source: str, frame_index: int, height: int, width: int, timestamp: float | None, /, **extra: Any
    ) -> dict[str, Any]:
        """Add frame ``frame_index`` of ``source``, named by :func:`coco_file_name`; returns its entry (a dataset
        also records the ``source`` itself, as an extra key)."""
        entry = {
            "id": len(self.images) + 1,
            "file_name": coco_file_name(source, frame_index),
            "height": height,
            "width": width,
            **extra,
            "frame_index": frame_index,
            "timestamp": timestamp,
        }
        self.images.append(entry)
        return entry

    def add_annotation(
        self,
        image_id: int,
        label: str,
        segmentation: dict[str, Any],
        area: int,
        box_xyxy: tuple[float, float, float, float],
        score: float,
        track_id: int,
        phrase: str,
        **extra: Any,
    ) -> None:
        """Add one object on image ``image_id``: its RLE ``segmentation``, its box (written as COCO's xywh)."""
        x0, y0, x1, y1 = box_xyxy
        self.annotations.append(
            {
                "id": len(self.annotations) + 1,
                "image_id": image_id,
                "category_id": self.category(label),
                "segmentation": segmentation,
                "area": area,
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "iscrowd": 0,
                "score": score,
                "track_id": track_id,
                "phrase": phrase,
                **extra,
            }
        )

    def document(self, info: dict[str, Any]) -> dict[str, Any]:
        """The COCO instances dict with ``info``."""
        return {
            "info": info,
            "images": self.images,
            "annotations": self.annotations,
            "categories": [
                {"id": cid, "name": name, "supercategory": "object"} for name, cid in self.categories.items()
            ],
        }


def to_coco(result: VideoSegmentation) -> dict:
    """The result as a COCO instances dict (boxes xywh, RLE masks at original size)."""
    writer = CocoWriter()
    for label in dict.fromkeys([*result.phrases, *(o.label for f in result for o in f)]):
        writer.category(label)  # the phrases first, in query order
    for frame in result:
        image = writer.add_image(result.info.source, frame.frame_index, frame.height, frame.width, frame.timestamp)
        for obj in frame:
            writer.add_annotation(
                image["id"], obj.label, obj.rle.to_coco(), obj.area, obj.box_xyxy, obj.score, obj.track_id, obj.phrase
            )
    return writer.document({"description": f"segvlm masks for {result.query!r}", "source": result.info.source})


def _write_json_atomic(path: Path, data: dict) -> None:
    """Write to a temporary name, then rename: a crash never leaves a half-written masks.json behind."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(data))
    os.replace(temporary, path)


def save(result: VideoSegmentation, directory: str | Path, overlay: bool = False) -> Path:
    """Write ``masks.json`` (and ``overlay.mp4`` when asked) into ``directory``; returns the JSON path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data = to_coco(result)
    info = result.info
    data["segvlm"] = {
        "format_version": FORMAT_VERSION,
        "query": result.query,
        "phrases": result.phrases,
        "video": {
            "source": info.source,
            "height": info.height,
            "width": info.width,
            "fps": info.fps,
            "stride": info.stride,
        },
        "meta": result.meta,
        "prompts": [
            {"track_id": track_id, "frame_index": frame_index, **prompt.to_json()}
            for track_id, per_frame in sorted(result.prompts.items())
            for frame_index, prompt in sorted(per_frame.items())
        ],
        "locks": {str(track_id): sorted(frames) for track_id, frames in sorted(result.locks.items()) if frames},
        "labels": {str(track_id): label for track_id, label in sorted(result.labels.items())},
    }
    path = directory / "masks.json"
    _write_json_atomic(path, data)
    if overlay:
        result.save_overlay(str(directory / "overlay.mp4"))
    return path


def load(directory: str | Path) -> VideoSegmentation:
    """Rebuild a result from ``save``'s ``masks.json`` (a folder or the file itself).

    A plain COCO file (no ``segvlm`` key) loads too: frames come from ``images``, labels from categories,
    masks from RLE or polygon segmentations. Every entry is checked: a malformed file raises
    :class:`~segvlm.errors.FormatError` naming the entry (``annotation 12``) and what is wrong with it; a
    missing one raises ``FileNotFoundError``.
    """
    path = Path(directory)
    if path.is_dir():
        path = path / "masks.json"
    if not path.exists():
        raise FileNotFoundError(f"no masks.json at {path}; pass the folder that result.save() wrote")
    try:
        data = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise FormatError(
            f"{path} is not valid JSON ({error}); the file was cut or edited. Save the result again"
        ) from error
    return _from_coco(data, str(path))


def _fail(path: str, what: str, problem: str) -> FormatError:
    return FormatError(f"{path}: {what} {problem}; fix the entry or save the result again")


def _field(entry: dict, key: str, kinds: tuple[type, ...], path: str, what: str, default: Any = _REQUIRED) -> Any:
    """``entry[key]`` checked against ``kinds`` (bool is never a number); ``default`` when missing, if given."""
    if key not in entry or (entry[key] is None and default is not _REQUIRED):
        if default is _REQUIRED:
            raise _fail(path, what, f"has no {key!r}")
        return default
    value = entry[key]
    numeric = any(kind in (int, float) for kind in kinds)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = " or ".join(
            _KIND_NAMES.get(kind, kind.__name__) for kind in kinds if kind is not int or float not in kinds
        )
        raise _fail(path, what, f"has {key} = {_short(value)}, which is not {names}")
    if numeric and isinstance(value, float) and not math.isfinite(value):
        raise _fail(path, what, f"has {key} = {value}, which is not a finite number")
    return value


def _count(entry: dict, key: str, path: str, what: str, default: Any = _REQUIRED, minimum: int = 0) -> Any:
    """A non-negative (or ``>= minimum``) integer field."""
    value = _field(entry, key, (int,), path, what, default)
    if value is not None and value is not default and value < minimum:
        raise _fail(path, what, f"has {key} = {value}; it must be at least {minimum}")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _entries(data: dict, key: str, path: str, required: bool) -> list[dict]:
    if key not in data and not required:
        return []
    value = data.get(key)
    if not isinstance(value, list):
        raise _fail(path, "the file", f"has {key} = {_short(value)}, not a list of {key}")
    for position, entry in enumerate(value):
        if not isinstance(entry, dict):
            raise _fail(path, f"{key[:-1]} {position}", f"is {_short(entry)}, not an object")
    return value


def _segmentation(segmentation: Any, height: int, width: int, where: str) -> RLE:
    """An annotation's mask: COCO RLE (compressed or not) or polygons, at the image's size."""
    if isinstance(segmentation, list):
        return RLE.from_polygons(segmentation, height, width, where)
    rle = RLE.from_coco(segmentation, where)
    if rle.size != (height, width):
        raise FormatError(
            f"{where} is {rle.size[0]}x{rle.size[1]} but its image is {height}x{width}; masks must have the size "
            "of their frame. Fix the entry or save the result again"
        )
    return rle


def _from_coco(data: Any, path: str) -> VideoSegmentation:
    """A result from a parsed COCO / segvlm ``masks.json`` (see :func:`load`)."""
    if not isinstance(data, dict):
        raise FormatError(
            f"{path} holds a JSON {type(data).__name__}, not a COCO object with 'images'; pass masks.json"
        )
    extra = data.get("segvlm", {})
    if not isinstance(extra, dict):
        raise _fail(path, "the 'segvlm' entry", f"is {_short(extra)}, not an object")
    version = _count(extra, "format_version", path, "the 'segvlm' entry", default=FORMAT_VERSION)
    if version > FORMAT_VERSION:
        raise FormatError(
            f"{path} was written by a newer segvlm (format {version}; this one reads up to {FORMAT_VERSION}); "
            "upgrade segvlm to load it"
        )
    video = _field(extra, "video", (dict,), path, "the 'segvlm' entry", default={})
    names: dict[Any, str] = {}
    for position, category in enumerate(_entries(data, "categories", path, required=False)):
        what = f"category {position}"
        category_id = _field(category, "id", (int, str), path, what)
        names[category_id] = str(_field(category, "name", (str,), path, what, default=str(category_id)))
    images = _entries(data, "images", path, required=True)
    frames: dict[Any, FrameResult] = {}
    order: list[tuple[int, Any]] = []
    for position, image in enumerate(images):
        what = f"image {position}"
        image_id = _field(image, "id", (int, str), path, what)
        if image_id in frames:
            raise _fail(path, what, f"repeats the id {image_id!r} of an earlier image; image ids must be unique")
        frames[image_id] = FrameResult(
            frame_index=_count(image, "frame_index", path, what, default=position),
            height=_count(image, "height", path, what),
            width=_count(image, "width", path, what),
            timestamp=_field(image, "timestamp", (int, float), path, what, default=None),
        )
        order.append(image_id)
    for position, ann in enumerate(_entries(data, "annotations", path, required=False)):
        what = f"annotation {position}"
        image_id = _field(ann, "image_id", (int, str), path, what)
        frame = frames.get(image_id)
        if frame is None:
            raise _fail(path, what, f"refers to image {image_id!r}, which is not in 'images'")
        category_id = _field(ann, "category_id", (int, str), path, what)
        where = f"{path}: {what}'s segmentation"
        rle = _segmentation(_field(ann, "segmentation", (dict, list), path, what), frame.height, frame.width, where)
        bbox = _field(ann, "bbox", (list,), path, what, default=None)
        if bbox is None:
            box = rle.bbox_xyxy()
        else:
            numbers = all(not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) for v in bbox)
            if len(bbox) != 4 or not numbers:
                raise _fail(path, what, f"has bbox = {_short(bbox)}; a COCO bbox is [x, y, width, height] numbers")
            x, y, w, h = bbox
            box = (x, y, x + w, y + h)
        track_id = _field(ann, "track_id", (int,), path, what, default=None)
        if track_id is None:
            track_id = _field(ann, "id", (int,), path, what)
        if frame.get(track_id) is not None:
            raise _fail(path, what, f"repeats track {track_id} in image {image_id!r}; an object appears once per frame")
        frame.objects.append(
            ObjectMask(
                track_id=track_id,
                label=names.get(category_id, str(category_id)),
                phrase=_field(ann, "phrase", (str,), path, what, default=""),
                score=float(_field(ann, "score", (int, float), path, what, default=1.0)),
                box_xyxy=box,
                rle=rle,
            )
        )
    for frame in frames.values():
        frame.objects.sort(key=lambda obj: obj.track_id)
    if all(isinstance(image_id, int) for image_id in order):  # segvlm numbers images in frame order
        order.sort()
    ordered = [frames[image_id] for image_id in order]
    first = ordered[0] if ordered else FrameResult(0, 0, 0)
    info_entry = data.get("info", {}) if isinstance(data.get("info"), dict) else {}
    what = "the 'segvlm' video entry"
    info = VideoInfo(
        source=_field(video, "source", (str,), path, what, default=str(info_entry.get("source") or path)),
        height=_count(video, "height", path, what, default=first.height),
        width=_count(video, "width", path, what, default=first.width),
        fps=_field(video, "fps", (int, float), path, what, default=None),
        stride=_count(video, "stride", path, what, default=1, minimum=1),
    )
    prompts: dict[int, dict[int, FramePrompt]] = {}
    for position, entry in enumerate(_field(extra, "prompts", (list,), path, "the 'segvlm' entry", default=[])):
        what = f"prompt {position}"
        if not isinstance(entry, dict):
            raise _fail(path, what, f"is {_short(entry)}, not an object")
        track_id = _field(entry, "track_id", (int,), path, what)
        frame_index = _field(entry, "frame_index", (int,), path, what)
        try:
            prompt = FramePrompt.from_json(entry)
        except (KeyError, TypeError, ValueError) as error:  # FormatError (a bad mask) is a ValueError
            detail = str(error) if isinstance(error, FormatError) else f"{type(error).__name__}: {error}"
            raise _fail(path, what, f"is malformed ({detail})") from error
        prompts.setdefault(track_id, {})[frame_index] = prompt
    locks: dict[int, set[int]] = {}
    for key, indices in _field(extra, "locks", (dict,), path, "the 'segvlm' entry", default={}).items():
        if not re.fullmatch(r"-?[0-9]+", key) or not isinstance(indices, list):
            raise _fail(path, f"locks entry {key!r}", "is not a track id with a list of frame indices")
        if any(isinstance(v, bool) or not isinstance(v, int) for v in indices):
            raise _fail(path, f"locks entry {key!r}", f"holds {_short(indices)}; frame indices are integers")
        locks[int(key)] = set(indices)
    labels: dict[int, str] = {}
    for key, label in _field(extra, "labels", (dict,), path, "the 'segvlm' entry", default={}).items():
        if not re.fullmatch(r"-?[0-9]+", key) or not isinstance(label, str):
            raise _fail(path, f"labels entry {key!r}", f"is {_short(label)}; labels map a track id to a string")
        labels[int(key)] = label
    phrases = _field(extra, "phrases", (list,), path, "the 'segvlm' entry", default=list(names.values()))
    if not all(isinstance(phrase, str) for phrase in phrases):
        raise _fail(path, "the 'segvlm' entry", f"has phrases = {_short(phrases)}; phrases are strings")
    return VideoSegmentation(
        info=info,
        query=_field(extra, "query", (str,), path, "the 'segvlm' entry", default=""),
        phrases=list(phrases),
        frames=ordered,
        meta=_field(extra, "meta", (dict,), path, "the 'segvlm' entry", default={}),
        prompts=prompts,
        locks=locks,
        labels=labels,
    )
