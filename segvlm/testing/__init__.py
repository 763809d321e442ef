"""Test helpers for segvlm and for code built on it: tiny random models, generated media, a model-free labeler.

* :mod:`segvlm.testing.models`: tiny random-weight detection and segmentation checkpoints (SAM 2, EdgeTAM, SAM,
  SAM 3, OWLv2, Grounding DINO, CLIP), what ``tiny-random:<kind>`` names resolve to;
* :mod:`segvlm.testing.vlm`: a tiny random VLM per family (:func:`tiny_model_dir`);
* :mod:`segvlm.testing.media`: images and videos whose true masks are known (:class:`Sprite` scenes,
  :func:`write_test_video`);
* :mod:`segvlm.testing.labelers`: :class:`SyntheticLabeler`, a labeler for the dataset builder that needs no model.

Names resolve lazily, so ``import segvlm.testing`` imports neither torch nor transformers. segvlm's own code
never imports this package except through :func:`segvlm.resolve.resolve_model`, when a tiny model is asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from segvlm.lazy import lazy_getattr

_MODELS = (
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
_VLM = (
    "REGION_TOKEN",
    "build_idefics3",
    "build_llava",
    "build_qwen2_5_vl",
    "build_qwen2_vl",
    "build_smolvlm",
    "tiny_model_dir",
)
_MEDIA = ("Sprite", "draw_frame", "render", "write_test_image", "write_test_video", "write_video")
_LABELERS = ("BusySyntheticLabeler", "SlowSyntheticLabeler", "SyntheticLabeler")

_EXPORTS = {
    **dict.fromkeys(_MODELS, "segvlm.testing.models"),
    **dict.fromkeys(_VLM, "segvlm.testing.vlm"),
    **dict.fromkeys(_MEDIA, "segvlm.testing.media"),
    **dict.fromkeys(_LABELERS, "segvlm.testing.labelers"),
}

__all__ = [
    "BusySyntheticLabeler",
    "OWLV2_IMAGE_SIZE",
    "REGION_TOKEN",
    "SAM2_IMAGE_SIZE",
    "SAM3_ANCHOR_PHRASES",
    "SAM3_IMAGE_SIZE",
    "SlowSyntheticLabeler",
    "Sprite",
    "SyntheticLabeler",
    "build_clip",
    "build_edgetam",
    "build_grounding_dino",
    "build_idefics3",
    "build_llava",
    "build_owlv2",
    "build_qwen2_5_vl",
    "build_qwen2_vl",
    "build_sam",
    "build_sam2",
    "build_sam2_hiera_tiny_arch",
    "build_sam3",
    "build_smolvlm",
    "clip_bpe_vocab",
    "draw_frame",
    "render",
    "tiny_model_dir",
    "write_test_image",
    "write_test_video",
    "write_video",
]

if TYPE_CHECKING:
    from segvlm.testing.labelers import BusySyntheticLabeler, SlowSyntheticLabeler, SyntheticLabeler
    from segvlm.testing.media import Sprite, draw_frame, render, write_test_image, write_test_video, write_video
    from segvlm.testing.models import (
        OWLV2_IMAGE_SIZE,
        SAM2_IMAGE_SIZE,
        SAM3_ANCHOR_PHRASES,
        SAM3_IMAGE_SIZE,
        build_clip,
        build_edgetam,
        build_grounding_dino,
        build_owlv2,
        build_sam,
        build_sam2,
        build_sam2_hiera_tiny_arch,
        build_sam3,
        clip_bpe_vocab,
    )
    from segvlm.testing.vlm import (
        REGION_TOKEN,
        build_idefics3,
        build_llava,
        build_qwen2_5_vl,
        build_qwen2_vl,
        build_smolvlm,
        tiny_model_dir,
    )

__getattr__ = lazy_getattr(__name__, _EXPORTS)
