"""Turn whatever the caller has (dense masks, RLE, ObjectMask, boxes) into checked dense masks.

Every design starts here so that bad input fails the same way everywhere, with an error that names the
image, the region, the problem and the fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _as_mask(region: Any, height: int, width: int, where: str) -> np.ndarray:
    """One region as an (H, W) bool mask; boxes ``(x0, y0, x1, y1)`` become filled rectangles."""
    from segvlm.masks import RLE

    if hasattr(region, "rle") and isinstance(region.rle, RLE):  # ObjectMask
        region = region.rle
    if isinstance(region, RLE):
        return region.decode()
    if hasattr(region, "box_xyxy"):  # Detection
        region = region.box_xyxy
    array = np.asarray(region)
    if array.ndim == 1 and array.shape[0] == 4:
        x0, y0, x1, y1 = (float(v) for v in array)
        mask = np.zeros((height, width), dtype=bool)
        c0, r0 = max(int(np.floor(x0)), 0), max(int(np.floor(y0)), 0)
        c1, r1 = min(int(np.ceil(x1)), width), min(int(np.ceil(y1)), height)
        mask[r0:r1, c0:c1] = True
        return mask
    if array.ndim != 2:
        raise ValueError(
            f"{where}: expected an (H, W) mask, an RLE, an ObjectMask or an (x0, y0, x1, y1) box, "
            f"got an array of shape {array.shape}; pass one 2-D mask per region"
        )
    return array.astype(bool, copy=False)


def region_masks(images: Sequence[Any], regions: Sequence[Sequence[Any]], max_regions: int) -> list[list[np.ndarray]]:
    """Check and densify the regions of every image.

    Args:
        images: PIL images (anything with ``.size == (W, H)``) or (H, W, C) arrays.
        regions: one list of regions per image.
        max_regions: the design's budget of regions per image.

    Returns:
        one list of (H, W) bool masks per image.

    Raises:
        ValueError: when the lists do not line up, a mask is not at the image size, a mask is empty, or an
            image has more regions than the budget; the message says which and how to fix it.
    """
    if len(images) != len(regions):
        raise ValueError(
            f"got {len(images)} images but {len(regions)} region lists; pass one list of regions per image "
            "(an empty list for an image without regions)"
        )
    out: list[list[np.ndarray]] = []
    for i, (image, image_regions) in enumerate(zip(images, regions, strict=True)):
        width, height = (
            image.size
            if hasattr(image, "size") and not isinstance(image, np.ndarray)
            else (
                image.shape[1],
                image.shape[0],
            )
        )
        if len(image_regions) > max_regions:
            raise ValueError(
                f"image {i} has {len(image_regions)} regions but this mask tokenizer's budget is {max_regions} "
                f"per image; pass fewer regions (e.g. the top-{max_regions} by score) or build the tokenizer "
                f"with max_regions={len(image_regions)}"
            )
        masks = []
        for j, region in enumerate(image_regions):
            where = f"image {i}, region {j}"
            mask = _as_mask(region, height, width, where)
            if mask.shape != (height, width):
                raise ValueError(
                    f"{where}: mask size {mask.shape[0]}x{mask.shape[1]} (HxW) does not match the image size "
                    f"{height}x{width}; masks must be at the image's original size (resize the mask with "
                    "nearest-neighbour or pass the frame the mask was computed on)"
                )
            if not mask.any():
                raise ValueError(
                    f"{where}: the mask is empty (no pixel set); drop empty masks before encoding, "
                    "e.g. [r for r in regions if r.area > 0]"
                )
            masks.append(mask)
        out.append(masks)
    return out
