"""Generated videos whose true masks are known, for testing the pipeline's own logic.

A scene is a list of coloured rectangles, each with a colour and a per-frame position (or None while it is
off screen). ``render`` draws the frames and returns the true masks per object.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BACKGROUND = (40, 40, 40)


@dataclass
class Sprite:
    """A solid rectangle of ``size`` (h, w) whose top-left corner is ``path[t]`` (None = not in frame t)."""

    name: str
    color: tuple[int, int, int]
    size: tuple[int, int]
    path: list[tuple[int, int] | None] = field(default_factory=list)


def render(sprites: list[Sprite], height: int, width: int, frames: int):
    """Frames (list of (H, W, 3) uint8) and true visible masks {name: list of (H, W) bool} per frame."""
    images, truth = [], {s.name: [] for s in sprites}
    for t in range(frames):
        image = np.empty((height, width, 3), dtype=np.uint8)
        image[:] = BACKGROUND
        for sprite in sprites:
            mask = np.zeros((height, width), dtype=bool)
            corner = sprite.path[t] if t < len(sprite.path) else None
            if corner is not None:
                y, x = corner
                mask[max(y, 0) : max(y + sprite.size[0], 0), max(x, 0) : max(x + sprite.size[1], 0)] = True
                image[mask] = sprite.color
                for earlier in truth.values():  # later sprites occlude earlier ones: truth is what is visible
                    if len(earlier) == t + 1:
                        earlier[t] = earlier[t] & ~mask
            truth[sprite.name].append(mask)
        images.append(image)
    return images, truth


def write_video(path, images, fps: float = 10.0) -> str:
    """Encode frames to an mp4 with segvlm's PyAV writer (H.264)."""
    from segvlm.video import VideoWriter

    with VideoWriter(path, images[0].shape[1], images[0].shape[0], fps=fps) as writer:
        for image in images:
            writer.write(image)
    return str(path)
