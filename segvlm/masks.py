"""Binary masks as COCO run-length encoding (RLE), and the few mask operations the pipeline needs.

Results keep masks as RLE so that a long video's masklets stay small in memory and on disk; a dense
array is decoded only when someone asks for it. The encoding is pycocotools' own, so `RLE.to_coco()`
drops straight into a COCO annotation and `pycocotools.mask.decode` reads it back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pycocotools import mask as coco_mask


@dataclass(frozen=True)
class RLE:
    """A binary mask in COCO's compressed run-length encoding.

    Attributes:
        size: (height, width) of the mask.
        counts: pycocotools' compressed counts string.
    """

    size: tuple[int, int]
    counts: str

    def __repr__(self) -> str:  # the counts string can be kilobytes long: show its length, not its text
        return f"RLE(size={self.size}, counts=<{len(self.counts)} chars>)"

    @classmethod
    def encode(cls, mask: np.ndarray) -> RLE:
        """Encode a (H, W) boolean or 0/1 array."""
        if mask.ndim != 2:
            raise ValueError(f"expected a 2-D (H, W) mask, got shape {mask.shape}")
        fortran = np.asfortranarray(mask.astype(np.uint8, copy=False))  # (H, W) uint8, column-major
        encoded = coco_mask.encode(fortran)
        return cls(size=(int(encoded["size"][0]), int(encoded["size"][1])), counts=encoded["counts"].decode())

    @classmethod
    def empty(cls, height: int, width: int) -> RLE:
        return cls.encode(np.zeros((height, width), dtype=bool))

    @classmethod
    def from_coco(cls, segmentation: dict) -> RLE:
        """Read a COCO ``{"size": [h, w], "counts": ...}`` dict (compressed string or uncompressed list)."""
        height, width = segmentation["size"]
        counts = segmentation["counts"]
        if isinstance(counts, list):  # uncompressed RLE, as some tools write it
            counts = coco_mask.frPyObjects(segmentation, height, width)["counts"]
        if isinstance(counts, bytes):
            counts = counts.decode()
        return cls(size=(int(height), int(width)), counts=counts)

    def to_coco(self) -> dict:
        return {"size": [self.size[0], self.size[1]], "counts": self.counts}

    def _pyobj(self) -> dict:
        return {"size": [self.size[0], self.size[1]], "counts": self.counts.encode()}

    def decode(self) -> np.ndarray:
        """The dense (H, W) boolean mask."""
        return coco_mask.decode(self._pyobj()).astype(bool)

    @property
    def area(self) -> int:
        return int(coco_mask.area(self._pyobj()))

    def bbox_xyxy(self) -> tuple[float, float, float, float]:
        """Tight box around the mask in pixel corners (x0, y0, x1, y1); all zeros for an empty mask."""
        x, y, w, h = coco_mask.toBbox(self._pyobj()).tolist()
        return (float(x), float(y), float(x + w), float(y + h))


def mask_iou_matrix(a: list[RLE], b: list[RLE]) -> np.ndarray:
    """IoU between every mask of ``a`` and every mask of ``b``: an (len(a), len(b)) float array."""
    if not a or not b:
        return np.zeros((len(a), len(b)), dtype=np.float64)
    ious = coco_mask.iou([r._pyobj() for r in a], [r._pyobj() for r in b], [0] * len(b))
    return np.asarray(ious, dtype=np.float64).reshape(len(a), len(b))


def box_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU between (N, 4) and (M, 4) xyxy boxes: an (N, M) array."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])  # (N, M, 2)
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])  # (N, M, 2)
    inter = np.clip(bottom_right - top_left, 0, None).prod(-1)  # (N, M)
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(-1)  # (N,)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(-1)  # (M,)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two dense (H, W) boolean masks; 1.0 when both are empty."""
    union = np.logical_or(a, b).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(a, b).sum() / union)
