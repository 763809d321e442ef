"""One record per VLM family: everything segvlm knows about a family, in one place.

A family is the set of checkpoints whose ``config.json`` names one of its ``model_types``. Its
:class:`VLMFamily` record says how a user turn with an image is written when the processor has no chat
template, which coordinate syntax the family reads and writes, which :class:`~segvlm.masktok.layouts.VisionLayout`
maps masks onto its vision tokens, which parameter names are its vision tower and its vision-to-LM connector
(what training freezes or trains), and which tiny random model stands in for it in tests
(``tiny-random:<kind>``). Every module reads these records (:func:`family_for`), so supporting a new family
is one new record here plus one line in :data:`FAMILIES` (and a parameter in ``tests/test_family_contract.py``).

The records are plain data: layouts and tiny builders are named as ``"module:attribute"`` strings and imported
only when used, so reading a record never imports torch or transformers.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PromptFormat:
    """One user turn with one image, for processors without a chat template.

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


#: the turn written for a model whose family segvlm does not know
GENERIC = PromptFormat("{image}\n{text}\n", "<image>")


def _load(spec: str) -> Any:
    """The attribute named by a ``"package.module:attribute"`` string."""
    module, _, attribute = spec.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class VLMFamily:
    """What segvlm knows about one VLM family.

    Attributes:
        name: the family's name (``"qwen2_vl"``); also what ``tiny_model_dir`` takes.
        model_types: the ``model_type`` values (a checkpoint's ``config.json``) of the family.
        prompt: the user turn written when the processor has no chat template.
        coordinates: the name of the family's box syntax in :data:`segvlm.masktok.coords.FORMATS` (the text
            design's ``format="auto"``); ``"generic"`` for families trained on none.
        layout: ``"module:Class"`` of the family's :class:`~segvlm.masktok.layouts.VisionLayout`; None when the
            pooled and encoder designs do not support the family (the text and set_of_mark designs still do).
        vision_modules: parameter-name parts of the vision tower (``trainable.vision`` in training).
        connector_modules: parameter-name parts of the vision-to-LM connector (``trainable.connector``); checked
            before ``vision_modules``, since a connector may sit inside the tower (Qwen2-VL's ``visual.merger``).
        tiny_kind: the ``<kind>`` of its tiny random model ``tiny-random:<kind>``; None when it has none.
        tiny_builder: ``"module:function"`` that writes that model into a folder (``function(folder)``).
    """

    name: str
    model_types: tuple[str, ...]
    prompt: PromptFormat = GENERIC
    coordinates: str = "generic"
    layout: str | None = None
    vision_modules: tuple[str, ...] = ()
    connector_modules: tuple[str, ...] = ()
    tiny_kind: str | None = None
    tiny_builder: str | None = None

    @property
    def tiny_model(self) -> str | None:
        """The ``tiny-random:<kind>`` name of the family's tiny model, or None."""
        return None if self.tiny_kind is None else f"tiny-random:{self.tiny_kind}"

    def layout_class(self) -> type:
        """The :class:`~segvlm.masktok.layouts.VisionLayout` subclass of the family (imports torch)."""
        if self.layout is None:
            raise ValueError(f"the {self.name} family has no vision layout")
        return _load(self.layout)

    def coordinate_format(self, image_processor: Any = None) -> Any:
        """The family's :class:`~segvlm.masktok.coords.CoordinateFormat`; formats whose grid depends on the
        image processor (Qwen2.5-VL's resized pixels) read it from ``image_processor`` when given."""
        return coordinate_format(self.coordinates, image_processor)

    def build_tiny(self, folder: Any) -> Any:
        """Write the family's tiny random model into ``folder`` (see :mod:`segvlm.testing.vlm`)."""
        if self.tiny_builder is None:
            raise ValueError(f"the {self.name} family has no tiny random model")
        return _load(self.tiny_builder)(folder)

    def param_group(self, name: str) -> str | None:
        """``"connector"`` or ``"vision"`` when parameter ``name`` belongs to that part of the model, else None."""
        if any(part in name for part in self.connector_modules):
            return "connector"
        if any(part in name for part in self.vision_modules):
            return "vision"
        return None


def coordinate_format(name: str, image_processor: Any = None) -> Any:
    """The coordinate format called ``name`` in :data:`segvlm.masktok.coords.FORMATS`, built from
    ``image_processor`` when the format reads its grid from one."""
    from segvlm.masktok.coords import FORMATS

    cls = FORMATS[name]
    if image_processor is not None and hasattr(cls, "from_processor"):
        return cls.from_processor(image_processor)
    return cls()


