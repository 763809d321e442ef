"""Export a segvlm dataset back to COCO instances (RLE masks), optionally with the images as files, with the
writer and file naming of :mod:`segvlm.export.coco`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segvlm.data.schema import Row
from segvlm.export.coco import CocoWriter, coco_file_name

__all__ = ["coco_file_name", "to_coco"]  # coco_file_name: the naming every COCO file segvlm writes uses

if TYPE_CHECKING:
    import datasets


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
    unchanged. With ``images_dir`` the images are written there under their ``file_name``
    (:func:`segvlm.export.coco.coco_file_name`, the naming of every COCO file segvlm writes).
    """
    out_dir = Path(images_dir) if images_dir is not None else None
    writer = CocoWriter()
    for row in _iter_rows(data, with_images=out_dir is not None):
        value = row.to_dict() if isinstance(row, Row) else row
        image = writer.add_image(
            value["source"],
            int(value["frame_index"]),
            int(value["height"]),
            int(value["width"]),
            value.get("timestamp"),
            source=value["source"],
        )
        if out_dir is not None:
            target = out_dir / image["file_name"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(value["image"]["bytes"])
        for region in value["regions"]:
            mask = {"size": [int(v) for v in region["mask"]["size"]], "counts": region["mask"]["counts"]}
            from pycocotools import mask as coco_mask

            area = int(coco_mask.area({"size": mask["size"], "counts": mask["counts"].encode()}))
            writer.add_annotation(
                image["id"],
                region["label"],
                mask,
                area,
                tuple(float(v) for v in region["bbox_xyxy"]),
                float(region["score"]),
                int(region["track_id"]),
                region.get("phrase") or "",
                caption=region.get("caption") or "",
            )
    return writer.document({"description": "exported from a segvlm dataset"})
