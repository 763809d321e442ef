"""Shared by the masktok_* examples: a tiny random SmolVLM built offline and a hand-built result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from segvlm.masks import RLE  # noqa: E402
from segvlm.types import FrameResult, ObjectMask, VideoInfo, VideoSegmentation  # noqa: E402
from segvlm.vlm.tiny import tiny_model_dir  # noqa: E402

W, H = 64, 48


def scene() -> tuple[VideoSegmentation, Image.Image]:
    """One frame (source index 40) with two objects, ids 3 and 5, and the frame image."""
    image = np.full((H, W, 3), 200, np.uint8)
    masks = {3: np.zeros((H, W), bool), 5: np.zeros((H, W), bool)}
    masks[3][8:40, 4:24] = True
    masks[5][20:44, 36:60] = True
    image[masks[3]] = (200, 40, 40)
    image[masks[5]] = (40, 40, 200)
    objects = [
        ObjectMask(
            track_id=t,
            label="block",
            phrase="a block",
            score=0.9,
            box_xyxy=RLE.encode(m).bbox_xyxy(),
            rle=RLE.encode(m),
        )
        for t, m in masks.items()
    ]
    frame = FrameResult(frame_index=40, height=H, width=W, objects=objects)
    result = VideoSegmentation(
        info=VideoInfo(source="<frames>", height=H, width=W), query="block", phrases=["block"], frames=[frame]
    )
    return result, Image.fromarray(image)


def tiny_smolvlm() -> Path:
    return tiny_model_dir("smolvlm")
