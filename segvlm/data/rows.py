"""From a labeler's :class:`segvlm.types.VideoSegmentation` to dataset rows with their images.

The labeler decodes the video itself (it may run on a GPU worker and stream); the images stored in the
rows are decoded again here and matched to the result by source frame index, so a row's image is exactly
the frame the masks were computed on. Still images keep their original file bytes when they are JPEG,
PNG or WebP, so importing a photo does not re-compress it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segvlm.data.schema import Region, Row, region_from_object
from segvlm.types import VideoSegmentation

_KEEP_FORMATS = {"JPEG": "jpeg", "PNG": "png", "WEBP": "webp"}


def encode_image(image: np.ndarray, image_format: str = "jpeg", quality: int = 95) -> bytes:
    """Encode an (H, W, 3) uint8 RGB array as JPEG or PNG bytes."""
    from PIL import Image

    if image_format not in ("jpeg", "png"):
        raise ValueError(f"image_format must be 'jpeg' or 'png', got {image_format!r}")
    buffer = io.BytesIO()
    if image_format == "jpeg":
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    else:
        Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def original_image_bytes(path: str | Path, height: int, width: int) -> bytes | None:
    """The file's own bytes when it is a JPEG/PNG/WebP of the given size (no EXIF rotation), else None."""
    from PIL import Image

    with Image.open(path) as image:
        keep = image.format in _KEEP_FORMATS and image.size == (width, height) and image.mode in ("RGB", "L")
        orientation = image.getexif().get(0x0112, 1) if keep else 1
    if not keep or orientation != 1:
        return None
    return Path(path).read_bytes()


def rows_from_segmentation(
    result: VideoSegmentation,
    path: str,
    source: str,
    *,
    is_image: bool,
    stride: int = 1,
    max_frames: int | None = None,
    caption_templates: Sequence[str] = ("a {label}",),
    image_format: str = "jpeg",
    jpeg_quality: int = 95,
) -> list[Row]:
    """One :class:`Row` per processed frame of ``result`` (frames without objects included).

    Raises ``ValueError`` when the result names a frame that decoding ``path`` does not give, or when its
    size differs from the decoded frame: then masks and pixels would not line up.
    """
    from segvlm.video import read_frames

    wanted = {frame.frame_index: frame for frame in result.frames}
    rows: list[Row] = []
    if wanted:
        frames = read_frames(path, stride=1 if is_image else stride, max_frames=1 if is_image else max_frames)
        for frame in frames:
            found = wanted.get(frame.index)
            if found is None:
                continue
            height, width = frame.image.shape[:2]
            if (found.height, found.width) != (height, width):
                raise ValueError(
                    f"{source}: frame {frame.index} is {height}x{width} but the labeler returned masks of "
                    f"{found.height}x{found.width}; the labeler must return masks at the original frame size"
                )
            data = original_image_bytes(path, height, width) if is_image else None
            if data is None:
                data = encode_image(frame.image, image_format, jpeg_quality)
            key = f"{source}/{frame.index}"
            regions: list[Region] = [
                region_from_object(obj, caption_templates, key)
                for obj in sorted(found.objects, key=lambda o: o.track_id)
            ]
            rows.append(
                Row(
                    image=data,
                    source=source,
                    frame_index=frame.index,
                    width=width,
                    height=height,
                    timestamp=found.timestamp if found.timestamp is not None else frame.timestamp,
                    regions=regions,
                )
            )
            if len(rows) == len(wanted):
                break
    missing = sorted(set(wanted) - {row.frame_index for row in rows})
    if missing:
        raise ValueError(
            f"{source}: the labeler returned frames {missing[:5]} that decoding the file does not "
            f"give (stride={stride}, max_frames={max_frames}); frame indices must be source indices"
        )
    return rows
