"""Mask-aware VLMs: load a VLM with a mask tokenizer, ask about regions, pick regions by description.

* :class:`MaskAwareVLM` wraps SmolVLM (Idefics3), Qwen2-VL / Qwen2.5-VL and LLaVA checkpoints;
* :func:`describe` answers a question about one tracked object of a :class:`segvlm.types.VideoSegmentation`;
* :class:`VLMReferringReranker` picks, among candidate regions, the one a referring expression means.

Imports are lazy so that ``import segvlm.vlm`` does not import torch or transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from segvlm.lazy import lazy_getattr

_EXPORTS = {
    "MaskAwareVLM": "segvlm.vlm.model",
    "VLMInputs": "segvlm.vlm.model",
    "VLMReferringReranker": "segvlm.vlm.rerank",
    "RerankChoice": "segvlm.vlm.rerank",
    "parse_choice": "segvlm.vlm.rerank",
}

__all__ = [
    "MaskAwareVLM",
    "RerankChoice",
    "VLMInputs",
    "VLMReferringReranker",
    "describe",
    "parse_choice",
    "read_frame",
]

# the function shares its module's name; bind it eagerly (the module is light) so the name is the function
from segvlm.vlm import describe as _describe_module  # noqa: E402

describe = _describe_module.describe
read_frame = _describe_module.read_frame

if TYPE_CHECKING:
    from segvlm.vlm.model import MaskAwareVLM, VLMInputs
    from segvlm.vlm.rerank import RerankChoice, VLMReferringReranker, parse_choice


__getattr__ = lazy_getattr(__name__, _EXPORTS)
