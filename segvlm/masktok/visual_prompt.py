"""Design 2: Set-of-Mark visual prompting, zero training, any VLM.

Each region is drawn on the image before the processor: a translucent fill (``"alpha"``), its outline
(``"contour"``), and a number at a point inside the mask. The prompt then refers to regions by number
("mark 2"). It keeps the full mask shape, but only at the resolution the VLM sees; costs 0 extra tokens.

Those marks paint over the region itself: on small objects the fill and the number change most of the
object's pixels, the very colour or texture a question may be about. The ``"tag"`` style
(:func:`draw_tags`) leaves every region's pixels as they were: a thin ring just outside each mask and a
numbered tag placed beside it where it hides the least.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from segvlm.masktok.base import MaskTokenizer, MaskTokens
from segvlm.masktok.regions import region_masks
from segvlm.palette import MARK_PALETTE as PALETTE

STYLES = ("alpha", "contour", "number")


def _outline(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels of ``mask`` within ``width`` px of its border: (H, W) bool."""
    inner = mask.copy()
    for _ in range(width):
        shrunk = inner.copy()
        shrunk[1:, :] &= inner[:-1, :]
        shrunk[:-1, :] &= inner[1:, :]
        shrunk[:, 1:] &= inner[:, :-1]
        shrunk[:, :-1] &= inner[:, 1:]
        inner = shrunk
    return mask & ~inner


def label_point(mask: np.ndarray) -> tuple[int, int]:
    """(x, y) of the mask pixel nearest its centroid, so the number sits on the object even if concave."""
    ys, xs = np.nonzero(mask)
    k = int(np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2))
    return int(xs[k]), int(ys[k])


