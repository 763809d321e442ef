"""Importers into the segvlm row schema: COCO instances, RefCOCO-style rows, segvlm's own results.

Each importer yields :class:`segvlm.data.schema.Row` objects; :func:`write_rows` writes any stream of rows
as a dataset folder (parquet shards, ``load_from_disk`` copy, card), and :func:`rows_to_dataset` makes a
small in-memory ``datasets.Dataset``. Inputs that cannot be read are appended to ``errors`` when a list is
given (and skipped), or raise otherwise.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pycocotools import mask as coco_mask

from segvlm.data.inputs import IMAGE_SUFFIXES, WorkItem, WorkUnit
from segvlm.data.schema import DEFAULT_CAPTION_TEMPLATES, Region, Row, caption_for, features, rows_to_table
from segvlm.data.shards import ItemError, Ledger, UnitRecord, atomic_write_text, write_unit_output
from segvlm.masks import RLE

if TYPE_CHECKING:
    import datasets

    from segvlm.types import VideoSegmentation


def segmentation_to_rle(segmentation: Any, height: int, width: int, bbox_xywh: Sequence[float] | None = None) -> RLE:
    """A COCO ``segmentation`` (polygons, uncompressed or compressed RLE) as one :class:`RLE`.

    With no segmentation, the box is used as a rectangular mask.
    """
    if isinstance(segmentation, Mapping):
        if isinstance(segmentation.get("counts"), list):
            encoded = coco_mask.frPyObjects(dict(segmentation), height, width)
            return RLE(size=(height, width), counts=encoded["counts"].decode())
        return RLE.from_coco(dict(segmentation))
    if segmentation:  # polygons: [[x0, y0, x1, y1, ...], ...]
        polygons = [list(map(float, poly)) for poly in segmentation if len(poly) >= 6]
        if polygons:
            merged = coco_mask.merge(coco_mask.frPyObjects(polygons, height, width))
            return RLE(size=(height, width), counts=merged["counts"].decode())
    mask = np.zeros((height, width), dtype=bool)
    if bbox_xywh is not None:
        x, y, w, h = (float(v) for v in bbox_xywh)
        mask[int(round(y)) : int(round(y + h)), int(round(x)) : int(round(x + w))] = True
    return RLE.encode(mask)


def _xywh_to_xyxy(bbox: Sequence[float]) -> tuple[float, float, float, float]:
    x, y, w, h = (float(v) for v in bbox)
    return (x, y, x + w, y + h)


def _record(errors: list[ItemError] | None, source: str, path: str, error: Exception) -> None:
    if errors is None:
        raise error
    errors.append(ItemError(source=source, path=path, reason=f"{type(error).__name__}: {error}"))


# EXIF orientation -> the PIL transpose that ImageOps.exif_transpose applies for it.
_EXIF_TRANSPOSE = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_270"}
_EXIF_TRANSPOSE.update({7: "TRANSVERSE", 8: "ROTATE_90"})


@dataclass(frozen=True)
class _UprightImage:
    """An imported image as every viewer shows it, and how its annotations must be turned to match.

    Attributes:
        data: the bytes to store: the file's own when its EXIF orientation is 1 (or absent), else the upright
            pixels re-encoded (JPEG quality 95 for a JPEG, PNG otherwise) with no orientation tag, so decoders
            that ignore EXIF and decoders that apply it (``datasets``, browsers) show the same image.
        height, width: the displayed size.
        stored_height, stored_width: the size of the pixels as stored in the file.
        annotation_orientation: the EXIF orientation to apply to the annotations (1: they are upright already).
    """

    data: bytes
    height: int
    width: int
    stored_height: int
    stored_width: int
    annotation_orientation: int = 1


def _upright_image(data: bytes, declared: tuple[int, int] | None = None) -> _UprightImage:
    """The image upright (see :class:`_UprightImage`).

    Annotations of a rotated photo were drawn either on the stored pixels or on the upright image; the size
    the annotation file declares tells which: when it is the stored size (and differs from the displayed
    one), the annotations are turned with the image. Without a declared size, or for a square image, they
    are taken to be upright, as viewers and annotation tools show the image. A declared size that is neither
    raises ``ValueError``.
    """
    from PIL import Image

    from segvlm.data.rows import encode_image
    from segvlm.video import exif_upright, to_rgb_uint8

    with Image.open(io.BytesIO(data)) as image:
        stored = (image.height, image.width)
        try:
            orientation = image.getexif().get(0x0112, 1)
        except (SyntaxError, ValueError, TypeError, OSError):  # unreadable EXIF: the pixels as stored
            orientation = 1
        if orientation not in _EXIF_TRANSPOSE:
            orientation, upright, pixels = 1, image, None
        else:
            image.load()
            upright = exif_upright(image)
            pixels = to_rgb_uint8(upright)
            image_format = "jpeg" if image.format == "JPEG" else "png"
        displayed = (upright.height, upright.width)
    if declared is not None and declared not in (displayed, stored):
        raise ValueError(
            f"the image is {displayed[0]}x{displayed[1]} (HxW, as displayed) but the annotations say "
            f"{declared[0]}x{declared[1]}; fix the height/width in the annotation file or use the matching image"
        )
    if pixels is None:
        return _UprightImage(data, *displayed, *stored)
    turned = orientation if declared == stored and stored != displayed else 1
    return _UprightImage(encode_image(pixels, image_format), *displayed, *stored, annotation_orientation=turned)


def _orient_rle(rle: RLE, orientation: int) -> RLE:
    """A mask drawn on the stored pixels, turned as ``ImageOps.exif_transpose`` turns the image."""
    from PIL import Image

    if orientation == 1:
        return rle
    mask = Image.fromarray(rle.decode().astype(np.uint8) * 255)
    return RLE.encode(np.asarray(mask.transpose(getattr(Image.Transpose, _EXIF_TRANSPOSE[orientation]))) > 0)


def _orient_box(box: tuple[float, float, float, float], orientation: int, width: int, height: int):
    """An xyxy box on the stored pixels (``width`` x ``height``), turned as the image is for ``orientation``."""
    x0, y0, x1, y1 = box
    turn = {
        1: lambda x, y: (x, y),
        2: lambda x, y: (width - x, y),
        3: lambda x, y: (width - x, height - y),
        4: lambda x, y: (x, height - y),
        5: lambda x, y: (y, x),
        6: lambda x, y: (height - y, x),
        7: lambda x, y: (height - y, width - x),
        8: lambda x, y: (y, width - x),
    }[orientation]
    (ax, ay), (bx, by) = turn(x0, y0), turn(x1, y1)
    return (float(min(ax, bx)), float(min(ay, by)), float(max(ax, bx)), float(max(ay, by)))


# -- COCO -------------------------------------------------------------------------------------------------


def rows_from_coco(
    annotations: str | Path | Mapping[str, Any],
    image_root: str | Path,
    *,
    caption_templates: Sequence[str] = DEFAULT_CAPTION_TEMPLATES,
    errors: list[ItemError] | None = None,
) -> Iterator[Row]:
    """Rows from a COCO instances file (or dict): one row per image, one region per annotation.

    Polygons, uncompressed and compressed RLE are all read. ``label`` is the category name; ``track_id``,
    ``score``, ``phrase``, ``caption`` and the image's ``frame_index``/``source`` are taken from the file when
    present (segvlm's own COCO export writes them), else default to the annotation id, 1.0, the label, a
    template caption, and 0 / ``file_name``.

    A photo with an EXIF orientation tag is stored upright and its regions turned to match when the file's
    declared size is the stored one (see :func:`_upright_image`), so every decoder shows image and masks aligned.
    """
    data = json.loads(Path(annotations).read_text()) if isinstance(annotations, (str, Path)) else annotations
    names = {category["id"]: category["name"] for category in data.get("categories", [])}
    by_image: dict[Any, list[Mapping[str, Any]]] = {}
    for ann in data.get("annotations", []):
        by_image.setdefault(ann["image_id"], []).append(ann)
    root = Path(image_root)
    for image in data.get("images", []):
        path = root / image["file_name"]
        source = str(image.get("source") or image["file_name"])
        declared = (image["height"], image["width"]) if "height" in image and "width" in image else None
        try:
            picture = _upright_image(path.read_bytes(), declared)
        except OSError as error:
            _record(errors, source, str(path), error)
            continue
        except ValueError as error:  # the declared size is neither the stored nor the displayed one
            _record(errors, source, str(path), ValueError(f"{path}: {error}"))
            continue
        height, width, turn = picture.height, picture.width, picture.annotation_orientation
        drawn_height, drawn_width = (picture.stored_height, picture.stored_width) if turn != 1 else (height, width)
        frame_index = int(image.get("frame_index") or 0)
        regions = []
        for ann in sorted(by_image.get(image["id"], []), key=lambda a: a["id"]):
            label = names.get(ann["category_id"], str(ann["category_id"]))
            phrase = ann.get("phrase") or label
            track_id = int(ann.get("track_id", ann["id"]))
            rle = segmentation_to_rle(ann.get("segmentation"), drawn_height, drawn_width, ann.get("bbox"))
            bbox = _xywh_to_xyxy(ann["bbox"]) if ann.get("bbox") else rle.bbox_xyxy()
            rle, bbox = _orient_rle(rle, turn), _orient_box(bbox, turn, drawn_width, drawn_height)
            caption = ann.get("caption") or caption_for(
                caption_templates, label, phrase, f"{source}/{frame_index}/{track_id}"
            )
            regions.append(
                Region(
                    rle=rle,
                    bbox_xyxy=bbox,
                    label=label,
                    phrase=phrase,
                    score=float(ann.get("score", 1.0)),
                    track_id=track_id,
                    caption=caption,
                )
            )
        yield Row(
            image=picture.data,
            source=source,
            frame_index=frame_index,
            width=width,
            height=height,
            timestamp=image.get("timestamp"),
            regions=regions,
        )


# -- RefCOCO ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RefCocoFields:
    """Column names of a RefCOCO-style row (defaults follow the common HF/refer layouts).

    Attributes:
        image: a PIL image, bytes, a ``{"bytes", "path"}`` dict, or a path (relative to ``image_root``).
        image_id: groups references of the same image into one row (falls back to the image path).
        bbox: the referred object's box, COCO ``[x, y, w, h]`` pixels.
        sentences: referring expressions: a string, a list of strings, or refer's ``[{"sent": ...}]``.
        segmentation: polygons or RLE of the object (the box is used when missing).
        label: the category name.
        ref_id: the reference's id, used as ``track_id``.
    """

    image: str = "image"
    image_id: str = "image_id"
    bbox: str = "bbox"
    sentences: str = "sentences"
    segmentation: str = "segmentation"
    label: str = "category"
    ref_id: str = "ref_id"


def _sentences(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    out = []
    for item in value:
        text = item.get("sent") or item.get("raw") if isinstance(item, Mapping) else item
        if text:
            out.append(str(text))
    return out


def _image_bytes(value: Any, image_root: Path | None) -> tuple[bytes, str]:
    """(encoded bytes, id) of an image given as PIL image, bytes, ``{"bytes", "path"}`` or path."""
    if isinstance(value, Mapping):
        if value.get("bytes"):
            return bytes(value["bytes"]), str(value.get("path") or "")
        value = value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value), ""
    if isinstance(value, (str, Path)):
        path = Path(value) if image_root is None else image_root / value
        return path.read_bytes(), str(value)
    if hasattr(value, "save"):  # PIL image, stored upright (its EXIF orientation applied, as for files)
        from segvlm.video import exif_upright

        buffer = io.BytesIO()
        exif_upright(value).save(buffer, format="PNG")
        return buffer.getvalue(), str(getattr(value, "filename", "") or "")
    raise ValueError(f"cannot read an image from a {type(value).__name__}; give a path, bytes or a PIL image")


def rows_from_refcoco(
    records: Iterable[Mapping[str, Any]],
    *,
    image_root: str | Path | None = None,
    fields: RefCocoFields = RefCocoFields(),
    errors: list[ItemError] | None = None,
) -> Iterator[Row]:
    """Rows from RefCOCO-style references (one per referred object): one row per image.

    Every (object, sentence) pair becomes a region whose ``phrase`` and ``caption`` are the sentence and
    whose ``track_id`` is the reference id, so the several expressions of one object share an id. A photo with
    an EXIF orientation tag is stored upright, its references taken as drawn on the upright image.
    References are grouped by image in memory (only ids and the first image value per image are kept).
    """
    root = Path(image_root) if image_root is not None else None
    order: list[Any] = []
    images: dict[Any, Any] = {}
    refs: dict[Any, list[Mapping[str, Any]]] = {}
    for position, record in enumerate(records):
        image_value = record.get(fields.image)
        key = record.get(fields.image_id)
        if key is None:
            key = image_value if isinstance(image_value, (str, Path)) else position
        if key not in refs:
            order.append(key)
            images[key] = image_value
            refs[key] = []
        refs[key].append(record)
    for key in order:
        try:
            payload, name = _image_bytes(images[key], root)
            picture = _upright_image(payload)
            height, width = picture.height, picture.width
        except (OSError, ValueError) as error:
            _record(errors, str(key), str(images[key]) if isinstance(images[key], (str, Path)) else "", error)
            continue
        source = name or str(key)
        regions = []
        for position, ref in enumerate(refs[key]):
            label = str(ref.get(fields.label) or "object")
            track_id = int(ref.get(fields.ref_id, position + 1))
            bbox = ref.get(fields.bbox)
            rle = segmentation_to_rle(ref.get(fields.segmentation), height, width, bbox)
            box = _xywh_to_xyxy(bbox) if bbox is not None else rle.bbox_xyxy()
            for sentence in _sentences(ref.get(fields.sentences)) or [label]:
                regions.append(
                    Region(
                        rle=rle,
                        bbox_xyxy=box,
                        label=label,
                        phrase=sentence,
                        score=1.0,
                        track_id=track_id,
                        caption=sentence,
                    )
                )
        yield Row(image=picture.data, source=source, frame_index=0, width=width, height=height, regions=regions)


# -- segvlm results ---------------------------------------------------------------------------------------


def rows_from_segmentation_result(
    result: VideoSegmentation,
    video: str | Path | None = None,
    *,
    source: str | None = None,
    caption_templates: Sequence[str] = DEFAULT_CAPTION_TEMPLATES,
    image_format: str = "jpeg",
) -> list[Row]:
    """Rows from a pipeline result; frames are decoded from ``video`` (default: ``result.info.source``)."""
    from segvlm.data.rows import rows_from_segmentation

    path = str(video if video is not None else result.info.source)
    if path.startswith("<"):
        raise ValueError(f"the result's source is {path!r}, not a file; pass video= the frames' path")
    return rows_from_segmentation(
        result,
        path,
        source or Path(path).name,
        is_image=Path(path).suffix.lower() in IMAGE_SUFFIXES,
        stride=result.info.stride,
        max_frames=None,
        caption_templates=caption_templates,
        image_format=image_format,
    )


def rows_from_saved_result(directory: str | Path, video: str | Path | None = None, **kwargs: Any) -> list[Row]:
    """Rows from a folder written by ``VideoSegmentation.save`` (its ``masks.json``)."""
    from segvlm.types import VideoSegmentation

    return rows_from_segmentation_result(VideoSegmentation.load(str(directory)), video, **kwargs)


# -- writing ----------------------------------------------------------------------------------------------


def rows_to_dataset(rows: Iterable[Row]) -> datasets.Dataset:
    """A small in-memory ``datasets.Dataset`` with the segvlm features (:func:`write_rows` for big ones)."""
    import datasets

    return datasets.Dataset.from_list([row.to_dict() for row in rows], features=features())


def write_rows(
    rows: Iterable[Row],
    out: str | Path,
    *,
    source_name: str = "import",
    rows_per_shard: int = 256,
    errors: Sequence[ItemError] = (),
    settings: Mapping[str, Any] | None = None,
    save_arrow: bool = True,
) -> Path:
    """Write rows as a dataset folder laid out like :func:`segvlm.data.build_dataset`'s output.

    Args:
        rows: the rows, streamed; ``rows_per_shard`` of them are held in memory at a time.
        out: a new or empty folder.
        source_name: what made the rows (``"import:coco"``), shown in the card.
        errors: skipped inputs to list in ``errors.jsonl`` and the card.
        settings: anything worth recording in the card (file names, templates).
    """
    from segvlm.data.finalize import finalize

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty; importers write into a new or empty folder")
    data_dir = out / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(out / "ledger.jsonl")
    units: list[WorkUnit] = []

    def flush(batch: list[Row]) -> None:
        index = len(units)
        sources = list(dict.fromkeys(row.source for row in batch))
        unit = WorkUnit(
            index=index,
            key=f"u{index:06d}-import",
            items=tuple(WorkItem(path="", source=s, kind="image") for s in sources),
        )
        label_counts: dict[str, int] = {}
        for row in batch:
            for region in row.regions:
                label_counts[region.label] = label_counts.get(region.label, 0) + 1
        record = UnitRecord(
            key=unit.key,
            rows=len(batch),
            regions=sum(label_counts.values()),
            label_counts=label_counts,
            meta={"labeler": source_name} if index == 0 else {},
        )
        write_unit_output(rows_to_table(batch), data_dir, record)
        ledger.append(record)
        units.append(unit)

    batch: list[Row] = []
    for row in rows:
        batch.append(row)
        if len(batch) == rows_per_shard:
            flush(batch)
            batch = []
    if batch or not units:
        flush(batch)
    if errors:  # attach the skipped inputs to the last unit so the card and errors.jsonl count them
        last = ledger.records[units[-1].key]
        last.errors = list(errors)
        units[-1] = WorkUnit(
            index=units[-1].index,
            key=units[-1].key,
            items=units[-1].items + tuple(WorkItem("", e.source, "image") for e in errors),
        )
    atomic_write_text(out / "build.json", json.dumps({"importer": source_name, "settings": dict(settings or {})}))
    finalize(
        out,
        units,
        ledger,
        dict(settings or {}),
        source_name,
        save_arrow=save_arrow,
        title=f"segvlm dataset: {out.name} ({source_name})",
    )
    return out
