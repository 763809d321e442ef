"""Lazy views over a built dataset: masks decoded on access, never stored dense."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import datasets


def decode_regions(regions: list[dict[str, Any]], height: int, width: int) -> np.ndarray:
    """The regions' masks as one (N, H, W) bool array (N may be 0)."""
    from pycocotools import mask as coco_mask

    if not regions:
        return np.zeros((0, height, width), dtype=bool)
    rles = [{"size": list(r["mask"]["size"]), "counts": r["mask"]["counts"].encode()} for r in regions]
    decoded = coco_mask.decode(rles)  # (H, W, N) uint8, Fortran order
    return np.ascontiguousarray(np.moveaxis(decoded, -1, 0)).astype(bool)  # (N, H, W)


def _decode_batch(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
    batch["masks"] = [
        decode_regions(regions, height, width)
        for regions, height, width in zip(batch["regions"], batch["height"], batch["width"], strict=True)
    ]
    return batch


def with_decoded_masks(ds: datasets.Dataset) -> datasets.Dataset:
    """``ds`` with a ``masks`` column, an (N, H, W) bool array per row, decoded when a row is read.

    This uses ``with_transform``, so nothing is decoded or written up front and the RLE column stays as it
    is; indexing, slicing and DataLoaders all see the decoded masks. (Decoding in ``map`` would store dense
    masks, hundreds of times larger than the RLE.)
    """
    missing = {"regions", "height", "width"} - set(ds.column_names)
    if missing:
        raise ValueError(
            f"dataset lacks columns {sorted(missing)}; with_decoded_masks needs a segvlm dataset "
            "(build_dataset or an importer) with regions, height and width"
        )
    return ds.with_transform(_decode_batch)
