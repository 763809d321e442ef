"""Design 4: the mask inside the vision encoder (Describe Anything / Alpha-CLIP style).

A convolution with the patch size as kernel and stride reads the mask (resized, tiled and padded exactly
like the image) and its output is added to the tower's patch embedding through a forward hook, so the
whole tower sees which pixels belong to the region. The convolution starts at zero: before training the
model is exactly the base model. No extra tokens; the prompt calls the region "the highlighted region".
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from PIL import Image
from torch import nn

from segvlm.masktok.base import MaskTokenizer, MaskTokens
from segvlm.masktok.regions import region_masks


class MaskEncoderPrompt(MaskTokenizer, nn.Module):
    """A zero-initialised mask convolution added to the patch embedding.

    Several regions of one image are merged into one mask channel (their union), so the default budget is
    one region per image; name regions apart with another design when you need several.

    Args:
        max_regions: budget of regions per image.
        region_text: how the prompt refers to the region.
    """

    design = "encoder"
    tokens_per_region = 0
    trainable = True

    def __init__(self, max_regions: int = 1, region_text: str = "the highlighted region"):
        nn.Module.__init__(self)
        MaskTokenizer.__init__(self, max_regions=max_regions)
        self.region_text = region_text
        self.conv: nn.Conv2d | None = None
        self._pending: torch.Tensor | None = None
        self._pending_state: dict[str, torch.Tensor] | None = None
        self._hook = None

    def bind(self, vlm) -> None:
        """Build the zero conv for this tower and hook it onto the patch embedding."""
        super().bind(vlm)
        layout = vlm.layout
        # no bias: pixels outside every mask (and images without regions) add exactly nothing
        self.conv = nn.Conv2d(1, layout.vision_width, layout.patch_size, stride=layout.patch_size, bias=False)
        nn.init.zeros_(self.conv.weight)
        if self._pending_state is not None:
            self.load_state_dict(self._pending_state)
            self._pending_state = None
        if self._hook is not None:
            self._hook.remove()
        self._hook = layout.embedding_module().register_forward_hook(self._add_mask)

    def _add_mask(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if self._pending is None:
            return None
        return self.vlm.layout.add_mask_embedding(output, self._pending.to(output.device), self.conv)

    @contextmanager
    def active(self, tokens: MaskTokens) -> Iterator[None]:
        """Within this block, every vision forward adds the masks of ``tokens``."""
        self._pending = tokens.encoder_masks
        try:
            yield
        finally:
            self._pending = None

    def encode(self, images: Sequence[Image.Image], regions: Sequence[Sequence[Any]]) -> MaskTokens:
        vlm = self._require_vlm()
        masks = region_masks(images, regions, self.max_regions)
        layout = vlm.layout
        empty = [not m for m in masks]
        # an image without regions contributes an all-zero mask map: no change to its embedding
        filled = [m if m else [self._blank(img)] for m, img in zip(masks, images, strict=True)]
        grids = layout.grids(filled, layout.image_inputs(list(images)), list(images))
        for grid, is_empty in zip(grids, empty, strict=True):
            if is_empty:
                grid.pixels.zero_()
        texts = [[self.region_text] * len(m) for m in masks]
        return MaskTokens(images=list(images), region_texts=texts, encoder_masks=layout.encoder_pixels(grids))

    @staticmethod
    def _blank(image: Image.Image):
        import numpy as np

        width, height = image.size
        mask = np.zeros((height, width), dtype=bool)
        mask[0, 0] = True
        return mask

    # -- persistence --------------------------------------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        return {"max_regions": self.max_regions, "region_text": self.region_text}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        if self.conv is None:
            raise ValueError("the encoder tokenizer has no weights before it is bound to a VLM; bind it first")
        return dict(self.state_dict())

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        if self.conv is None:
            self._pending_state = dict(tensors)
        else:
            self.load_state_dict(tensors)
