"""Shared by the masktok_* examples: a tiny random SmolVLM built offline and a pipeline result to describe."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image

import segvlm
from segvlm.testing.vlm import tiny_model_dir
from segvlm.types import VideoSegmentation

W, H = 64, 48


def scene() -> tuple[VideoSegmentation, Image.Image, int, int]:
    """A pipeline result on a generated two-block clip, its last frame, and one (track id, frame index) in it.

    The result comes from ``segvlm.Pipeline`` with the offline ``tiny-random`` preset, so its masks are
    meaningless but it is exactly what a real run hands to a VLM.
    """
    image = np.full((H, W, 3), 200, np.uint8)
    image[8:40, 4:24] = (200, 40, 40)
    image[20:44, 36:60] = (40, 40, 200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # tiny-random says its masks are meaningless
        pipe = segvlm.Pipeline.from_preset("tiny-random")
    result = pipe("the red block and the blue block", [image] * 3)
    frame = result[-1]
    return result, Image.fromarray(image), frame.objects[0].track_id, frame.frame_index


def tiny_smolvlm() -> Path:
    return tiny_model_dir("smolvlm")
