"""Region coordinates in each VLM family's own text format, and back.

Every format turns a box (and optionally a compact polygon) in original-image pixels into the text the
family was trained to read and write, and parses that text back into pixels. Quantisation is the only loss:
1/1000 of the side for Qwen2-VL, one resized pixel for Qwen2.5-VL, 1/1024 for PaliGemma, 1/32 for Kosmos-2.

Parsing reads model answers, so it takes any text: a box or polygon whose coordinates lie outside the
format's grid (or have more digits than any grid coordinate) is garbage and left out, never an exception.
An image size that is not positive raises :class:`~segvlm.errors.SegvlmError`.
"""

from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass

import numpy as np

from segvlm.errors import SegvlmError

Box = tuple[float, float, float, float]
Point = tuple[float, float]

# A coordinate in text: at most 6 digits (no grid is larger), ASCII digits only (``\d`` also matches other
# scripts' digits, which no model writes).
_NUMBER = r"(-?[0-9]{1,6})"
_POLY_TAG = re.compile(r"</?poly>")


def check_image_size(width: int, height: int) -> None:
    """Refuse a non-positive image size with a message naming it (coordinates are relative to it)."""
    if not (width > 0 and height > 0):
        raise SegvlmError(f"the image size must be positive, got {width}x{height} (WxH); pass the image's real size")


def poly_spans(text: str) -> list[tuple[int, str]]:
    """(start, content) of every ``<poly>...</poly>`` in ``text``: an opening tag up to the first closing tag
    after it, as a lazy regex reads them, in one pass (no quadratic rescans on unclosed tags)."""
    spans, start = [], None
    for tag in _POLY_TAG.finditer(text):
        if tag.group() == "<poly>" and start is None:
            start = tag.start()
        elif tag.group() == "</poly>" and start is not None:
            spans.append((start, text[start + len("<poly>") : tag.start()]))
            start = None
    return spans


@dataclass(frozen=True)
class ParsedRegion:
    """A region read back from text: a box, and the polygon when the text had one (pixels of the image)."""

    box_xyxy: Box
    polygon: tuple[Point, ...] | None = None


class CoordinateFormat:
    """Base: points to/from integer units, and how units are written.

    Subclasses set :meth:`to_units`/:meth:`from_units` (the coordinate system) and the text syntax.
    """

    name = "base"
    #: the largest quantisation error of one coordinate, as a fraction of the image side
    step: float = 0.0

    def to_units(self, x: float, y: float, width: int, height: int) -> tuple[int, int]:
        raise NotImplementedError

    def from_units(self, ux: int, uy: int, width: int, height: int) -> Point:
        raise NotImplementedError

    def units_range(self, width: int, height: int) -> tuple[int, int]:
        """The largest unit in x and in y (units start at 0): a parsed coordinate beyond it is garbage."""
        raise NotImplementedError

    def _valid(self, units: tuple[int, ...], width: int, height: int) -> bool:
        """True when the (x, y, x, y, ...) units all lie on the grid."""
        top_x, top_y = self.units_range(width, height)
        return all(0 <= u <= (top_x if i % 2 == 0 else top_y) for i, u in enumerate(units))

    def _points(self, pairs: list[tuple[str, str]], width: int, height: int) -> tuple[Point, ...] | None:
        """Pixels of (x, y) unit pairs; None when any lies off the grid."""
        units = tuple(int(v) for pair in pairs for v in pair)
        if not self._valid(units, width, height):
            return None
        return tuple(self.from_units(units[i], units[i + 1], width, height) for i in range(0, len(units), 2))

    def format_box(self, box: Box, width: int, height: int) -> str:
        raise NotImplementedError

    def format_polygon(self, points: list[Point], width: int, height: int) -> str:
        units = [self.to_units(x, y, width, height) for x, y in points]
        return "<poly>" + ",".join(f"({ux},{uy})" for ux, uy in units) + "</poly>"

    def parse(self, text: str, width: int, height: int) -> list[ParsedRegion]:
        """All boxes (each with the polygon that follows it, if any) in ``text``, in pixels."""
        raise NotImplementedError

    def _parse_polygons(self, text: str, width: int, height: int) -> list[tuple[int, tuple[Point, ...]]]:
        found = []
        for start, content in poly_spans(text):
            points = self._points(re.findall(rf"\({_NUMBER},{_NUMBER}\)", content), width, height)
            if points is not None:
                found.append((start, points))
        return found

    def _parse_boxes(self, pattern: str, text: str, width: int, height: int) -> list[tuple[int, Box]]:
        """(start, box) for every match of ``pattern`` (four x0, y0, x1, y1 unit groups) on the grid."""
        check_image_size(width, height)
        boxes = []
        for m in re.finditer(pattern, text):
            units = tuple(int(v) for v in m.groups())
            if self._valid(units, width, height):
                a, b, c, d = units
                boxes.append(
                    (m.start(), (*self.from_units(a, b, width, height), *self.from_units(c, d, width, height)))
                )
        return boxes

    def _attach(self, boxes: list[tuple[int, Box]], polys: list[tuple[int, tuple[Point, ...]]]) -> list[ParsedRegion]:
        """Pair each box with the first polygon that starts after it and before the next box."""
        out = []
        for k, (start, box) in enumerate(boxes):
            end = boxes[k + 1][0] if k + 1 < len(boxes) else math.inf
            poly = next((p for s, p in polys if start < s < end), None)
            out.append(ParsedRegion(box_xyxy=box, polygon=poly))
        return out


