"""Design 2: Set-of-Mark visual prompting, zero training, any VLM.

Each region is drawn on the image before the processor: a translucent fill (``"alpha"``), its outline
(``"contour"``), and a number at a point inside the mask. The prompt then refers to regions by number
("mark 2"). It keeps the full mask shape, but only at the resolution the VLM sees; costs 0 extra tokens.
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


class SetOfMarkTokenizer(MaskTokenizer):
    """Draw numbered marks on the image; regions are named ``"mark 1"``, ``"mark 2"``... in the prompt.

    Args:
        style: ``"alpha"`` (translucent fill + outline), ``"contour"`` (outline only) or ``"number"``.
        alpha: fill opacity for ``"alpha"``.
        max_regions: budget of regions per image (numbers stay legible up to ~10 on small images).
        region_format: how a region is named in the prompt; ``{n}`` is its number.
    """

    design = "set_of_mark"
    tokens_per_region = 0

    def __init__(self, style: str = "alpha", alpha: float = 0.4, max_regions: int = 9, region_format: str = "mark {n}"):
        super().__init__(max_regions=max_regions)
        if style not in STYLES:
            raise ValueError(f"unknown mark style {style!r}; choose one of {STYLES}")
        self.style, self.alpha, self.region_format = style, alpha, region_format

    def encode(self, images: Sequence[Any], regions: Sequence[Sequence[Any]]) -> MaskTokens:
        masks = region_masks(images, regions, self.max_regions)
        marked = [
            draw_marks(img, m, style=self.style, alpha=self.alpha) if m else img
            for img, m in zip(images, masks, strict=True)
        ]
        texts = [[self.region_format.format(n=k + 1) for k in range(len(m))] for m in masks]
        return MaskTokens(images=marked, region_texts=texts)

    def config_dict(self) -> dict[str, Any]:
        return {
            "style": self.style,
            "alpha": self.alpha,
            "max_regions": self.max_regions,
            "region_format": self.region_format,
        }
