"""Design 3: mask-pooled region embeddings (Osprey / GPT4RoI style).

The VLM's own vision features are averaged under each mask (several tower layers, or the LM-ready merged
image tokens), projected to the LM width by a small trainable MLP, and written into ``inputs_embeds`` at
``<region>`` placeholder tokens; a second placeholder per region carries a mask-shape embedding (a coarse
copy of the mask plus its box). Both projectors end in a zero-initialised layer, so before training the
placeholders keep their token embedding and the model is exactly the base model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from segvlm.masktok.base import MaskTokenizer, MaskTokens
from segvlm.masktok.regions import region_masks

FEATURE_SOURCES = ("vision", "merged")


def zero_mlp(in_dim: int, out_dim: int) -> nn.Sequential:
    """Linear -> GELU -> Linear whose last layer starts at zero (output 0 until trained)."""
    mlp = nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))
    nn.init.zeros_(mlp[2].weight)
    nn.init.zeros_(mlp[2].bias)
    return mlp


def masked_mean(features: torch.Tensor, coverage: torch.Tensor) -> torch.Tensor:
    """Coverage-weighted mean of token features per region.

    Args:
        features: (P, D) token features.
        coverage: (R, P) fraction of each token inside each region.
    Returns:
        (R, D); a region covering exactly one token gets exactly that token's feature.
    """
    weights = coverage / coverage.sum(-1, keepdim=True).clamp_min(1e-12)  # (R, P)
    return weights.to(features.dtype) @ features  # (R, D)


def shape_descriptor(mask: np.ndarray, size: int) -> np.ndarray:
    """A (size*size + 4,) vector: the mask area-resampled to size x size, then its box in [0, 1]."""
    height, width = mask.shape
    small = Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.Resampling.BOX)
    ys, xs = np.nonzero(mask)
    box = [xs.min() / width, ys.min() / height, (xs.max() + 1) / width, (ys.max() + 1) / height]
    return np.concatenate([np.asarray(small, dtype=np.float32).reshape(-1) / 255.0, np.asarray(box, np.float32)])


class MaskPooledTokenizer(MaskTokenizer, nn.Module):
    """Region tokens from vision features pooled under each mask.

    Args:
        feature_layers: tower hidden-state indices to pool and concatenate (``feature_source="vision"``).
        feature_source: ``"vision"`` (patch-level tower features, before merging) or ``"merged"`` (the LM
            image tokens after the family's merge and projector).
        shape_token: add a second placeholder per region carrying the mask-shape embedding.
        shape_size: side of the coarse mask copy in the shape embedding.
        placeholder: the placeholder token; added to the VLM's tokenizer when missing.
        max_regions: budget of regions per image.
    """

    design = "pooled"
    trainable = True

    def __init__(
        self,
        feature_layers: Sequence[int] = (-2, -1),
        feature_source: str = "vision",
        shape_token: bool = True,
        shape_size: int = 16,
        placeholder: str = "<region>",
        max_regions: int = 8,
    ):
        nn.Module.__init__(self)
        MaskTokenizer.__init__(self, max_regions=max_regions)
        if feature_source not in FEATURE_SOURCES:
            raise ValueError(f"feature_source must be one of {FEATURE_SOURCES}, got {feature_source!r}")
        self.feature_layers = tuple(int(k) for k in feature_layers)
        self.feature_source, self.shape_token, self.shape_size = feature_source, shape_token, shape_size
        self.placeholder = placeholder
        self.placeholder_id: int | None = None
        self.feature_proj: nn.Sequential | None = None
        self.shape_proj: nn.Sequential | None = None
        self._pending_state: dict[str, torch.Tensor] | None = None

    @property
    def tokens_per_region(self) -> int:  # type: ignore[override]
        return 2 if self.shape_token else 1

    def bind(self, vlm) -> None:
        """Build the projectors for this VLM's widths and make sure the placeholder token exists."""
        super().bind(vlm)
        layout = vlm.layout
        vision = self.feature_source == "vision"
        in_dim = len(self.feature_layers) * layout.vision_width if vision else layout.text_width
        self.feature_proj = zero_mlp(in_dim, layout.text_width)
        self.shape_proj = zero_mlp(self.shape_size**2 + 4, layout.text_width) if self.shape_token else None
        self.placeholder_id = vlm.ensure_token(self.placeholder)
        if self._pending_state is not None:
            self.load_state_dict(self._pending_state)
            self._pending_state = None

    def encode(self, images: Sequence[Image.Image], regions: Sequence[Sequence[Any]]) -> MaskTokens:
        vlm = self._require_vlm()
        masks = region_masks(images, regions, self.max_regions)
        layout = vlm.layout
        inputs = layout.image_inputs(list(images))
        grids = layout.grids(masks, inputs, list(images))
        with torch.no_grad():  # the VLM is frozen; gradients reach only the projectors
            features = layout.features(inputs, self.feature_layers)
        embeds = []
        for k, (grid, image_masks) in enumerate(zip(grids, masks, strict=True)):
            if self.feature_source == "vision":
                feats, coverage = features.patches[k], grid.coverage  # (P, L*Dv), (R, P)
            else:
                feats, coverage = features.merged[k], grid.merged  # (M, D), (R, M)
            if len(image_masks) == 0:
                embeds.append(torch.zeros(0, layout.text_width))
                continue
            pooled = masked_mean(feats.float(), coverage.float())  # (R, Din)
            tokens = self.feature_proj(pooled)  # (R, D)
            if self.shape_proj is not None:
                shapes = torch.from_numpy(np.stack([shape_descriptor(m, self.shape_size) for m in image_masks]))
                tokens = torch.stack([tokens, self.shape_proj(shapes)], dim=1).flatten(0, 1)  # (R*2, D)
            embeds.append(tokens)
        texts = [[self.placeholder * self.tokens_per_region] * len(m) for m in masks]
        return MaskTokens(
            images=list(images),
            region_texts=texts,
            placeholder=self.placeholder,
            placeholder_id=self.placeholder_id,
            region_embeds=embeds,
        )

    # -- persistence --------------------------------------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        return {
            "feature_layers": list(self.feature_layers),
            "feature_source": self.feature_source,
            "shape_token": self.shape_token,
            "shape_size": self.shape_size,
            "placeholder": self.placeholder,
            "max_regions": self.max_regions,
        }

    def state_tensors(self) -> dict[str, torch.Tensor]:
        if self.feature_proj is None:
            raise ValueError("the pooled tokenizer has no weights before it is bound to a VLM; bind it first")
        return dict(self.state_dict())

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        if self.feature_proj is None:
            self._pending_state = dict(tensors)  # projector sizes are known once bound
        else:
            self.load_state_dict(tensors)
