"""Render a result over its frames: coloured masks, box outlines, ``#id label`` tags, into a video file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from segvlm.palette import PALETTE as OBJECT_PALETTE
from segvlm.types import FrameResult, VideoSegmentation
from segvlm.video import VideoWriter, read_frames

# Track ids cycle through the palette so colours stay stable across frames.
PALETTE = np.array(OBJECT_PALETTE, dtype=np.float32)


def color_for(track_id: int) -> tuple[int, int, int]:
    return tuple(int(v) for v in PALETTE[(track_id - 1) % len(PALETTE)])


class MaskAnnotator:
    """Draws one frame's objects onto an (H, W, 3) uint8 image: ``annotate(image, frame) -> image``."""

    def __init__(self, alpha: float = 0.5, draw_boxes: bool = True, draw_labels: bool = True):
        self.alpha = alpha
        self.draw_boxes = draw_boxes
        self.draw_labels = draw_labels

    def annotate(self, image: np.ndarray, frame: FrameResult) -> np.ndarray:
        from PIL import Image, ImageDraw

        canvas = image.astype(np.float32)  # (H, W, 3)
        for obj in frame:
            mask = obj.mask  # (H, W) bool
            colour = PALETTE[(obj.track_id - 1) % len(PALETTE)]  # (3,)
            canvas[mask] = (1 - self.alpha) * canvas[mask] + self.alpha * colour
        picture = Image.fromarray(canvas.clip(0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(picture)
        for obj in frame:
            colour = color_for(obj.track_id)
            x0, y0, x1, y1 = obj.box_xyxy
            if self.draw_boxes:
                draw.rectangle([x0, y0, x1, y1], outline=colour, width=2)
            if self.draw_labels:
                tag = f"#{obj.track_id} {obj.label}"
                left, top, right, bottom = draw.textbbox((x0, y0), tag)
                y_text = max(0, y0 - (bottom - top) - 4)
                draw.rectangle([x0, y_text, x0 + (right - left) + 4, y_text + (bottom - top) + 4], fill=colour)
                draw.text((x0 + 2, y_text + 1), tag, fill=(0, 0, 0))
        return np.asarray(picture)


def save_overlay(result: VideoSegmentation, path: str, video: Any = None, alpha: float = 0.5) -> str:
    """Write the overlay video for ``result`` to ``path`` (mp4 or webm); returns the path.

    Frames are read again from ``video`` (default: the result's source) as a stream, with the result's
    stride, so the overlay has exactly one frame per processed frame. A ``path`` ending in an image suffix
    (``.png``, ``.jpg``) writes the first frame as a picture: what a still image's overlay should be.
    """
    source = video if video is not None else result.info.source
    if isinstance(source, str) and source.startswith("<"):
        raise ValueError("the result came from in-memory frames; pass them again: save_overlay(path, video=frames)")
    annotator = MaskAnnotator(alpha=alpha)
    frames = read_frames(source, stride=result.info.stride, max_frames=len(result))
    if Path(path).suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"):
        from PIL import Image

        first = next(iter(frames))
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(annotator.annotate(first.image, result[0])).save(path)
        return path
    with VideoWriter(path, result.info.width, result.info.height, fps=result.info.fps or 25.0) as writer:
        for frame_result, frame in zip(result, frames):
            writer.write(annotator.annotate(frame.image, frame_result))
    return path
