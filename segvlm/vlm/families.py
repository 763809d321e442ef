"""Per-family prompt conventions: how one user turn with one image is written when the processor has no
chat template (the chat template, when present, is used instead)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PromptFormat:
    """One user turn with one image.

    Attributes:
        template: the turn, with ``{image}`` for the image token(s) and ``{text}`` for the user text.
        image: what stands for the image before the processor expands it.
        nested_images: whether the processor wants ``[[img], [img]]`` (one list per sample).
    """

    template: str
    image: str
    nested_images: bool = False

    def render(self, text: str) -> str:
        return self.template.format(image=self.image, text=text)


PROMPT_FORMATS: dict[str, PromptFormat] = {
    "smolvlm": PromptFormat("<|im_start|>User:{image}{text}<end_of_utterance>\nAssistant:", "<image>", True),
    "idefics3": PromptFormat("<|begin_of_text|>User:{image}{text}<end_of_utterance>\nAssistant:", "<image>", True),
    "qwen2_vl": PromptFormat(
        "<|im_start|>user\n{image}{text}<|im_end|>\n<|im_start|>assistant\n",
        "<|vision_start|><|image_pad|><|vision_end|>",
    ),
    "llava": PromptFormat("USER: {image}\n{text} ASSISTANT:", "<image>"),
}
PROMPT_FORMATS["qwen2_5_vl"] = PROMPT_FORMATS["qwen2_vl"]
GENERIC = PromptFormat("{image}\n{text}\n", "<image>")


def prompt_format(model_type: str) -> PromptFormat:
    return PROMPT_FORMATS.get(model_type, GENERIC)
