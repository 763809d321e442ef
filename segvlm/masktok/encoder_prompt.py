"""Design 4: the mask inside the vision encoder (Describe Anything / Alpha-CLIP style).

A convolution with the patch size as kernel and stride reads the mask (resized, tiled and padded exactly
like the image) and its output is added to the tower's patch embedding through a forward hook, so the
whole tower sees which pixels belong to the region. The convolution starts at zero: before training the
model is exactly the base model. No extra tokens; the prompt calls the region "the highlighted region".

By default the regions of an image are merged into one mask channel, so two regions cannot be told apart
("is region 1 left of region 2?" and "is region 2 left of region 1?" become the same input).
``channels="region"`` gives every region slot its own input channel and names the regions "region 1",
"region 2"... in the prompt, for questions about several regions.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import torch
from PIL import Image
from torch import nn

from segvlm.masktok.base import MaskTokenizer, MaskTokens
from segvlm.masktok.regions import region_masks

CHANNELS = ("union", "region")


class MaskEncoderPrompt(MaskTokenizer, nn.Module):
    """A zero-initialised mask convolution added to the patch embedding.

    With ``channels="union"`` (the default) the regions of one image are merged into one mask channel, so
    the default budget is one region per image. With ``channels="region"`` the convolution has one input
    channel per region slot (``max_regions`` of them; region ``k`` is channel ``k``, an absent region an
    all-zero channel), so the tower knows which pixels are region 1 and which are region 2.

    Args:
        max_regions: budget of regions per image (and, with ``channels="region"``, input channels).
        region_text: how the prompt refers to a region; ``{n}`` becomes its number. None: "the highlighted
            region" for ``"union"``, "region {n}" for ``"region"``.
        channels: ``"union"`` or ``"region"`` (see above).
    """

    design = "encoder"
    tokens_per_region = 0
    trainable = True

    def __init__(self, max_regions: int = 1, region_text: str | None = None, channels: str = "union"):
        nn.Module.__init__(self)
        MaskTokenizer.__init__(self, max_regions=max_regions)
        if channels not in CHANNELS:
            raise ValueError(f"unknown channels {channels!r}; choose one of {CHANNELS}")
        self.channels = channels
        if region_text is None:
            region_text = "region {n}" if channels == "region" else "the highlighted region"
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
        self.conv = nn.Conv2d(
            self.in_channels, layout.vision_width, layout.patch_size, stride=layout.patch_size, bias=False
        )
        nn.init.zeros_(self.conv.weight)
        if self._pending_state is not None:
            self.load_state_dict(self._pending_state)
            self._pending_state = None
        if self._hook is not None:
            self._hook.remove()
        self._hook = layout.embedding_module().register_forward_hook(self._add_mask)

    @property
    def in_channels(self) -> int:
        """Input channels of the mask convolution: 1 for ``"union"``, ``max_regions`` for ``"region"``."""
        return self.max_regions if self.channels == "region" else 1

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
        if self.channels == "region":
            return self._encode_per_region(images, regions)
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
        texts = [[self.region_text.replace("{n}", str(k + 1)) for k in range(len(m))] for m in masks]
        return MaskTokens(images=list(images), region_texts=texts, encoder_masks=layout.encoder_pixels(grids))

    def _encode_per_region(self, images: Sequence[Image.Image], regions: Sequence[Sequence[Any]]) -> MaskTokens:
        """``channels="region"``: slot ``k``'s mask map (all zero where an image has no region ``k``) is
        input channel ``k``, each map laid out exactly as the union map is."""
        vlm = self._require_vlm()
        layout, images = vlm.layout, list(images)
        masks = region_masks(images, regions, self.max_regions)
        inputs = layout.image_inputs(images)
        slots = []  # per slot, per image: the slot's mask map in the tower's layout
        for k in range(self.max_regions):
            chosen = [[m[k]] if k < len(m) else [self._blank(img)] for m, img in zip(masks, images, strict=True)]
            grids = layout.grids(chosen, inputs, images)
            for grid, image_masks in zip(grids, masks, strict=True):
                if k >= len(image_masks):
                    grid.pixels.zero_()  # an empty slot adds nothing
            slots.append(grids)
        per_image = [
            replace(slots[0][i], pixels=torch.cat([slot[i].pixels for slot in slots], dim=1))  # (..., R, ...)
            for i in range(len(images))
        ]
        texts = [[self.region_text.replace("{n}", str(k + 1)) for k in range(len(m))] for m in masks]
        return MaskTokens(images=images, region_texts=texts, encoder_masks=layout.encoder_pixels(per_image))

    @staticmethod
    def _blank(image: Image.Image):
        import numpy as np

        width, height = image.size
        mask = np.zeros((height, width), dtype=bool)
        mask[0, 0] = True
        return mask

    # -- persistence --------------------------------------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        config: dict[str, Any] = {"max_regions": self.max_regions, "region_text": self.region_text}
        if self.channels != "union":  # the default saves what it always saved
            config["channels"] = self.channels
        return config

    def state_tensors(self) -> dict[str, torch.Tensor]:
        if self.conv is None:
            raise ValueError("the encoder tokenizer has no weights before it is bound to a VLM; bind it first")
        return dict(self.state_dict())

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        if self.conv is None:
            self._pending_state = dict(tensors)
        else:
            self.load_state_dict(tensors)
