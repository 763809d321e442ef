"""The interface every mask tokenizer implements, and what it returns.

A mask tokenizer turns (images, regions) into :class:`MaskTokens`: the images to give the processor
(marked, for visual prompting), the text that refers to each region (coordinates, a mark number, or
``<region>`` placeholders), and, for the trained designs, the embeddings to write at the placeholders or
the mask maps to add in the vision encoder. :class:`segvlm.vlm.MaskAwareVLM` splices and injects them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from segvlm.vlm.model import MaskAwareVLM

CONFIG_NAME = "masktok_config.json"
WEIGHTS_NAME = "masktok.safetensors"
_REF = re.compile(r"\{region(\d+)\}")


@dataclass
class MaskTokens:
    """What a mask tokenizer produced for a batch of images.

    Attributes:
        images: the images to give the processor, one per input image (marked for Set-of-Mark, else as given).
        region_texts: per image, per region, the text that stands for the region in the prompt.
        placeholder: the token whose input embeddings are replaced (``"<region>"``), or None.
        placeholder_id: its id in the VLM's tokenizer, or None.
        region_embeds: per image, a (n_placeholders, D_lm) tensor added at the placeholders, in order; or None.
        encoder_masks: the mask maps to add in the vision embedding, already in the vision tower's layout
            for the whole batch (see ``VisionLayout.encoder_pixels``); or None.
    """

    images: list[Image.Image]
    region_texts: list[list[str]]
    placeholder: str | None = None
    placeholder_id: int | None = None
    region_embeds: list[torch.Tensor] | None = None
    encoder_masks: torch.Tensor | None = None

    @property
    def num_regions(self) -> list[int]:
        return [len(texts) for texts in self.region_texts]

    def prompts(self, prompt: str | Sequence[str]) -> list[str]:
        """The user prompt of every image with its region texts spliced in (see :func:`splice_regions`)."""
        prompts = [prompt] * len(self.images) if isinstance(prompt, str) else list(prompt)
        if len(prompts) != len(self.images):
            raise ValueError(f"got {len(prompts)} prompts for {len(self.images)} images; pass one or one per image")
        return [splice_regions(p, texts) for p, texts in zip(prompts, self.region_texts, strict=True)]


def splice_regions(prompt: str, region_texts: Sequence[str]) -> str:
    """Put region texts into a prompt.

    ``{region1}``, ``{region2}``... in the prompt are replaced by the text of that region (1-based). Regions
    the prompt does not name are listed in a line in front (``"Region 2: ...; Region 3: ...."``), so every
    region reaches the model.
    """
    refs = {int(m) for m in _REF.findall(prompt)}
    for ref in sorted(refs):
        if not 1 <= ref <= len(region_texts):
            raise ValueError(
                f"prompt refers to {{region{ref}}} but only {len(region_texts)} regions were given; "
                "use {region1}..{regionN} for N regions"
            )
    body = _REF.sub(lambda m: region_texts[int(m.group(1)) - 1], prompt)
    rest = [k for k in range(len(region_texts)) if k + 1 not in refs]
    if not rest:
        return body
    listing = "; ".join(f"Region {k + 1}: {region_texts[k]}" for k in rest)
    return f"{listing}.\n{body}"


class MaskTokenizer:
    """Base class: ``encode(images, regions) -> MaskTokens``.

    Designs that need the VLM (its processor, vision tower, width) get it through :meth:`bind`, which
    :class:`segvlm.vlm.MaskAwareVLM` calls once after loading the model.
    """

    design: ClassVar[str] = "base"
    tokens_per_region: ClassVar[int | None] = None
    trainable: ClassVar[bool] = False

    def __init__(self, max_regions: int = 8):
        self.max_regions = max_regions
        self.vlm: MaskAwareVLM | None = None

    def bind(self, vlm: MaskAwareVLM) -> None:
        """Attach the VLM this tokenizer feeds (its processor, model and family layout)."""
        self.vlm = vlm

    def _require_vlm(self) -> MaskAwareVLM:
        if self.vlm is None:
            raise ValueError(
                f"the {self.design!r} mask tokenizer needs a VLM; use it through "
                "MaskAwareVLM.from_pretrained(model, mask_tokenizer=...) or call tokenizer.bind(vlm) first"
            )
        return self.vlm

    def encode(self, images: Sequence[Image.Image], regions: Sequence[Sequence[Any]]) -> MaskTokens:
        raise NotImplementedError

    # -- persistence --------------------------------------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        """The constructor arguments, JSON-serialisable."""
        return {"max_regions": self.max_regions}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The trained tensors to save (none for the zero-training designs)."""
        return {}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        if tensors:
            raise ValueError(f"the {self.design!r} mask tokenizer has no weights, got {sorted(tensors)[:3]}")

    def save_pretrained(self, folder: str | Path, base_model: str | None = None) -> Path:
        """Write ``masktok_config.json`` (design, settings, base model id) and the weights as safetensors."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if base_model is None and self.vlm is not None:
            base_model = self.vlm.model_id
        record = {"design": self.design, "base_model": base_model, "config": self.config_dict()}
        (folder / CONFIG_NAME).write_text(json.dumps(record, indent=2))
        tensors = self.state_tensors()
        if tensors:
            from safetensors.torch import save_file

            save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(folder / WEIGHTS_NAME))
        return folder


def _designs() -> dict[str, type[MaskTokenizer]]:
    from segvlm.masktok.encoder_prompt import MaskEncoderPrompt
    from segvlm.masktok.pooled import MaskPooledTokenizer
    from segvlm.masktok.text import TextMaskTokenizer
    from segvlm.masktok.visual_prompt import SetOfMarkTokenizer

    return {cls.design: cls for cls in (TextMaskTokenizer, SetOfMarkTokenizer, MaskPooledTokenizer, MaskEncoderPrompt)}


def make_mask_tokenizer(design: str, **kwargs: Any) -> MaskTokenizer:
    """A fresh tokenizer of a design by name: ``"text"``, ``"set_of_mark"``, ``"pooled"`` or ``"encoder"``."""
    designs = _designs()
    if design not in designs:
        raise ValueError(f"unknown mask tokenizer design {design!r}; choose one of {sorted(designs)}")
    return designs[design](**kwargs)


def read_config(folder: str | Path) -> dict[str, Any] | None:
    """The saved record of a mask tokenizer folder, or None when the folder has none."""
    path = Path(folder) / CONFIG_NAME
    return json.loads(path.read_text()) if path.is_file() else None


def load_mask_tokenizer(folder: str | Path) -> MaskTokenizer:
    """Rebuild a tokenizer saved by :meth:`MaskTokenizer.save_pretrained`; weights load when it is bound."""
    record = read_config(folder)
    if record is None:
        raise ValueError(f"{folder} has no {CONFIG_NAME}; save one with tokenizer.save_pretrained(folder)")
    tokenizer = make_mask_tokenizer(record["design"], **record["config"])
    weights = Path(folder) / WEIGHTS_NAME
    if weights.is_file():
        from safetensors.torch import load_file

        tokenizer.load_state_tensors(load_file(str(weights)))
    return tokenizer
