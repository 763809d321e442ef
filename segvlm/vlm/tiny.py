"""Old import path of the tiny random VLMs, kept so code written against it keeps working; they live in
:mod:`segvlm.testing.vlm` now."""

from __future__ import annotations

from segvlm.lazy import lazy_getattr

_EXPORTS = (
    "REGION_TOKEN",
    "build",
    "build_idefics3",
    "build_llava",
    "build_qwen2_5_vl",
    "build_qwen2_vl",
    "build_smolvlm",
    "tiny_model_dir",
)
__all__ = list(_EXPORTS)

__getattr__ = lazy_getattr(__name__, dict.fromkeys(_EXPORTS, "segvlm.testing.vlm"))
