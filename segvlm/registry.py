"""Backends by name, imported only when built (``"module:Class"`` strings, no heavy import up front)."""

from __future__ import annotations

import importlib
from typing import Any

from segvlm.errors import UnknownBackendError

GROUNDERS: dict[str, str] = {
    "owlv2": "segvlm.grounding.owlv2:Owlv2Grounder",
    "grounding-dino": "segvlm.grounding.grounding_dino:GroundingDinoGrounder",
}

SEGMENTERS: dict[str, str] = {
    "sam2": "segvlm.segmentation.sam2:Sam2VideoSegmenter",
    "edgetam": "segvlm.segmentation.sam2:EdgeTamVideoSegmenter",
    "sam": "segvlm.segmentation.sam_image:SamImageSegmenter",
    "sam3": "segvlm.segmentation.sam3:Sam3VideoSegmenter",  # text-native: replaces the grounder too
}


def _resolve(table: dict[str, str], kind: str, name: str) -> Any:
    if name not in table:
        raise UnknownBackendError(f"unknown {kind} {name!r}; known {kind}s: {sorted(table)}")
    module_name, _, class_name = table[name].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def grounder_class(name: str) -> Any:
    """The grounder class registered under ``name``."""
    return _resolve(GROUNDERS, "grounder", name)


def segmenter_class(name: str) -> Any:
    """The segmenter class registered under ``name``."""
    return _resolve(SEGMENTERS, "segmenter", name)


def list_grounders() -> list[str]:
    return sorted(GROUNDERS)


def list_segmenters() -> list[str]:
    return sorted(SEGMENTERS)