class _NormalisedFormat(CoordinateFormat):
    """Coordinates as integers on a fixed 0..bins scale of each side."""

    bins = 1000

    def to_units(self, x, y, width, height):
        check_image_size(width, height)
        ux = min(max(round(x / width * self.bins), 0), self.bins)
        uy = min(max(round(y / height * self.bins), 0), self.bins)
        return ux, uy

    def from_units(self, ux, uy, width, height):
        return ux / self.bins * width, uy / self.bins * height

    def units_range(self, width, height):
        return self.bins, self.bins


class GenericBoxFormat(_NormalisedFormat):
    """``[x1,y1,x2,y2]`` on 0..1000, for models with no native grounding syntax (SmolVLM, LLaVA)."""

    name = "generic"
    step = 0.5 / 1000

    def format_box(self, box, width, height):
        (x0, y0), (x1, y1) = self.to_units(box[0], box[1], width, height), self.to_units(box[2], box[3], width, height)
        return f"[{x0},{y0},{x1},{y1}]"

    def parse(self, text, width, height):
        pattern = rf"\[\s*{_NUMBER}\s*,\s*{_NUMBER}\s*,\s*{_NUMBER}\s*,\s*{_NUMBER}\s*\]"
        boxes = self._parse_boxes(pattern, text, width, height)
        return self._attach(boxes, self._parse_polygons(text, width, height))


class Qwen2VLBoxFormat(_NormalisedFormat):
    """Qwen2-VL: ``<|box_start|>(x1,y1),(x2,y2)<|box_end|>`` with coordinates on 0..1000."""

    name = "qwen2_vl"
    step = 0.5 / 1000
    _box = rf"<\|box_start\|>\s*\({_NUMBER},\s*{_NUMBER}\)\s*,\s*\({_NUMBER},\s*{_NUMBER}\)\s*<\|box_end\|>"

    def format_box(self, box, width, height):
        (x0, y0), (x1, y1) = self.to_units(box[0], box[1], width, height), self.to_units(box[2], box[3], width, height)
        return f"<|box_start|>({x0},{y0}),({x1},{y1})<|box_end|>"

    def parse(self, text, width, height):
        boxes = self._parse_boxes(self._box, text, width, height)
        return self._attach(boxes, self._parse_polygons(text, width, height))


