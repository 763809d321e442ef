"""Generated images and videos whose true masks are known, for tests, examples and benchmarks.

Two generators, each the simplest that serves its users:

* :class:`Sprite` scenes: solid rectangles of any size and colour on explicit per-frame paths (partly or wholly
  off screen, occluding each other); :func:`render` draws the frames and returns the true visible masks per
  object, :func:`write_video` encodes them with segvlm's own writer. For tests of the pipeline's logic
  (tracking, corrections, exports) where a scene has to be set up exactly.
* :func:`draw_frame`: a red square moving right and a green one moving down, on black, in pure colours so
  that :class:`segvlm.testing.labelers.SyntheticLabeler` finds them exactly; :func:`write_test_video` and
  :func:`write_test_image` write them near-lossless. For the dataset builder's tests and benchmarks.

Scenes of random shapes with captions (training data, experiments) are :mod:`segvlm.scenes`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

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


_CHANNEL_COLOURS = ((255, 0, 0), (0, 255, 0), (0, 0, 255))


def draw_frame(index: int, height: int = 48, width: int = 64) -> np.ndarray:
    """An (H, W, 3) uint8 frame: a red square moving right and a green one moving down, on black."""
    frame = np.zeros((height, width, 3), dtype=np.uint8)
    side = max(4, min(height, width) // 4)
    x = (4 + 3 * index) % max(1, width - side)
    frame[4 : 4 + side, x : x + side] = _CHANNEL_COLOURS[0]
    y = (4 + 2 * index) % max(1, height - side)
    frame[y : y + side, width - side - 4 : width - 4] = _CHANNEL_COLOURS[1]
    return frame


def write_test_video(path: str | Path, frames: int = 8, height: int = 48, width: int = 64, fps: int = 8) -> Path:
    """Write an mp4 (libx264, near-lossless) of :func:`draw_frame` frames with PyAV; returns the path."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv444p"
        stream.options = {"crf": "0", "preset": "ultrafast"}
        for index in range(frames):
            image = av.VideoFrame.from_ndarray(draw_frame(index, height, width), format="rgb24")
            for packet in stream.encode(image):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_test_image(path: str | Path, index: int = 0, height: int = 48, width: int = 64) -> Path:
    """Write one :func:`draw_frame` frame as PNG (lossless, so masks are exact); returns the path."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(draw_frame(index, height, width)).save(path)
    return path
