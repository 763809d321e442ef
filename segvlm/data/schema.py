"""The row schema shared by the dataset builder, the importers and the COCO exporter.

One row is one image or one sampled video frame; its ``regions`` are the objects in it. Masks stay COCO
RLE strings (small, any frame size) and are decoded only when read
(see :func:`segvlm.data.with_decoded_masks`).

Conventions, written into every dataset card:
    * ``bbox_xyxy`` is ``[x0, y0, x1, y1]`` in pixels of the stored image, float32, corners not centres;
    * ``mask`` is pycocotools' compressed RLE, ``size = [height, width]``, column-major like COCO;
    * ``frame_index`` is the index in the source video before stride (0 for a still image);
    * ``track_id`` is the object's id, stable across the frames of one source.

``datasets`` is imported inside :func:`features` so that importing this module stays light.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from segvlm.masks import RLE

if TYPE_CHECKING:
    import datasets
    import pyarrow as pa

    from segvlm.types import ObjectMask

SCHEMA_VERSION = 1
DEFAULT_CAPTION_TEMPLATES: tuple[str, ...] = ("a {label}",)


@dataclass(frozen=True)
class Region:
    """One object in one image: a mask with its box, label and caption.

    Attributes:
        rle: the mask at the image's size.
        bbox_xyxy: ``(x0, y0, x1, y1)`` in pixels.
        label: the grounded noun phrase or category name (``"red car"``).
        phrase: the query phrase or referring expression it came from.
        score: confidence in [0, 1] (1.0 for human annotations).
        track_id: the object's id, stable across frames of one source.
        caption: a short text about the region, from templates or a referring expression.
    """

    rle: RLE
    bbox_xyxy: tuple[float, float, float, float]
    label: str
    phrase: str = ""
    score: float = 1.0
    track_id: int = 0
    caption: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "mask": {"size": [int(self.rle.size[0]), int(self.rle.size[1])], "counts": self.rle.counts},
            "bbox_xyxy": [float(v) for v in self.bbox_xyxy],
            "label": self.label,
            "phrase": self.phrase,
            "score": float(self.score),
            "track_id": int(self.track_id),
            "caption": self.caption,
        }

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> Region:
        mask = value["mask"]
        return cls(
            rle=RLE(size=(int(mask["size"][0]), int(mask["size"][1])), counts=mask["counts"]),
            bbox_xyxy=tuple(float(v) for v in value["bbox_xyxy"]),  # type: ignore[arg-type]
            label=value["label"],
            phrase=value.get("phrase") or "",
            score=float(value["score"]),
            track_id=int(value["track_id"]),
            caption=value.get("caption") or "",
        )


@dataclass
class Row:
    """One image or sampled frame with its regions.

    Attributes:
        image: encoded image bytes (JPEG/PNG), stored as-is in the ``Image()`` column.
        source: stable id of the input (path relative to the inputs' common folder, or a file name).
        frame_index: index of the frame in the source before stride; 0 for a still image.
        width, height: image size in pixels.
        timestamp: seconds from the start of the video, when known.
        regions: the objects in this image, sorted by track id.
    """

    image: bytes
    source: str
    frame_index: int
    width: int
    height: int
    timestamp: float | None = None
    regions: list[Region] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The row as ``datasets`` expects it before encoding (image as ``{"bytes", "path"}``)."""
        return {
            "image": {"bytes": self.image, "path": None},
            "source": self.source,
            "frame_index": int(self.frame_index),
            "width": int(self.width),
            "height": int(self.height),
            "timestamp": None if self.timestamp is None else float(self.timestamp),
            "regions": [region.to_dict() for region in self.regions],
        }


def features() -> datasets.Features:
    """The ``datasets.Features`` of every segvlm dataset (``List`` of structs, never ``Sequence``)."""
    from datasets import Features, Image, List, Value

    return Features(
        {
            "image": Image(),
            "source": Value("string"),
            "frame_index": Value("int32"),
            "width": Value("int32"),
            "height": Value("int32"),
            "timestamp": Value("float64"),
            "regions": List(
                {
                    "mask": {"size": List(Value("int32"), length=2), "counts": Value("string")},
                    "bbox_xyxy": List(Value("float32"), length=4),
                    "label": Value("string"),
                    "phrase": Value("string"),
                    "score": Value("float32"),
                    "track_id": Value("int32"),
                    "caption": Value("string"),
                }
            ),
        }
    )


def arrow_schema() -> pa.Schema:
    """The Arrow schema of :func:`features`, with the metadata ``datasets`` reads back from parquet."""
    import json

    feats = features()
    metadata = {"huggingface": json.dumps({"info": {"features": feats.to_dict()}})}
    return feats.arrow_schema.with_metadata(metadata)


def rows_to_table(rows: Sequence[Row]) -> pa.Table:
    """Encode rows into an Arrow table with exactly :func:`arrow_schema` (empty tables included)."""
    import pyarrow as pa

    feats = features()
    encoded = [feats.encode_example(row.to_dict()) for row in rows]
    schema = arrow_schema()
    columns = {name: [example[name] for example in encoded] for name in schema.names}
    return pa.Table.from_pydict(columns, schema=schema)


def caption_for(templates: Sequence[str], label: str, phrase: str, key: str) -> str:
    """Fill one caption template with ``{label}`` / ``{phrase}``; the template is picked by hashing ``key``.

    Hashing (not random choice) keeps a rebuilt dataset identical row for row, which resume relies on.
    """
    if not templates:
        return ""
    index = int(hashlib.sha1(key.encode()).hexdigest(), 16) % len(templates) if len(templates) > 1 else 0
    return templates[index].format(label=label, phrase=phrase or label)


def check_templates(templates: Sequence[str]) -> None:
    """Refuse templates that name fields other than ``{label}`` and ``{phrase}`` before any work starts."""
    for template in templates:
        try:
            template.format(label="x", phrase="y")
        except (KeyError, IndexError, ValueError) as error:
            raise ValueError(
                f"caption template {template!r} is invalid ({error!r}); use only {{label}} and {{phrase}}, "
                "e.g. 'a photo of a {label}'"
            ) from error


def region_from_object(obj: ObjectMask, templates: Sequence[str], key: str) -> Region:
    """A dataset region from one of the pipeline's :class:`segvlm.types.ObjectMask`."""
    return Region(
        rle=obj.rle,
        bbox_xyxy=tuple(float(v) for v in obj.box_xyxy),  # type: ignore[arg-type]
        label=obj.label,
        phrase=obj.phrase,
        score=float(obj.score),
        track_id=int(obj.track_id),
        caption=caption_for(templates, obj.label, obj.phrase, f"{key}/{obj.track_id}"),
    )
