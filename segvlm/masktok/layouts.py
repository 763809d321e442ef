"""Where each mask lands among a VLM's vision tokens, per model family.

A mask must go through exactly the resize, tiling, cropping and padding its image goes through, then the
family's patch merging. Rather than re-deriving each processor's geometry, the mask is drawn as a
white-on-black image and pushed through the family's *own* image processor (normalisation off), so it is
resized, tiled and cropped like the image by construction; it is then cut into the tower's patches and
merged the way the model merges (Idefics3/SmolVLM pixel shuffle via the model's own connector, Qwen2-VL
2x2 groups of consecutive patches, LLaVA none).

Each layout also extracts the tower's patch features (several layers) and the LM-ready image tokens,
and knows which module embeds patches, for the mask-in-encoder design.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn


@dataclass
class MaskGrid:
    """One image's regions on its vision tokens.

    Attributes:
        coverage: (R, P) fraction of each vision patch inside each region, patches in the tower's order.
        merged: (R, M) the same for the LM image tokens, after the family's patch merging.
        pixels: the union of the regions at pixel level, in the layout the mask-in-encoder hook adds
            (Idefics3 (n_tiles, 1, H, W); Qwen2-VL (P, 1, ps, ps); LLaVA (1, 1, S, S)).
    """

    coverage: torch.Tensor
    merged: torch.Tensor
    pixels: torch.Tensor


@dataclass
class VisionFeatures:
    """The tower's features of every image of a batch.

    Attributes:
        patches: per image, (P, L * D_vision): hidden states of the chosen layers, concatenated.
        merged: per image, (M, D_lm): the image tokens the LM sees.
    """

    patches: list[torch.Tensor]
    merged: list[torch.Tensor]


def _mask_images(masks: list[np.ndarray]) -> list[Image.Image]:
    return [Image.fromarray(m.astype(np.uint8) * 255).convert("RGB") for m in masks]


def _coverage(binary: torch.Tensor, soft: torch.Tensor, reduce) -> torch.Tensor:
    """``reduce`` (pixels -> per-patch mean) of the binarised mask; the soft mask for regions that the
    resize shrank below half a pixel everywhere, so a tiny region still lands on its patch."""
    hard = reduce(binary.float())  # (R, P)
    empty = hard.sum(-1) == 0  # (R,)
    if empty.any():
        hard[empty] = reduce(soft[empty].float())
    return hard


class VisionLayout:
    """Base class; one subclass per family, named by the family's record
    (:attr:`segvlm.vlm.families.VLMFamily.layout`). Build with :func:`layout_for`."""

    def __init__(self, model: nn.Module, processor: Any):
        self.model, self.processor = model, processor
        self.image_processor = processor.image_processor

    # -- what subclasses provide ----------------------------------------------------------------------------
    @property
    def patch_size(self) -> int:
        raise NotImplementedError

    @property
    def vision_width(self) -> int:
        raise NotImplementedError

    @property
    def text_width(self) -> int:
        return self.model.config.get_text_config().hidden_size

    def processor_images(self, images: list[Any]) -> Any:
        """How the processor wants a batch of one-image samples."""
        return list(images)

    def image_inputs(self, images: list[Image.Image]) -> dict[str, torch.Tensor]:
        """The processor's tensors for these images, as in the full text+image call."""
        return dict(self.image_processor(images=self.processor_images(images), return_tensors="pt"))

    def mask_pixels(self, image: Image.Image, masks: list[np.ndarray]) -> torch.Tensor:
        """The masks through the image processor (values in [0, 1]), in ``pixel_values``' layout."""
        out = self.image_processor(
            images=self.processor_images(_mask_images(masks)), do_normalize=False, return_tensors="pt"
        )
        return out["pixel_values"].float()

    def grids(
        self, masks: list[list[np.ndarray]], inputs: dict[str, torch.Tensor], images: list[Image.Image]
    ) -> list[MaskGrid]:
        raise NotImplementedError

    def features(self, inputs: dict[str, torch.Tensor], layers: tuple[int, ...]) -> VisionFeatures:
        raise NotImplementedError

    def embedding_module(self) -> nn.Module:
        """The module whose output is the patch embedding (the mask-in-encoder hook point)."""
        raise NotImplementedError

    def add_mask_embedding(self, output: torch.Tensor, pixels: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
        """``output`` of :meth:`embedding_module` plus ``conv`` of the mask ``pixels`` at each patch."""
        raise NotImplementedError

    def encoder_pixels(self, grids: list[MaskGrid]) -> torch.Tensor:
        """The mask maps of a whole batch, concatenated the way the tower batches images."""
        return torch.cat([g.pixels for g in grids], dim=0)

    @staticmethod
    def _layers(hidden_states: tuple[torch.Tensor, ...], layers: tuple[int, ...]) -> torch.Tensor:
        return torch.cat([hidden_states[k] for k in layers], dim=-1)


class Idefics3Layout(VisionLayout):
    """Idefics3 / SmolVLM: image split into square tiles (+ a global tile), padded to the batch's largest,
    SigLIP patches, then pixel shuffle with ``scale_factor`` (s x s patches -> one LM token)."""

    @property
    def patch_size(self):
        return self.model.config.vision_config.patch_size

    @property
    def vision_width(self):
        return self.model.config.vision_config.hidden_size

    def processor_images(self, images):
        return [[img] for img in images]

    def _connector(self):
        return self.model.model.connector

    def grids(self, masks, inputs, images):
        height, width = inputs["pixel_values"].shape[-2:]
        ps, scale = self.patch_size, self.model.config.scale_factor
        out = []
        for image, image_masks in zip(images, masks, strict=True):
            soft = self.mask_pixels(image, image_masks)[:, :, 0]  # (R, n, h, w)
            soft = F.pad(soft, (0, width - soft.shape[-1], 0, height - soft.shape[-2]))  # (R, n, H, W)
            regions, tiles = soft.shape[:2]

            def per_patch(x):
                pooled = F.avg_pool2d(x.reshape(-1, 1, height, width), ps)  # (R*n, 1, H/ps, W/ps)
                return pooled.reshape(x.shape[0], -1)  # (R, n*P)

            coverage = _coverage(soft > 0.5, soft, per_patch)  # (R, n*P)
            per_tile = coverage.reshape(regions * tiles, -1, 1)  # (R*n, P, 1)
            shuffled = self._connector().pixel_shuffle(per_tile, scale)  # (R*n, P/s^2, s^2)
            merged = shuffled.mean(-1).reshape(regions, -1)  # (R, n*M)
            pixels = (soft > 0.5).any(0).float()[:, None]  # (n, 1, H, W)
            out.append(MaskGrid(coverage=coverage, merged=merged, pixels=pixels))
        return out

    def features(self, inputs, layers):
        pixel_values = inputs["pixel_values"]  # (B, N, 3, H, W)
        outputs = self.model.model.get_image_features(
            pixel_values, inputs.get("pixel_attention_mask"), output_hidden_states=True
        )
        real = (pixel_values != 0).flatten(2).any(-1)  # (B, N) the model drops all-zero padding tiles
        real[0, 0] |= not real.any()
        tiles = real.sum(1).tolist()
        stacked = self._layers(outputs.hidden_states, layers)  # (n_real, P, L*D)
        patches = [t.reshape(-1, t.shape[-1]) for t in stacked.split(tiles)]
        return VisionFeatures(patches=patches, merged=list(outputs.pooler_output))

    def embedding_module(self):
        return self.model.model.vision_model.embeddings

    def add_mask_embedding(self, output, pixels, conv):
        extra = conv(pixels.to(conv.weight.dtype)).flatten(2).transpose(1, 2)  # (n, P, D)
        return output + extra.to(output.dtype)


class Qwen2VLLayout(VisionLayout):
    """Qwen2-VL: smart resize to multiples of ``patch * merge``, patches flattened in 2x2 merge order, then
    each 4 consecutive patches merged into one LM token (``spatial_merge_size`` 2)."""

    @property
    def _vision_config(self):
        return self.model.config.vision_config

    @property
    def patch_size(self):
        return self._vision_config.patch_size

    @property
    def vision_width(self):
        cfg = self._vision_config
        return getattr(cfg, "embed_dim", None) or cfg.hidden_size

    @property
    def merge(self) -> int:
        return self._vision_config.spatial_merge_size

    def grids(self, masks, inputs, images):
        ps, m2 = self.patch_size, self.merge**2
        out = []
        for image, image_masks in zip(images, masks, strict=True):
            flat = self.mask_pixels(image, image_masks)  # (R*P, C*T*ps*ps)
            regions = len(image_masks)
            soft = flat.reshape(regions, flat.shape[0] // regions, -1, ps, ps)[:, :, 0]  # (R, P, ps, ps)
            coverage = _coverage(soft > 0.5, soft, lambda x: x.mean((-1, -2)))  # (R, P)
            merged = coverage.reshape(regions, -1, m2).mean(-1)  # (R, P/4)
            pixels = (soft > 0.5).any(0).float()[:, None]  # (P, 1, ps, ps)
            out.append(MaskGrid(coverage=coverage, merged=merged, pixels=pixels))
        return out

    def _unpermute(self, hidden: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        return hidden

    def features(self, inputs, layers):
        grid_thw = inputs["image_grid_thw"]  # (B, 3)
        visual = self.model.model.visual
        outputs = visual(inputs["pixel_values"].to(visual.dtype), grid_thw=grid_thw, output_hidden_states=True)
        hidden = [self._unpermute(h, grid_thw) for h in outputs.hidden_states]
        stacked = self._layers(tuple(hidden), layers)  # (sum P, L*D)
        patches = list(stacked.split(grid_thw.prod(-1).tolist()))
        merged = list(outputs.pooler_output.split((grid_thw.prod(-1) // self.merge**2).tolist()))
        return VisionFeatures(patches=patches, merged=merged)

    def embedding_module(self):
        return self.model.model.visual.patch_embed

    def add_mask_embedding(self, output, pixels, conv):
        extra = conv(pixels.to(conv.weight.dtype)).flatten(1)  # (P, D)
        return output + extra.to(output.dtype)


class Qwen25VLLayout(Qwen2VLLayout):
    """Qwen2.5-VL: as Qwen2-VL, but the tower reorders merge units into attention windows; intermediate
    hidden states come out in window order and are put back in patch order here."""

    @property
    def vision_width(self):
        return self._vision_config.hidden_size

    def _unpermute(self, hidden, grid_thw):
        from transformers.vision_utils import get_vision_window_index

        cfg = self._vision_config
        window_index, _ = get_vision_window_index(grid_thw, cfg.spatial_merge_size, cfg.window_size, cfg.patch_size)
        units = hidden.reshape(-1, self.merge**2, hidden.shape[-1])  # (P/4, 4, D) in window order
        return units[torch.argsort(window_index)].reshape(hidden.shape)  # (P, D) in patch order


class LlavaLayout(VisionLayout):
    """LLaVA: CLIP resize + centre crop to a fixed square, one token per patch (CLS dropped by the
    ``default`` feature strategy), no merging."""

    @property
    def _vision_config(self):
        return self.model.config.vision_config

    @property
    def patch_size(self):
        return self._vision_config.patch_size

    @property
    def vision_width(self):
        return self._vision_config.hidden_size

    @property
    def _keeps_cls(self) -> bool:
        return self.model.config.vision_feature_select_strategy == "full"

    def grids(self, masks, inputs, images):
        ps = self.patch_size
        out = []
        for image, image_masks in zip(images, masks, strict=True):
            soft = self.mask_pixels(image, image_masks)[:, 0]  # (R, S, S)
            coverage = _coverage(soft > 0.5, soft, lambda x: F.avg_pool2d(x[:, None], ps).flatten(1))  # (R, P)
            merged = F.pad(coverage, (1, 0)) if self._keeps_cls else coverage  # (R, M)
            pixels = (soft > 0.5).any(0).float()[None, None]  # (1, 1, S, S)
            out.append(MaskGrid(coverage=coverage, merged=merged, pixels=pixels))
        return out

    def features(self, inputs, layers):
        cfg = self.model.config
        outputs = self.model.model.get_image_features(
            inputs["pixel_values"],
            vision_feature_layer=cfg.vision_feature_layer,
            vision_feature_select_strategy=cfg.vision_feature_select_strategy,
            output_hidden_states=True,
        )
        stacked = self._layers(outputs.hidden_states, layers)[:, 1:]  # (B, P, L*D) without CLS
        merged = [f.reshape(-1, f.shape[-1]) for f in outputs.pooler_output]
        return VisionFeatures(patches=list(stacked), merged=merged)

    def embedding_module(self):
        tower = self.model.model.vision_tower
        return tower.vision_model.embeddings if hasattr(tower, "vision_model") else tower.embeddings

    def add_mask_embedding(self, output, pixels, conv):
        extra = conv(pixels.to(conv.weight.dtype)).flatten(2).transpose(1, 2)  # (B, P, D)
        return torch.cat([output[:, :1], output[:, 1:] + extra.to(output.dtype)], dim=1)


def layout_for(model: nn.Module, processor: Any) -> VisionLayout:
    """The layout of ``model``'s family (its :class:`~segvlm.vlm.families.VLMFamily` record); a ValueError
    listing the supported model types otherwise."""
    from segvlm.vlm.families import family_for, layout_model_types

    model_type = model.config.model_type
    family = family_for(model_type)
    if family is not None and family.layout is not None:
        return family.layout_class()(model, processor)
    raise ValueError(
        f"no vision layout for model_type {model_type!r}; the pooled and encoder designs support "
        f"{layout_model_types()} (the text and set_of_mark designs work with any VLM)"
    )
