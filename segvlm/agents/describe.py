"""describe_region's work: find the region (a remembered track, or a box), read its frame, ask the VLM.

The VLM is anything with the :class:`RegionVLM` shape; :class:`segvlm.vlm.MaskAwareVLM` is one, and its mask
tokenizer decides how the mask reaches the model (numbered marks, coordinates, pooled region tokens...).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from langchain_core.tools import ToolException

from segvlm.types import VideoSegmentation


@runtime_checkable
class RegionVLM(Protocol):
    """What describe_region needs from a VLM: answers about masked regions of images.

    ``generate(images, regions, prompt, max_new_tokens=...)`` takes a list of PIL images, one list of (H, W)
    boolean masks per image (at the image's size) and a prompt in which ``{region1}`` stands for the first
    region, and returns one answer per image. :class:`segvlm.vlm.MaskAwareVLM` has exactly this method: its
    mask tokenizer decides how the mask reaches the model (numbered marks, coordinates, region tokens...).
    """

    def generate(self, images: Any, regions: Any, prompt: Any, max_new_tokens: int = 32) -> list[str]: ...


@dataclass
class Region:
    """The region to describe: its mask at frame size, the frame image, and where it came from."""

    frame: int
    image: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray  # (H, W) bool
    box: tuple[float, float, float, float]
    track_id: int | None = None
    label: str | None = None


def read_frame(path: Path, frame: int, shown: str) -> np.ndarray:
    """The (H, W, 3) uint8 image of source frame ``frame`` of an image or video; a ToolException past the end."""
    from segvlm.errors import FrameIndexError
    from segvlm.video import read_frame as read_source_frame

    try:
        return read_source_frame(str(path), frame).image
    except FrameIndexError as error:
        if error.frames == 1:
            raise ToolException(f"{shown} is a single image; leave frame out (or pass 0), got frame={frame}") from None
        last = error.frames - 1
        raise ToolException(
            f"frame {frame} is past the end of {shown}, which has {error.frames} frames (0..{last})"
        ) from None


def track_region(result: VideoSegmentation | None, path: Path, shown: str, track_id: int, frame: int | None) -> Region:
    """The mask of object ``track_id`` from the latest result for ``path``, at ``frame`` (default: largest)."""
    if result is None:
        raise ToolException(
            f"no objects are known for {shown} yet; call segment_image, track_video or count_objects on it first "
            "and use an id from that answer, or pass a box instead of track_id"
        )
    if track_id not in result.track_ids:
        raise ToolException(
            f"no object with track_id {track_id} in the latest result for {shown} (query {result.query!r}); "
            f"known ids: {result.track_ids}"
        )
    masklet = result.masklet(track_id)
    if frame is None:
        frame = max(masklet, key=lambda index: masklet[index].area)
    elif frame not in masklet:
        present = sorted(masklet)
        shown_frames = present[:20] + (["..."] if len(present) > 20 else [])
        raise ToolException(
            f"object {track_id} is not visible in frame {frame} of {shown}; it is visible in frames {shown_frames} "
            "(leave frame out to use the frame where it looks largest)"
        )
    obj = masklet[frame]
    image = read_frame(path, frame, shown)
    return Region(frame, image, obj.mask, obj.box_xyxy, track_id, obj.label)


def box_region(path: Path, shown: str, box: list[float], frame: int | None) -> Region:
    """A filled rectangle on ``frame`` (default 0), clipped to the frame."""
    frame = 0 if frame is None else frame
    image = read_frame(path, frame, shown)
    height, width = image.shape[:2]
    x0, y0, x1, y1 = box
    c0, r0 = max(int(np.floor(x0)), 0), max(int(np.floor(y0)), 0)
    c1, r1 = min(int(np.ceil(x1)), width), min(int(np.ceil(y1)), height)
    if c1 <= c0 or r1 <= r0:
        raise ToolException(
            f"box {box} lies outside the {width}x{height} frame of {shown}; give [x0, y0, x1, y1] in pixels inside it"
        )
    mask = np.zeros((height, width), dtype=bool)
    mask[r0:r1, c0:c1] = True
    return Region(frame, image, mask, (float(c0), float(r0), float(c1), float(r1)))


def prompt_for(region: Region, question: str) -> str:
    """The question with a reference to the region, as :func:`segvlm.vlm.describe` writes it."""
    if "{region1}" in question:
        return question
    subject = f"Object {region.track_id}" if region.track_id is not None else "The region"
    return f"{subject} is {{region1}}. {question}"


def ask(vlm: Any, region: Region, question: str, max_new_tokens: int) -> str:
    """The VLM's answer to ``question`` about ``region`` (its mask goes through the VLM's mask tokenizer)."""
    from PIL import Image

    if not callable(getattr(vlm, "generate", None)):
        raise ToolException(
            f"the configured VLM ({type(vlm).__name__}) has no generate(images, regions, prompt) method; "
            "configure a segvlm.vlm.MaskAwareVLM"
        )
    image = Image.fromarray(region.image)
    answers = vlm.generate([image], [[region.mask]], prompt_for(region, question), max_new_tokens=max_new_tokens)
    if isinstance(answers, str):
        return answers.strip()
    if not answers:
        raise ToolException("the VLM returned no answer; try rephrasing the question")
    return str(answers[0]).strip()
