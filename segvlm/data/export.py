"""Export a segvlm dataset back to COCO instances (RLE masks), optionally with the images as files."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segvlm.data.inputs import IMAGE_SUFFIXES
from segvlm.data.schema import Row

if TYPE_CHECKING:
    import datasets


def coco_file_name(source: str, frame_index: int) -> str:
    """``source`` for a still image; ``<source without suffix>/<frame:06d>.jpg`` for a video frame."""
    if Path(source).suffix.lower() in IMAGE_SUFFIXES and frame_index == 0:
        return source
    return f"{Path(source).with_suffix('').as_posix()}/{frame_index:06d}.jpg"


def _iter_rows(data: datasets.Dataset | Iterable[Row | Mapping[str, Any]], with_images: bool) -> Iterable[Any]:
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a core dependency
        datasets = None
    if datasets is not None and isinstance(data, datasets.Dataset):
        if with_images:
            return data.cast_column("image", datasets.Image(decode=False))
        return data.remove_columns([c for c in data.column_names if c == "image"])
    return data


def to_coco(
    data: datasets.Dataset | Iterable[Row | Mapping[str, Any]],
    images_dir: str | Path | None = None,
) -> dict[str, Any]:
    """A COCO instances dict from a segvlm dataset (or rows); categories are the labels, in first-seen order.

    Every annotation keeps segvlm's extras (``track_id``, ``score``, ``phrase``, ``caption``) and every image
    its ``source`` and ``frame_index``, so :func:`segvlm.data.importers.rows_from_coco` reads it back
    unchanged. With ``images_dir`` the images are written there under their ``file_name``.
    """
    out_dir = Path(images_dir) if images_dir is not None else None
    images, annotations, categories = [], [], {}
    for position, row in enumerate(_iter_rows(data, with_images=out_dir is not None)):
        value = row.to_dict() if isinstance(row, Row) else row
        image_id = position + 1
        file_name = coco_file_name(value["source"], int(value["frame_index"]))
        images.append(
            {
                "id": image_id,
                "file_name": file_name,
                "height": int(value["height"]),
                "width": int(value["width"]),
                "source": value["source"],
                "frame_index": int(value["frame_index"]),
                "timestamp": value.get("timestamp"),
            }
        )
        if out_dir is not None:
            target = out_dir / file_name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(value["image"]["bytes"])
        for region in value["regions"]:
            category_id = categories.setdefault(region["label"], len(categories) + 1)
            x0, y0, x1, y1 = (float(v) for v in region["bbox_xyxy"])
            mask = {"size": [int(v) for v in region["mask"]["size"]], "counts": region["mask"]["counts"]}
            from pycocotools import mask as coco_mask

            area = int(coco_mask.area({"size": mask["size"], "counts": mask["counts"].encode()}))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category_id,
                    "segmentation": mask,
                    "area": area,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "iscrowd": 0,
                    "score": float(region["score"]),
                    "track_id": int(region["track_id"]),
                    "phrase": region.get("phrase") or "",
                    "caption": region.get("caption") or "",
                }
            )
    return {
        "info": {"description": "exported from a segvlm dataset"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": cid, "name": name, "supercategory": "object"} for name, cid in categories.items()],
    }
