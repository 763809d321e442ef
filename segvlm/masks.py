"""Binary masks as COCO run-length encoding (RLE), and the few mask operations the pipeline needs.

Results keep masks as RLE so that a long video's masklets stay small in memory and on disk; a dense
array is decoded only when someone asks for it. The encoding is pycocotools' own, so `RLE.to_coco()`
drops straight into a COCO annotation and `pycocotools.mask.decode` reads it back.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np
from pycocotools import mask as coco_mask

from segvlm.errors import FormatError

# The longest run-length number in pycocotools' string form: 7 chars hold any 32-bit count or difference.
_MAX_NUMBER_CHARS = 7


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
    def from_coco(cls, segmentation: Any, where: str = "the mask") -> RLE:
        """Read a COCO ``{"size": [h, w], "counts": ...}`` dict (compressed string or uncompressed list).

        The input is checked before pycocotools sees it (pycocotools reads uninitialised memory for counts
        that cover less than the mask): a malformed one raises :class:`~segvlm.errors.FormatError` naming
        ``where`` and the problem.
        """
        if not isinstance(segmentation, dict) or "size" not in segmentation or "counts" not in segmentation:
            raise FormatError(
                f"{where} is not a COCO RLE: expected {{'size': [height, width], 'counts': ...}}, got "
                f"{_describe(segmentation)}; re-export the file"
            )
        height, width = _size(segmentation["size"], where)
        counts = segmentation["counts"]
        if isinstance(counts, list):  # uncompressed RLE, as some tools write it
            runs = _uncompressed_runs(counts, where)
            _check_runs(runs, height, width, where)
            counts = coco_mask.frPyObjects({"size": [height, width], "counts": runs}, height, width)["counts"]
        if isinstance(counts, bytes):
            try:
                counts = counts.decode("ascii")
            except UnicodeDecodeError:
                counts = None
        if not isinstance(counts, str):
            raise FormatError(
                f"{where} has counts of type {type(segmentation['counts']).__name__}; COCO RLE counts are a "
                "compressed string or a list of run lengths. Re-export the file"
            )
        _check_runs(_compressed_runs(counts, where), height, width, where)
        return cls(size=(height, width), counts=counts)

    @classmethod
    def from_polygons(cls, polygons: Any, height: int, width: int, where: str = "the mask") -> RLE:
        """Rasterise COCO polygons (``[[x0, y0, x1, y1, ...], ...]``, pixels) into one mask of (height, width).

        Raises :class:`~segvlm.errors.FormatError` naming ``where`` for anything that is not a list of
        polygons of at least three points.
        """
        valid = isinstance(polygons, list) and bool(polygons)
        for polygon in polygons if valid else ():
            shaped = isinstance(polygon, list) and len(polygon) >= 6 and len(polygon) % 2 == 0
            if not shaped or not all(_finite(v) for v in polygon):
                valid = False
                break
        if not valid:
            raise FormatError(
                f"{where} is {_describe(polygons)}; COCO polygons are a list of [x0, y0, x1, y1, ...] lists of "
                "at least three points, or use an RLE {'size': [height, width], 'counts': ...}"
            )
        merged = coco_mask.merge(coco_mask.frPyObjects([[float(v) for v in p] for p in polygons], height, width))
        return cls(size=(int(height), int(width)), counts=merged["counts"].decode())

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


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _finite(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, Real) and bool(np.isfinite(value))


def _size(size: Any, where: str) -> tuple[int, int]:
    """``[height, width]`` as two non-negative ints (integral floats accepted, as JSON writers produce them)."""
    if isinstance(size, (list, tuple)) and len(size) == 2:
        values = []
        for value in size:
            if isinstance(value, bool) or not isinstance(value, Real):
                break
            if not isinstance(value, Integral) and not float(value).is_integer():
                break
            values.append(int(value))
        if len(values) == 2 and min(values) >= 0:
            return values[0], values[1]
    raise FormatError(
        f"{where} has size {_describe(size)}; a COCO RLE size is [height, width], two non-negative integers"
    )


def _uncompressed_runs(counts: list, where: str) -> list[int]:
    runs = []
    for value in counts:
        if isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
            raise FormatError(
                f"{where} has a run length {_describe(value)}; uncompressed RLE counts are non-negative integers"
            )
        runs.append(int(value))
    return runs


def _compressed_runs(counts: str, where: str) -> np.ndarray:
    """The run lengths of pycocotools' compressed string (``rleFrString``), vectorised; FormatError if garbled."""
    try:
        raw = counts.encode("ascii")
    except UnicodeEncodeError:
        raw = b"\xff"
    chars = np.frombuffer(raw, dtype=np.uint8).astype(np.int64) - 48  # (C,) 6-bit digits
    if chars.size == 0:
        return np.zeros(0, dtype=np.int64)
    more = (chars & 0x20) != 0  # (C,) the number goes on after this char
    ends = np.flatnonzero(~more)  # (N,) last char of each number
    starts = np.concatenate([[0], ends[:-1] + 1])  # (N,)
    lengths = ends - starts + 1 if len(ends) else np.zeros(0, dtype=np.int64)
    if (chars < 0).any() or (chars > 63).any() or more[-1] or lengths.max(initial=0) > _MAX_NUMBER_CHARS:
        raise FormatError(
            f"{where} has garbled counts {_describe(counts)}: pycocotools' compressed RLE uses the characters "
            "'0' to 'o' in numbers of at most 7 characters. The file was cut or edited; re-export it"
        )
    shift = 5 * (np.arange(len(chars)) - np.repeat(starts, lengths))  # (C,) bit offset of each char
    values = np.add.reduceat((chars & 0x1F) << shift, starts)  # (N,)
    negative = (chars[ends] & 0x10) != 0
    values = np.where(negative, values | np.left_shift(-1, 5 * lengths), values)
    runs = values.copy()
    for parity in (3, 4):  # from the 4th number on, each is stored as the difference to the one two before
        runs[parity::2] = runs[parity - 2] + np.cumsum(values[parity::2]) if len(runs) > parity else runs[parity::2]
    return runs


def _check_runs(runs: Any, height: int, width: int, where: str) -> None:
    runs = np.asarray(runs, dtype=np.int64)
    if (runs < 0).any():
        raise FormatError(f"{where} has a negative run length; the counts were cut or edited. Re-export the file")
    total = int(runs.sum())
    if total != height * width:
        raise FormatError(
            f"{where} has run lengths that cover {total} pixels, but its size {height}x{width} has "
            f"{height * width}; the counts or the size were cut or edited. Re-export the file"
        )


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
