"""A VLM that takes regions (masks) next to images, through any mask tokenizer design.

:class:`MaskAwareVLM` loads a SmolVLM / Idefics3, Qwen2-VL, Qwen2.5-VL or LLaVA checkpoint with
transformers, binds a mask tokenizer to it, and for each call: encodes the regions, splices their text into
the prompt, runs the processor, and while the model runs adds the region embeddings at the placeholder
tokens (pooled design, via a hook on the input embedding) or the mask maps in the vision tower (encoder
design). The base model's weights are never changed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from segvlm.masktok.base import (
    MaskTokenizer,
    MaskTokens,
    load_mask_tokenizer,
    make_mask_tokenizer,
    read_config,
)
from segvlm.vlm.families import GENERIC, VLMFamily, family_for

ADDED_TOKENS_NAME = "masktok_added_tokens.safetensors"


@dataclass
class VLMInputs:
    """One prepared batch.

    Attributes:
        inputs: the processor's tensors (``input_ids``, ``attention_mask``, ``pixel_values``...).
        tokens: what the mask tokenizer produced (texts, marked images, embeddings or mask maps).
        prompts: the full prompts given to the processor, after splicing and templating.
    """

    inputs: dict[str, torch.Tensor]
    tokens: MaskTokens
    prompts: list[str]


def _as_batch(images: Any, regions: Any) -> tuple[list[Image.Image], list[list[Any]]]:
    """Accept one image with its regions, or lists of both."""
    if isinstance(images, Image.Image):
        return [images], [list(regions)]
    return list(images), [list(r) for r in regions]


class MaskAwareVLM:
    """A transformers VLM plus a mask tokenizer. Build with :meth:`from_pretrained`.

    Args:
        model: an ``AutoModelForImageTextToText`` model (eval mode; not modified).
        processor: its ``AutoProcessor``.
        mask_tokenizer: a design instance (it is bound to this VLM here).
        model_id: the id or folder the base model came from (saved next to the tokenizer's weights).
    """

    def __init__(self, model: torch.nn.Module, processor: Any, mask_tokenizer: MaskTokenizer, model_id: str = ""):
        self.model, self.processor, self.model_id = model, processor, model_id
        self.model_type: str = model.config.model_type
        #: the family's record (prompt, coordinates, layout, module names); None for a family segvlm does not know
        self.family: VLMFamily | None = family_for(self.model_type)
        self.prompt_format = self.family.prompt if self.family is not None else GENERIC
        self.added_tokens: list[str] = []
        self._layout = None
        self.mask_tokenizer = mask_tokenizer
        mask_tokenizer.bind(self)
        if isinstance(mask_tokenizer, torch.nn.Module):
            mask_tokenizer.to(self.device)

    # -- loading and saving ----------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        model_id_or_folder: str | Path,
        mask_tokenizer: str | Path | MaskTokenizer | None = None,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        **model_kwargs: Any,
    ) -> MaskAwareVLM:
        """Load a base VLM and a mask tokenizer.

        Args:
            model_id_or_folder: a hub id or folder of the base model, or a folder written by
                :meth:`save_pretrained` (then the base model id and the tokenizer come from it).
            mask_tokenizer: a design name (``"text"``, ``"set_of_mark"``, ``"pooled"``, ``"encoder"``), a
                folder saved by ``MaskTokenizer.save_pretrained``, or an instance; default ``"set_of_mark"``.
            dtype, device: passed on to the model.
        """
        from transformers import AutoModelForImageTextToText, AutoProcessor

        from segvlm.resolve import resolve_model

        base, added = resolve_model(str(model_id_or_folder)), None
        record = read_config(base) if Path(base).is_dir() else None
        if record is not None:
            if mask_tokenizer is None:
                mask_tokenizer = base
            added_path = Path(base) / ADDED_TOKENS_NAME
            added = added_path if added_path.is_file() else None
            if not record.get("base_model"):
                raise ValueError(f"{base} holds a mask tokenizer without a base model id; pass the base model id")
            base = record["base_model"]
        if mask_tokenizer is None:
            mask_tokenizer = "set_of_mark"
        if isinstance(mask_tokenizer, (str, Path)):
            path = Path(mask_tokenizer)
            mask_tokenizer = load_mask_tokenizer(path) if path.is_dir() else make_mask_tokenizer(str(mask_tokenizer))
        model = AutoModelForImageTextToText.from_pretrained(base, dtype=dtype, **model_kwargs).eval()
        if device is not None:
            model.to(device)
        processor = AutoProcessor.from_pretrained(base)
        vlm = cls(model, processor, mask_tokenizer, model_id=base)
        if added is not None:
            vlm._load_added_tokens(added)
        return vlm

    def save_pretrained(self, folder: str | Path) -> Path:
        """Save the mask tokenizer's settings and trained weights (safetensors) with the base model id;
        the base model itself is not copied. Reload with ``MaskAwareVLM.from_pretrained(folder)``."""
        folder = self.mask_tokenizer.save_pretrained(folder, base_model=self.model_id)
        if self.added_tokens:
            from safetensors.torch import save_file

            table = self.model.get_input_embeddings().weight
            rows = {
                tok: table[self.tokenizer.convert_tokens_to_ids(tok)].detach().clone().cpu()
                for tok in self.added_tokens
            }
            save_file(rows, str(folder / ADDED_TOKENS_NAME))
        return folder

    def _load_added_tokens(self, path: Path) -> None:
        from safetensors.torch import load_file

        table = self.model.get_input_embeddings().weight
        with torch.no_grad():
            for tok, row in load_file(str(path)).items():
                table[self.ensure_token(tok)] = row.to(table.dtype)

    # -- model facts -------------------------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def layout(self):
        """The family's :class:`segvlm.masktok.layouts.VisionLayout` (mask-to-token geometry)."""
        if self._layout is None:
            from segvlm.masktok.layouts import layout_for

            self._layout = layout_for(self.model, self.processor)
        return self._layout

    def ensure_token(self, token: str) -> int:
        """The id of ``token``, adding it as a special token (and an embedding row) when it is missing."""
        ids = self.tokenizer.convert_tokens_to_ids(token)
        if ids is not None and ids != self.tokenizer.unk_token_id:
            return ids
        self.tokenizer.add_special_tokens({"additional_special_tokens": [token]})
        self.model.resize_token_embeddings(len(self.tokenizer))
        self.added_tokens.append(token)
        return self.tokenizer.convert_tokens_to_ids(token)

    # -- inputs ------------------------------------------------------------------------------------------------
    def render(self, text: str) -> str:
        """One user turn with one image: the processor's chat template, or the family's own format."""
        if getattr(self.processor, "chat_template", None):
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
            return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.prompt_format.render(text)

    def prepare(
        self, images: Image.Image | Sequence[Image.Image], regions: Sequence[Any], prompt: str | Sequence[str]
    ) -> VLMInputs:
        """Encode regions, splice them into the prompt(s), run the processor.

        Args:
            images: one image, or one image per sample.
            regions: the regions of that image, or one list per image (masks, RLE, ObjectMask, boxes).
            prompt: one prompt for all, or one per image; ``{region1}``... name regions (see ``splice_regions``).
        """
        images, regions = _as_batch(images, regions)
        tokens = self.mask_tokenizer.encode(images, regions)
        prompts = [self.render(p) for p in tokens.prompts(prompt)]
        batch_images = [[img] for img in tokens.images] if self.prompt_format.nested_images else tokens.images
        inputs = self.processor(text=prompts, images=batch_images, return_tensors="pt", padding=True)
        inputs = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in inputs.items()}
        if tokens.region_embeds is not None:
            found = (inputs["input_ids"] == tokens.placeholder_id).sum(-1).tolist()  # (B,)
            wanted = [e.shape[0] for e in tokens.region_embeds]
            if found != wanted:
                raise ValueError(
                    f"placeholder {tokens.placeholder!r} appears {found} times per sample but {wanted} region "
                    "embeddings were made; keep the {regionN} references (or none) and do not write the "
                    "placeholder token in the prompt yourself"
                )
        return VLMInputs(inputs=inputs, tokens=tokens, prompts=prompts)

    # -- adapters ----------------------------------------------------------------------------------------------
    @contextmanager
    def adapters(self, tokens: MaskTokens) -> Iterator[None]:
        """While active, the model sees the regions: embeddings added at placeholders, masks in the tower."""
        with ExitStack() as stack:
            if tokens.region_embeds is not None:
                stack.enter_context(self._inject_regions(tokens))
            if tokens.encoder_masks is not None:
                stack.enter_context(self.mask_tokenizer.active(tokens))
            yield

    @contextmanager
    def _inject_regions(self, tokens: MaskTokens) -> Iterator[None]:
        embeds = torch.cat([e.reshape(-1, e.shape[-1]) for e in tokens.region_embeds])  # (sum R*t, D)
        done = False

        def hook(module, args, output):
            nonlocal done
            ids = args[0]
            where = ids == tokens.placeholder_id  # (B, S)
            if done or int(where.sum()) != embeds.shape[0]:
                return None
            done = True  # only the prefill; generated tokens are never regions
            out = output.clone()
            out[where] = out[where] + embeds.to(out.device, out.dtype)  # row-major: sample, then position
            return out

        handle = self.model.get_input_embeddings().register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    # -- running -----------------------------------------------------------------------------------------------
    def input_embeddings(self, prepared: VLMInputs) -> torch.Tensor:
        """The text embeddings the LM gets for ``prepared`` (before image features are scattered in):
        (B, S, D), with the region embeddings added at the placeholders."""
        with self.adapters(prepared.tokens):
            return self.model.get_input_embeddings()(prepared.inputs["input_ids"])

    def logits(self, images, regions, prompt, use_regions: bool = True) -> torch.Tensor:
        """Next-token logits of every position, (B, S, V); ``use_regions=False`` runs the bare base model
        on the same inputs (to check that untrained adapters change nothing)."""
        prepared = self.prepare(images, regions, prompt)
        with ExitStack() as stack:
            if use_regions:
                stack.enter_context(self.adapters(prepared.tokens))
            return self.model(**prepared.inputs).logits

    def generate(self, images, regions, prompt, max_new_tokens: int = 32, **generate_kwargs: Any) -> list[str]:
        """Answers, one per image (greedy unless ``generate_kwargs`` say otherwise)."""
        prepared = self.prepare(images, regions, prompt)
        generate_kwargs.setdefault("do_sample", False)
        with torch.no_grad(), self.adapters(prepared.tokens):
            out = self.model.generate(**prepared.inputs, max_new_tokens=max_new_tokens, **generate_kwargs)
        new = out[:, prepared.inputs["input_ids"].shape[1] :]  # (B, T)
        return [text.strip() for text in self.tokenizer.batch_decode(new, skip_special_tokens=True)]