def draw_marks(
    image,
    masks: Sequence[np.ndarray],
    style: str = "alpha",
    alpha: float = 0.4,
    numbers: Sequence[int] | None = None,
    font_size: int | None = None,
):
    """A copy of ``image`` (PIL) with every mask drawn and numbered 1..N (or ``numbers``)."""
    from PIL import Image, ImageDraw, ImageFont

    if style not in STYLES:
        raise ValueError(f"unknown mark style {style!r}; choose one of {STYLES}")
    canvas = np.asarray(image.convert("RGB"), dtype=np.float32).copy()  # (H, W, 3)
    height, width = canvas.shape[:2]
    line = max(1, round(min(height, width) / 100))
    for k, mask in enumerate(masks):
        color = np.asarray(PALETTE[k % len(PALETTE)], dtype=np.float32)
        if style == "alpha":
            canvas[mask] = (1 - alpha) * canvas[mask] + alpha * color
        if style in ("alpha", "contour"):
            canvas[_outline(mask, line)] = color
    out = Image.fromarray(canvas.round().clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    size = font_size or max(8, min(height, width) // 8)
    font = ImageFont.load_default(size=size)
    for k, mask in enumerate(masks):
        text = str(numbers[k] if numbers is not None else k + 1)
        x, y = label_point(mask)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        x0 = min(max(x - (right - left) // 2, 0), max(width - (right - left) - 2, 0))
        y0 = min(max(y - (bottom - top) // 2, 0), max(height - (bottom - top) - 2, 0))
        draw.rectangle((x0 - 1, y0 - 1, x0 + right - left + 1, y0 + bottom - top + 1), fill=(0, 0, 0))
        draw.text((x0 - left, y0 - top), text, fill=(255, 255, 255), font=font)
    return out


TAG_STYLE = "tag"
#: the colour of tag ``k`` (cycled): grey and orange first, which generated scenes never use for objects,
#: then further hues far from the pure primaries and secondaries objects are often drawn in
TAG_COLOURS: tuple[tuple[int, int, int], ...] = (
    (150, 150, 150),
    (255, 140, 0),
    (128, 0, 255),
    (0, 150, 110),
    (255, 105, 180),
    (128, 128, 0),
)


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """(H, W) bool: ``mask`` grown by ``radius`` pixels (8-neighbourhood, i.e. a square structuring element)."""
    out = mask.copy()
    for _ in range(radius):
        padded = np.pad(out, 1)  # (H+2, W+2)
        grown = np.zeros_like(out)
        for dy in range(3):
            for dx in range(3):
                grown |= padded[dy : dy + out.shape[0], dx : dx + out.shape[1]]
        out = grown
    return out


def _tag_candidates(box: tuple[int, int, int, int], tw: int, th: int) -> list[tuple[int, int]]:
    """Top-left corners of a tw x th tag touching ``box`` (x0, y0, x1, y1, exclusive) from outside: sides first."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    return [
        (x1, cy - th // 2),
        (cx - tw // 2, y0 - th),
        (x0 - tw, cy - th // 2),
        (cx - tw // 2, y1),
        (x1, y0 - th),
        (x0 - tw, y0 - th),
        (x1, y1),
        (x0 - tw, y1),
    ]


TAG_PLACES = ("beside", "centre")
RING_PATTERNS = ("solid", "checker")


def _ring_pixels(grown: np.ndarray, union: np.ndarray, pattern: str) -> np.ndarray:
    """(H, W) bool: the ring's painted pixels, ``grown`` outside ``union``; every other one for ``"checker"``."""
    ring = grown & ~union
    if pattern == "checker":
        rows, cols = np.indices(ring.shape)
        ring &= (rows + cols) % 2 == 0
    return ring


def _centre_corner(mask: np.ndarray, tw: int, th: int, width: int, height: int) -> tuple[int, int]:
    """Top-left corner of a tw x th tag centred on the mask's :func:`label_point`, kept inside the image."""
    x, y = label_point(mask)
    return min(max(x - tw // 2, 0), max(width - tw, 0)), min(max(y - th // 2, 0), max(height - th, 0))


def _beside_corner(
    box: tuple[int, int, int, int], tw: int, th: int, busy: np.ndarray, union: np.ndarray
) -> tuple[int, int]:
    """Top-left corner of the place beside ``box`` that covers the fewest region pixels, then the fewest busy
    ones; (0, 0) when none fits in the image."""
    height, width = busy.shape
    best, best_cost = (0, 0), None
    for x, y in _tag_candidates(box, tw, th):
        if x < 0 or y < 0 or x + tw > width or y + th > height:
            continue
        cost = int(busy[y : y + th, x : x + tw].sum()) + 1000 * int(union[y : y + th, x : x + tw].sum())
        if best_cost is None or cost < best_cost:
            best, best_cost = (x, y), cost
    return best


def draw_tags(
    image,
    masks: Sequence[np.ndarray],
    ring: int = 2,
    font_size: int = 10,
    colours: Sequence[tuple[int, int, int]] = TAG_COLOURS,
    numbers: Sequence[int] | None = None,
    place: str = "beside",
    pattern: str = "solid",
):
    """A copy of ``image`` (PIL) with a ``ring``-pixel ring just outside each mask and a numbered tag touching it.

    Unlike :func:`draw_marks` (a fill or an outline on the object and a number at its centre), no pixel of
    any mask changes: the ring is drawn outside the union of the masks, and each tag takes the place beside
    its ring that covers the fewest mask pixels, then the fewest non-background pixels (background = the
    image's median colour); when no place beside the ring fits in the image, the tag goes to the top-left
    corner. Mark ``k`` (numbered ``k + 1``, or ``numbers[k]``) is drawn in ``colours[k % len(colours)]``,
    so two marks differ in colour as well as in their digit.

    With ``place="centre"`` the tag sits on the region instead, centred on its :func:`label_point` (as the
    Set-of-Mark paper puts the number on the region): it covers part of the region (a ``font_size`` box),
    and is found where the object is rather than beside it. With ``pattern="checker"`` the ring is a 1-pixel
    checkerboard of the mark's colour and the image's own pixels: a texture that flat-coloured objects never
    have, which a patch embedding can tell from an object's edge.
    """
    from PIL import Image, ImageDraw, ImageFont

    if place not in TAG_PLACES:
        raise ValueError(f"unknown tag place {place!r}; choose one of {TAG_PLACES}")
    if pattern not in RING_PATTERNS:
        raise ValueError(f"unknown ring pattern {pattern!r}; choose one of {RING_PATTERNS}")
    canvas = np.asarray(image.convert("RGB")).copy()  # (H, W, 3)
    height, width = canvas.shape[:2]
    union = np.zeros((height, width), dtype=bool)
    for mask in masks:
        union |= mask
    background = np.median(canvas.reshape(-1, 3), axis=0)  # (3,)
    boxes = []
    for k, mask in enumerate(masks):
        grown = dilate(mask, ring)
        canvas[_ring_pixels(grown, union, pattern)] = colours[k % len(colours)]
        ys, xs = np.nonzero(grown)
        boxes.append((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))
    busy = np.abs(canvas.astype(np.int32) - background).sum(-1) > 30  # (H, W) pixels a tag should not hide
    busy |= union
    out = Image.fromarray(canvas)
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default(size=font_size)
    for k, box in enumerate(boxes):
        text = str(numbers[k] if numbers is not None else k + 1)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left + 2, bottom - top + 2
        if place == "centre":
            x, y = _centre_corner(masks[k], tw, th, width, height)
        else:
            x, y = _beside_corner(box, tw, th, busy, union)
        colour = tuple(colours[k % len(colours)])
        draw.rectangle((x, y, x + tw - 1, y + th - 1), fill=colour)
        draw.text((x + 1 - left, y + 1 - top), text, fill=(0, 0, 0), font=font)
        busy[y : y + th, x : x + tw] = True
    return out


class SetOfMarkTokenizer(MaskTokenizer):
    """Draw numbered marks on the image; regions are named ``"mark 1"``, ``"mark 2"``... in the prompt.

    Args:
        style: ``"alpha"`` (translucent fill + outline), ``"contour"`` (outline only), ``"number"``, or
            ``"tag"`` (a ring outside the mask and a numbered tag beside it, :func:`draw_tags`: the region's
            own pixels stay visible, which the other styles do not guarantee on small objects).
        alpha: fill opacity for ``"alpha"``.
        max_regions: budget of regions per image (numbers stay legible up to ~10 on small images).
        region_format: how a region is named in the prompt; ``{n}`` is its number.
        ring: ring width in pixels (``"tag"`` only).
        font_size: digit height in pixels (``"tag"`` only).
        tag_colours: RGB colour of each mark, cycled (``"tag"`` only; None: :data:`TAG_COLOURS`); pick
            colours the objects of your images do not have, so a mark is never mistaken for an object.
        tag_place: ``"beside"`` (the default: no region pixel changes) or ``"centre"`` (the tag on the region,
            at its :func:`label_point`; ``"tag"`` only, see :func:`draw_tags`).
        ring_pattern: ``"solid"`` (the default) or ``"checker"`` (every other ring pixel; ``"tag"`` only).
    """

    design = "set_of_mark"
    tokens_per_region = 0

    def __init__(
        self,
        style: str = "alpha",
        alpha: float = 0.4,
        max_regions: int = 9,
        region_format: str = "mark {n}",
        ring: int = 2,
        font_size: int = 10,
        tag_colours: Sequence[Sequence[int]] | None = None,
        tag_place: str = "beside",
        ring_pattern: str = "solid",
    ):
        super().__init__(max_regions=max_regions)
        if style not in (*STYLES, TAG_STYLE):
            raise ValueError(f"unknown mark style {style!r}; choose one of {(*STYLES, TAG_STYLE)}")
        if ring < 1 or font_size < 1:
            raise ValueError(f"ring and font_size must be at least 1 pixel, got {ring} and {font_size}")
        if tag_place not in TAG_PLACES:
            raise ValueError(f"unknown tag place {tag_place!r}; choose one of {TAG_PLACES}")
        if ring_pattern not in RING_PATTERNS:
            raise ValueError(f"unknown ring pattern {ring_pattern!r}; choose one of {RING_PATTERNS}")
        self.style, self.alpha, self.region_format = style, alpha, region_format
        self.ring, self.font_size, self.tag_place, self.ring_pattern = ring, font_size, tag_place, ring_pattern
        self.tag_colours = tuple(tuple(int(v) for v in c) for c in (tag_colours or TAG_COLOURS))
        if not all(len(c) == 3 for c in self.tag_colours):
            raise ValueError(f"tag_colours must be RGB triples, got {tag_colours!r}")

    def draw(self, image, masks: Sequence[np.ndarray]):
        """``image`` with ``masks`` marked in this tokenizer's style (the image itself when there are none)."""
        if not masks:
            return image
        if self.style == TAG_STYLE:
            return draw_tags(
                image,
                masks,
                ring=self.ring,
                font_size=self.font_size,
                colours=self.tag_colours,
                place=self.tag_place,
                pattern=self.ring_pattern,
            )
        return draw_marks(image, masks, style=self.style, alpha=self.alpha)

    def encode(self, images: Sequence[Any], regions: Sequence[Sequence[Any]]) -> MaskTokens:
        masks = region_masks(images, regions, self.max_regions)
        marked = [self.draw(img, m) for img, m in zip(images, masks, strict=True)]
        texts = [[self.region_format.format(n=k + 1) for k in range(len(m))] for m in masks]
        return MaskTokens(images=marked, region_texts=texts)

    def config_dict(self) -> dict[str, Any]:
        config = {
            "style": self.style,
            "alpha": self.alpha,
            "max_regions": self.max_regions,
            "region_format": self.region_format,
        }
        if self.style == TAG_STYLE:  # the stock styles save what they always saved
            config.update(ring=self.ring, font_size=self.font_size, tag_colours=[list(c) for c in self.tag_colours])
            if self.tag_place != "beside":  # configs saved before these options load and save as they were
                config["tag_place"] = self.tag_place
            if self.ring_pattern != "solid":
                config["ring_pattern"] = self.ring_pattern
        return config