class Qwen25VLBoxFormat(CoordinateFormat):
    """Qwen2.5-VL: absolute pixels of the image *after* the processor's smart resize, written as JSON
    ``{"bbox_2d": [x1, y1, x2, y2]}``; ``factor = patch_size * merge_size`` and the pixel budget must match
    the processor's, which :meth:`from_processor` reads.
    """

    name = "qwen2_5_vl"

    def __init__(self, factor: int = 28, min_pixels: int = 56 * 56, max_pixels: int = 28 * 28 * 1280):
        self.factor, self.min_pixels, self.max_pixels = factor, min_pixels, max_pixels

    @classmethod
    def from_processor(cls, image_processor) -> Qwen25VLBoxFormat:
        size = getattr(image_processor, "size", None) or {}
        min_pixels = size.get("shortest_edge", getattr(image_processor, "min_pixels", 56 * 56))
        max_pixels = size.get("longest_edge", getattr(image_processor, "max_pixels", 28 * 28 * 1280))
        factor = image_processor.patch_size * image_processor.merge_size
        return cls(factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)

    def resized(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the image the model sees."""
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

        check_image_size(width, height)
        h, w = smart_resize(height, width, factor=self.factor, min_pixels=self.min_pixels, max_pixels=self.max_pixels)
        return w, h

    def to_units(self, x, y, width, height):
        rw, rh = self.resized(width, height)
        return min(max(round(x * rw / width), 0), rw), min(max(round(y * rh / height), 0), rh)

    def from_units(self, ux, uy, width, height):
        rw, rh = self.resized(width, height)
        return ux * width / rw, uy * height / rh

    def units_range(self, width, height):
        return self.resized(width, height)

    def format_box(self, box, width, height):
        (x0, y0), (x1, y1) = self.to_units(box[0], box[1], width, height), self.to_units(box[2], box[3], width, height)
        return f'{{"bbox_2d": [{x0}, {y0}, {x1}, {y1}]}}'

    def parse(self, text, width, height):
        pattern = rf'"bbox_2d"\s*:\s*\[\s*{_NUMBER}\s*,\s*{_NUMBER}\s*,\s*{_NUMBER}\s*,\s*{_NUMBER}\s*\]'
        boxes = self._parse_boxes(pattern, text, width, height)
        return self._attach(boxes, self._parse_polygons(text, width, height))


class PaliGemmaLocFormat(CoordinateFormat):
    """PaliGemma: ``<locYYYY><locXXXX><locYYYY><locXXXX>``, y first, 1024 bins per side."""

    name = "paligemma"
    bins = 1024
    step = 1 / 1024

    def to_units(self, x, y, width, height):
        check_image_size(width, height)
        return (
            min(max(int(x / width * self.bins), 0), self.bins - 1),
            min(max(int(y / height * self.bins), 0), self.bins - 1),
        )

    def from_units(self, ux, uy, width, height):
        return ux / self.bins * width, uy / self.bins * height

    def units_range(self, width, height):
        return self.bins - 1, self.bins - 1

    def format_box(self, box, width, height):
        x0, y0 = self.to_units(box[0], box[1], width, height)
        # the far corner is written as the last bin it covers, as PaliGemma's detection outputs are
        x1, y1 = self.to_units(max(box[2] - 1e-6, 0), max(box[3] - 1e-6, 0), width, height)
        return f"<loc{y0:04d}><loc{x0:04d}><loc{y1:04d}><loc{x1:04d}>"

    def format_polygon(self, points, width, height):
        units = [self.to_units(x, y, width, height) for x, y in points]
        return "<poly>" + "".join(f"<loc{uy:04d}><loc{ux:04d}>" for ux, uy in units) + "</poly>"

    def parse(self, text, width, height):
        check_image_size(width, height)
        opens = [m.start() for m in re.finditer("<poly>", text)]
        closes = [m.start() for m in re.finditer("</poly>", text)]
        boxes = []
        for m in re.finditer(r"<loc([0-9]{4})><loc([0-9]{4})><loc([0-9]{4})><loc([0-9]{4})>", text):
            if bisect.bisect_left(opens, m.start()) > bisect.bisect_left(closes, m.start()):
                continue  # inside a polygon
            y0, x0, y1, x1 = (int(v) for v in m.groups())
            if not self._valid((x0, y0, x1, y1), width, height):
                continue
            p0, p1 = self.from_units(x0, y0, width, height), self.from_units(x1 + 1, y1 + 1, width, height)
            boxes.append((m.start(), (*p0, *p1)))
        polys = []
        for start, content in poly_spans(text):
            pairs = [(x, y) for y, x in re.findall(r"<loc([0-9]{4})><loc([0-9]{4})>", content)]
            points = self._points(pairs, width, height)
            if points is not None:
                polys.append((start, points))
        return self._attach(boxes, polys)


class Kosmos2PatchFormat(CoordinateFormat):
    """Kosmos-2: ``<object><patch_index_UL><patch_index_LR></object>`` on a 32x32 grid of cells."""

    name = "kosmos2"
    grid = 32
    step = 1 / 32

    def to_units(self, x, y, width, height):
        check_image_size(width, height)
        return (
            min(max(int(x / width * self.grid), 0), self.grid - 1),
            min(max(int(y / height * self.grid), 0), self.grid - 1),
        )

    def from_units(self, ux, uy, width, height):
        return ux / self.grid * width, uy / self.grid * height

    def units_range(self, width, height):
        return self.grid - 1, self.grid - 1

    def _index(self, ux: int, uy: int) -> str:
        return f"<patch_index_{uy * self.grid + ux:04d}>"

    def format_box(self, box, width, height):
        ul = self.to_units(box[0], box[1], width, height)
        lr = self.to_units(max(box[2] - 1e-6, 0), max(box[3] - 1e-6, 0), width, height)
        return f"<object>{self._index(*ul)}{self._index(*lr)}</object>"

    def format_polygon(self, points, width, height):
        return "<poly>" + "".join(self._index(*self.to_units(x, y, width, height)) for x, y in points) + "</poly>"

    def parse(self, text, width, height):
        check_image_size(width, height)
        cells = self.grid * self.grid
        boxes = []
        for m in re.finditer(r"<object><patch_index_([0-9]{4})><patch_index_([0-9]{4})></object>", text):
            ul, lr = int(m.group(1)), int(m.group(2))
            if ul >= cells or lr >= cells:
                continue  # off the grid
            p0 = self.from_units(ul % self.grid, ul // self.grid, width, height)
            p1 = self.from_units(lr % self.grid + 1, lr // self.grid + 1, width, height)
            boxes.append((m.start(), (*p0, *p1)))
        polys = []
        for start, content in poly_spans(text):
            idx = [int(v) for v in re.findall(r"<patch_index_([0-9]{4})>", content)]
            if any(i >= cells for i in idx):
                continue
            # a vertex decodes to its cell centre
            points = tuple(self.from_units(i % self.grid + 0.5, i // self.grid + 0.5, width, height) for i in idx)
            polys.append((start, points))
        return self._attach(boxes, polys)


FORMATS: dict[str, type[CoordinateFormat]] = {
    cls.name: cls
    for cls in (GenericBoxFormat, Qwen2VLBoxFormat, Qwen25VLBoxFormat, PaliGemmaLocFormat, Kosmos2PatchFormat)
}


def mask_to_polygon(mask: np.ndarray, num_points: int = 12) -> list[Point]:
    """A compact star-shaped polygon: in each of ``num_points`` angular sectors around the centroid, the
    mask pixel farthest from it (its outer edge). Close for convex blobs; coarse for thin or hollow shapes.
    """
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        raise ValueError("cannot make a polygon of an empty mask; drop empty masks first")
    px, py = xs + 0.5, ys + 0.5  # (P,) pixel centres
    cx, cy = px.mean(), py.mean()
    dx, dy = px - cx, py - cy
    angles = np.arctan2(dy, dx)  # (P,)
    radius = np.hypot(dx, dy)  # (P,)
    sector = ((angles + math.pi) / (2 * math.pi) * num_points).astype(int) % num_points  # (P,)
    points = []
    for k in range(num_points):
        members = np.nonzero(sector == k)[0]
        if len(members) == 0:
            continue
        far = members[np.argmax(radius[members])]
        scale = (radius[far] + 0.5) / max(radius[far], 1e-9)  # push from the centre to the pixel's outer edge
        points.append((float(cx + dx[far] * scale), float(cy + dy[far] * scale)))
    return points


def polygon_to_mask(points: list[Point] | tuple[Point, ...], height: int, width: int) -> np.ndarray:
    """Rasterise a polygon (pixels) into an (H, W) bool mask."""
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (width, height), 0)
    ImageDraw.Draw(canvas).polygon([(float(x), float(y)) for x, y in points], fill=1)
    return np.asarray(canvas, dtype=bool)
