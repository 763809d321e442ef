"""YouTube-VIS (2019/2021) instances JSON: one video, one annotation per track holding a mask per frame.

The layout is the one YouTube-VIS's ``ytvos`` API and the VIS trainers built on it (Mask2Former, VITA,
MinVIS...) read: ``videos`` (one entry, ``file_names`` = ``{stem}/{frame_index:05d}.jpg`` per processed
frame, ``length`` = processed frames), ``categories`` and ``annotations``. Each annotation's
``segmentations``, ``bboxes`` (xywh) and ``areas`` have one entry per processed frame, ``None`` where the
track is not visible. Masks are compressed COCO RLE, decodable with ``pycocotools.mask.decode``; each
annotation also carries segvlm's ``track_id``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from segvlm.export.registry import source_stem
from segvlm.types import VideoSegmentation


def _categories(result: VideoSegmentation) -> dict[str, int]:
    """Category ids by label: the grounded phrases first, then any other label, in order of appearance."""
    labels = list(dict.fromkeys([*result.phrases, *(obj.label for frame in result for obj in frame)]))
    return {label: index + 1 for index, label in enumerate(labels)}


def to_ytvis(result: VideoSegmentation) -> dict:
    """The result as a YouTube-VIS instances dict (video id 1)."""
    categories = _categories(result)
    stem = source_stem(result.info.source)
    height, width = result.info.height, result.info.width
    count = len(result)
    annotations = []
    for track_id in result.track_ids:
        segmentations: list[dict | None] = [None] * count
        bboxes: list[list[float] | None] = [None] * count
        areas: list[int | None] = [None] * count
        label = None
        for position, frame in enumerate(result):
            obj = frame.get(track_id)
            if obj is None:
                continue
            label = label if label is not None else obj.label
            x0, y0, x1, y1 = obj.box_xyxy
            segmentations[position] = obj.rle.to_coco()
            bboxes[position] = [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]
            areas[position] = int(obj.area)
        annotations.append(
            {
                "id": len(annotations) + 1,
                "video_id": 1,
                "category_id": categories[label],
                "iscrowd": 0,
                "length": 1,
                "height": height,
                "width": width,
                "track_id": track_id,
                "segmentations": segmentations,
                "bboxes": bboxes,
                "areas": areas,
            }
        )
    video = {
        "id": 1,
        "width": width,
        "height": height,
        "length": count,
        "file_names": [f"{stem}/{frame.frame_index:05d}.jpg" for frame in result],
    }
    return {
        "info": {"description": f"segvlm masks for {result.query!r}", "source": result.info.source},
        "licenses": [],
        "videos": [video],
        "categories": [{"id": cid, "name": name, "supercategory": "object"} for name, cid in categories.items()],
        "annotations": annotations,
    }


def write_ytvis(result: VideoSegmentation, out_dir: str | Path, video: Any = None) -> list[Path]:
    """Write ``instances.json`` into ``out_dir``; returns its path in a list (``video`` is not read)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "instances.json"
    path.write_text(json.dumps(to_ytvis(result)))
    return [path]
