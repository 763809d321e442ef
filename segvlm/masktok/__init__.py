"""Mask tokenizers: ways to hand a segmentation mask to a vision-language model.

Four designs share one interface, ``MaskTokenizer.encode(images, regions) -> MaskTokens``:

* :class:`TextMaskTokenizer` writes each region as coordinates in the model family's own text format;
* :class:`SetOfMarkTokenizer` draws numbered marks on the image (visual prompt);
* :class:`MaskPooledTokenizer` pools the VLM's own vision features under each mask into ``<region>`` tokens;
* :class:`MaskEncoderPrompt` adds a zero-initialised mask convolution to the vision patch embedding.

The heavy designs import torch only when they are used, so ``import segvlm.masktok`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from segvlm.lazy import lazy_getattr

_EXPORTS = {
    "MaskTokens": "segvlm.masktok.base",
    "MaskTokenizer": "segvlm.masktok.base",
    "splice_regions": "segvlm.masktok.base",
    "load_mask_tokenizer": "segvlm.masktok.base",
    "make_mask_tokenizer": "segvlm.masktok.base",
    "region_masks": "segvlm.masktok.regions",
    "TextMaskTokenizer": "segvlm.masktok.text",
    "CoordinateFormat": "segvlm.masktok.coords",
    "GenericBoxFormat": "segvlm.masktok.coords",
    "Qwen2VLBoxFormat": "segvlm.masktok.coords",
    "Qwen25VLBoxFormat": "segvlm.masktok.coords",
    "PaliGemmaLocFormat": "segvlm.masktok.coords",
    "Kosmos2PatchFormat": "segvlm.masktok.coords",
    "ParsedRegion": "segvlm.masktok.coords",
    "mask_to_polygon": "segvlm.masktok.coords",
    "polygon_to_mask": "segvlm.masktok.coords",
    "SetOfMarkTokenizer": "segvlm.masktok.visual_prompt",
    "draw_marks": "segvlm.masktok.visual_prompt",
    "MaskPooledTokenizer": "segvlm.masktok.pooled",
    "MaskEncoderPrompt": "segvlm.masktok.encoder_prompt",
    "VisionLayout": "segvlm.masktok.layouts",
    "layout_for": "segvlm.masktok.layouts",
}

__all__ = [
    "CoordinateFormat",
    "GenericBoxFormat",
    "Kosmos2PatchFormat",
    "MaskEncoderPrompt",
    "MaskPooledTokenizer",
    "MaskTokenizer",
    "MaskTokens",
    "PaliGemmaLocFormat",
    "ParsedRegion",
    "Qwen25VLBoxFormat",
    "Qwen2VLBoxFormat",
    "SetOfMarkTokenizer",
    "TextMaskTokenizer",
    "VisionLayout",
    "draw_marks",
    "layout_for",
    "load_mask_tokenizer",
    "make_mask_tokenizer",
    "mask_to_polygon",
    "polygon_to_mask",
    "region_masks",
    "splice_regions",
]

if TYPE_CHECKING:
    from segvlm.masktok.base import (
        MaskTokenizer,
        MaskTokens,
        load_mask_tokenizer,
        make_mask_tokenizer,
        splice_regions,
    )
    from segvlm.masktok.coords import (
        CoordinateFormat,
        GenericBoxFormat,
        Kosmos2PatchFormat,
        PaliGemmaLocFormat,
        ParsedRegion,
        Qwen2VLBoxFormat,
        Qwen25VLBoxFormat,
        mask_to_polygon,
        polygon_to_mask,
    )
    from segvlm.masktok.encoder_prompt import MaskEncoderPrompt
    from segvlm.masktok.layouts import VisionLayout, layout_for
    from segvlm.masktok.pooled import MaskPooledTokenizer
    from segvlm.masktok.regions import region_masks
    from segvlm.masktok.text import TextMaskTokenizer
    from segvlm.masktok.visual_prompt import SetOfMarkTokenizer, draw_marks


__getattr__ = lazy_getattr(__name__, _EXPORTS)