_IDEFICS3_PARTS = {"vision_modules": ("vision_model",), "connector_modules": ("connector",)}
_QWEN_PARTS = {"vision_modules": ("visual",), "connector_modules": ("merger",)}
_QWEN_PROMPT = PromptFormat(
    "<|im_start|>user\n{image}{text}<|im_end|>\n<|im_start|>assistant\n", "<|vision_start|><|image_pad|><|vision_end|>"
)

SMOLVLM = VLMFamily(
    name="smolvlm",
    model_types=("smolvlm",),
    prompt=PromptFormat("<|im_start|>User:{image}{text}<end_of_utterance>\nAssistant:", "<image>", True),
    layout="segvlm.masktok.layouts:Idefics3Layout",
    **_IDEFICS3_PARTS,
    tiny_kind="smolvlm",
    tiny_builder="segvlm.testing.vlm:build_smolvlm",
)
IDEFICS3 = VLMFamily(
    name="idefics3",
    model_types=("idefics3",),
    prompt=PromptFormat("<|begin_of_text|>User:{image}{text}<end_of_utterance>\nAssistant:", "<image>", True),
    layout="segvlm.masktok.layouts:Idefics3Layout",
    **_IDEFICS3_PARTS,
    tiny_kind="idefics3",
    tiny_builder="segvlm.testing.vlm:build_idefics3",
)
QWEN2_VL = VLMFamily(
    name="qwen2_vl",
    model_types=("qwen2_vl",),
    prompt=_QWEN_PROMPT,
    coordinates="qwen2_vl",
    layout="segvlm.masktok.layouts:Qwen2VLLayout",
    **_QWEN_PARTS,
    tiny_kind="qwen2-vl",
    tiny_builder="segvlm.testing.vlm:build_qwen2_vl",
)
QWEN2_5_VL = VLMFamily(
    name="qwen2_5_vl",
    model_types=("qwen2_5_vl",),
    prompt=_QWEN_PROMPT,
    coordinates="qwen2_5_vl",
    layout="segvlm.masktok.layouts:Qwen25VLLayout",
    **_QWEN_PARTS,
    tiny_kind="qwen2-5-vl",
    tiny_builder="segvlm.testing.vlm:build_qwen2_5_vl",
)
LLAVA = VLMFamily(
    name="llava",
    model_types=("llava",),
    prompt=PromptFormat("USER: {image}\n{text} ASSISTANT:", "<image>"),
    layout="segvlm.masktok.layouts:LlavaLayout",
    vision_modules=("vision_tower",),
    connector_modules=("multi_modal_projector",),
    tiny_kind="llava",
    tiny_builder="segvlm.testing.vlm:build_llava",
)
# Families read through their coordinate syntax only (the text design); no layout and no tiny model yet.
PALIGEMMA = VLMFamily(name="paligemma", model_types=("paligemma",), coordinates="paligemma")
KOSMOS2 = VLMFamily(name="kosmos2", model_types=("kosmos-2",), coordinates="kosmos2")

#: every known family; the one place a new family is registered
FAMILIES: tuple[VLMFamily, ...] = (SMOLVLM, IDEFICS3, QWEN2_VL, QWEN2_5_VL, LLAVA, PALIGEMMA, KOSMOS2)

#: the parameter-name parts of any known family, for parameters of a model whose family is unknown
VISION_MODULES: tuple[str, ...] = tuple(dict.fromkeys(p for f in FAMILIES for p in f.vision_modules))
CONNECTOR_MODULES: tuple[str, ...] = tuple(dict.fromkeys(p for f in FAMILIES for p in f.connector_modules))


def family_for(model_type: str) -> VLMFamily | None:
    """The family whose ``model_types`` hold ``model_type``; None for a model segvlm has no record of."""
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    return None


def family(name: str) -> VLMFamily:
    """The family called ``name`` (``"qwen2_vl"``; ``"qwen2-vl"``, its tiny kind, works too)."""
    for record in FAMILIES:
        if name in (record.name, record.tiny_kind):
            return record
    raise ValueError(f"unknown VLM family {name!r}; known: {[f.name for f in FAMILIES]}")


def prompt_format(model_type: str) -> PromptFormat:
    """The user turn of ``model_type``'s family, or :data:`GENERIC`."""
    found = family_for(model_type)
    return found.prompt if found is not None else GENERIC


def layout_model_types() -> list[str]:
    """Every ``model_type`` that has a vision layout (the pooled and encoder designs), sorted."""
    return sorted(t for f in FAMILIES if f.layout is not None for t in f.model_types)
