"""COCO instances JSON with RLE masks, readable by pycocotools, and segvlm's save/load on top of it.

One image entry per processed frame (``id`` = position + 1, ``frame_index`` = source index), one category
per grounded phrase, one annotation per object and frame with ``segmentation`` as compressed RLE and the
object's ``track_id``. ``save`` adds a ``segvlm`` key (query, phrases, video info, provenance) so that
``load`` rebuilds the result exactly; pycocotools ignores it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from segvlm.masks import RLE
from segvlm.types import FramePrompt, FrameResult, ObjectMask, VideoInfo, VideoSegmentation

FORMAT_VERSION = 1


def _categories(result: VideoSegmentation) -> dict[str, int]:
    labels = list(dict.fromkeys([*result.phrases, *(o.label for f in result for o in f)]))
    return {label: index + 1 for index, label in enumerate(labels)}


def to_coco(result: VideoSegmentation) -> dict:
    """The result as a COCO instances dict (boxes xywh, RLE masks at original size)."""
    categories = _categories(result)
    stem = Path(result.info.source).stem if not result.info.source.startswith("<") else "frames"
    images, annotations = [], []
    for position, frame in enumerate(result):
        image_id = position + 1
        images.append(
            {
                "id": image_id,
                "file_name": f"{stem}/{frame.frame_index:06d}.jpg",
                "height": frame.height,
                "width": frame.width,
                "frame_index": frame.frame_index,
                "timestamp": frame.timestamp,
            }
        )
        for obj in frame:
            x0, y0, x1, y1 = obj.box_xyxy
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": categories[obj.label],
                    "segmentation": obj.rle.to_coco(),
                    "area": obj.area,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "iscrowd": 0,
                    "score": obj.score,
                    "track_id": obj.track_id,
                    "phrase": obj.phrase,
                }
            )
    return {
        "info": {"description": f"segvlm masks for {result.query!r}", "source": result.info.source},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": cid, "name": name, "supercategory": "object"} for name, cid in categories.items()],
    }


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
    }
    path = directory / "masks.json"
    _write_json_atomic(path, data)
    if overlay:
        result.save_overlay(str(directory / "overlay.mp4"))
    return path


def load(directory: str | Path) -> VideoSegmentation:
    """Rebuild a result from ``save``'s ``masks.json`` (a folder or the file itself).

    A plain COCO file (no ``segvlm`` key) loads too: frames come from ``images``, labels from categories.
    """
    path = Path(directory)
    if path.is_dir():
        path = path / "masks.json"
    if not path.exists():
        raise FileNotFoundError(f"no masks.json at {path}; pass the folder that result.save() wrote")
    data = json.loads(path.read_text())
    extra = data.get("segvlm", {})
    video = extra.get("video", {})
    names = {c["id"]: c["name"] for c in data.get("categories", [])}
    images = sorted(data["images"], key=lambda image: image["id"])
    frames = {
        image["id"]: FrameResult(
            frame_index=image.get("frame_index", position),
            height=image["height"],
            width=image["width"],
            timestamp=image.get("timestamp"),
        )
        for position, image in enumerate(images)
    }
    for ann in data["annotations"]:
        rle = RLE.from_coco(ann["segmentation"])
        x, y, w, h = ann["bbox"]
        frames[ann["image_id"]].objects.append(
            ObjectMask(
                track_id=ann.get("track_id", ann["id"]),
                label=names.get(ann["category_id"], str(ann["category_id"])),
                phrase=ann.get("phrase", ""),
                score=float(ann.get("score", 1.0)),
                box_xyxy=(x, y, x + w, y + h),
                rle=rle,
            )
        )
    for frame in frames.values():
        frame.objects.sort(key=lambda obj: obj.track_id)
    first = images[0] if images else {"height": 0, "width": 0}
    info = VideoInfo(
        source=video.get("source", data.get("info", {}).get("source", str(path))),
        height=video.get("height", first["height"]),
        width=video.get("width", first["width"]),
        fps=video.get("fps"),
        stride=video.get("stride", 1),
    )
    prompts: dict[int, dict[int, FramePrompt]] = {}
    for entry in extra.get("prompts", []):
        prompts.setdefault(int(entry["track_id"]), {})[int(entry["frame_index"])] = FramePrompt.from_json(entry)
    return VideoSegmentation(
        info=info,
        query=extra.get("query", ""),
        phrases=list(extra.get("phrases", list(names.values()))),
        frames=[frames[image["id"]] for image in images],
        meta=extra.get("meta", {}),
        prompts=prompts,
        locks={int(track_id): set(indices) for track_id, indices in extra.get("locks", {}).items()},
    )
