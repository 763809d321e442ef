"""Design 1: regions as coordinates in text, zero training, any VLM.

The box (and optionally a compact polygon) of each mask is written in the family's own grounding syntax
(:mod:`segvlm.masktok.coords`), so a model that was trained on grounding reads it natively. It keeps only
the box (plus a few polygon vertices) of the mask; costs ~4-20 tokens per region.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from segvlm.masktok.base import MaskTokenizer, MaskTokens
from segvlm.masktok.coords import FORMATS, CoordinateFormat, ParsedRegion, mask_to_polygon
from segvlm.masktok.regions import region_masks
from segvlm.vlm.families import coordinate_format, family_for


class TextMaskTokenizer(MaskTokenizer):
    """Write each region as text coordinates; :meth:`decode` reads them back.

    Args:
        format: a :class:`CoordinateFormat`, a format name (``"generic"``, ``"qwen2_vl"``, ``"qwen2_5_vl"``,
            ``"paligemma"``, ``"kosmos2"``), or ``"auto"`` to take the bound VLM family's own format (its
            :attr:`segvlm.vlm.families.VLMFamily.coordinates`; ``"generic"`` for a family segvlm does not know).
        polygon_points: when > 0, append a ``<poly>`` of this many vertices after the box.
        max_regions: budget of regions per image.
    """

    design = "text"

    def __init__(self, format: str | CoordinateFormat = "auto", polygon_points: int = 0, max_regions: int = 16):
        super().__init__(max_regions=max_regions)
        self.format_name = format if isinstance(format, str) else format.name
        self.format: CoordinateFormat | None = (
            None if format == "auto" else (format if isinstance(format, CoordinateFormat) else FORMATS[format]())
        )
        self.polygon_points = polygon_points

    def bind(self, vlm) -> None:
        super().bind(vlm)
        if self.format_name == "auto":
            family = family_for(vlm.model_type)
            name = family.coordinates if family is not None else "generic"
            image_processor = getattr(getattr(vlm, "processor", None), "image_processor", None)
            self.format = coordinate_format(name, image_processor)

    @property
    def coordinate_format(self) -> CoordinateFormat:
        return self.format if self.format is not None else FORMATS["generic"]()

    def region_text(self, mask, width: int, height: int) -> str:
        """The text for one (H, W) mask: its tight box, then the polygon if asked for."""
        import numpy as np

        ys, xs = np.nonzero(mask)
        box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
        fmt = self.coordinate_format
        text = fmt.format_box(box, width, height)
        if self.polygon_points > 0:
            text += fmt.format_polygon(mask_to_polygon(mask, self.polygon_points), width, height)
        return text

    def encode(self, images: Sequence[Any], regions: Sequence[Sequence[Any]]) -> MaskTokens:
        masks = region_masks(images, regions, self.max_regions)
        texts = []
        for image, image_masks in zip(images, masks, strict=True):
            width, height = image.size
            texts.append([self.region_text(m, width, height) for m in image_masks])
        return MaskTokens(images=list(images), region_texts=texts)

    def decode(self, text: str, image_size: tuple[int, int]) -> list[ParsedRegion]:
        """Boxes/polygons in ``text`` (a prompt or a model answer), in pixels of an image of (W, H)."""
        width, height = image_size
        return self.coordinate_format.parse(text, width, height)

    def config_dict(self) -> dict[str, Any]:
        return {"format": self.format_name, "polygon_points": self.polygon_points, "max_regions": self.max_regions}
