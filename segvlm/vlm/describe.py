"""Ask a VLM about one tracked object in one frame of a segmentation result.

``describe(result, track_id=3, frame_index=40, question="What is it doing?", vlm=vlm)`` takes object 3's
mask in source frame 40, hands it to the VLM through the VLM's mask tokenizer, and returns the answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

    from segvlm.types import VideoSegmentation


def read_frame(video: str | Path, frame_index: int) -> Image.Image:
    """Source frame ``frame_index`` (0-based) of a video, an image, a folder of frames or a glob pattern.

    Frames are read as the pipeline read them (:func:`segvlm.video.read_frame`): a photo is upright as its
    EXIF orientation says, so it lines up with masks computed on it.
    """
    from PIL import Image

    from segvlm.errors import FrameIndexError
    from segvlm.video import read_frame as read_source_frame

    try:
        frame = read_source_frame(video, frame_index)
    except FrameIndexError as error:
        raise ValueError(
            f"{video} has {error.frames} frames, so frame {frame_index} does not exist; "
            "pass a frame_index of the result (result.frame(...)) that is inside the video"
        ) from None
    return Image.fromarray(frame.image)


def describe(
    result: VideoSegmentation,
    track_id: int,
    frame_index: int,
    question: str,
    vlm: Any,
    image: Image.Image | None = None,
    video: str | Path | None = None,
    max_new_tokens: int = 48,
) -> str:
    """Answer ``question`` about object ``track_id`` in source frame ``frame_index``.

    Args:
        result: the segmentation holding the object's mask.
        track_id, frame_index: which object, in which source frame (not the position in ``result``).
        question: e.g. ``"What is it doing?"``; write ``{region1}`` to place the object's reference yourself.
        vlm: a :class:`segvlm.vlm.MaskAwareVLM`.
        image: the decoded frame; when omitted it is read from ``video`` or from ``result.info.source``.
        video: path of the source video.
    """
    frame = result.frame(frame_index)
    obj = frame.get(track_id)
    if obj is None:
        raise KeyError(f"object {track_id} is not in frame {frame_index}; objects there: {frame.track_ids}")
    if image is None:
        source = str(video) if video is not None else result.info.source
        if source.startswith("<"):
            raise ValueError(f"no image given and the result's source is {source!r}, not a file; pass image= or video=")
        image = read_frame(source, frame_index)
    if image.size != (frame.width, frame.height):
        raise ValueError(
            f"the image is {image.size[0]}x{image.size[1]} (WxH) but frame {frame_index} was "
            f"segmented at {frame.width}x{frame.height}; pass the original frame"
        )
    if "{region1}" not in question:
        question = f"Object {track_id} is {{region1}}. {question}"
    return vlm.generate([image.convert("RGB")], [[obj.rle]], question, max_new_tokens=max_new_tokens)[0]
