"""Old import path of model-name resolution and the tiny random models, kept so code written against it keeps
working: resolution is :mod:`segvlm.resolve`, the builders are :mod:`segvlm.testing.models`."""

from __future__ import annotations

from segvlm.lazy import lazy_getattr
from segvlm.resolve import PREFIX, cache_dir, is_tiny, resolve_model

_BUILDERS = (
    "OWLV2_IMAGE_SIZE",
    "SAM2_IMAGE_SIZE",
    "SAM3_ANCHOR_PHRASES",
    "SAM3_IMAGE_SIZE",
    "build_clip",
    "build_edgetam",
    "build_grounding_dino",
    "build_owlv2",
    "build_sam",
    "build_sam2",
    "build_sam2_hiera_tiny_arch",
    "build_sam3",
    "clip_bpe_vocab",
)
__all__ = ["PREFIX", "cache_dir", "is_tiny", "resolve_model", *_BUILDERS]

__getattr__ = lazy_getattr(__name__, dict.fromkeys(_BUILDERS, "segvlm.testing.models"))
