"""Per-frame indexed PNG masks in the DAVIS layout: one 8-bit palette PNG per processed frame.

Each ``{frame_index:05d}.png`` holds an (H, W) map whose pixel value is the object's index (0 = background),
with the DAVIS / PASCAL VOC colour map as palette, as DAVIS and YouTube-VOS annotations are stored. The
object index is the track id itself (DAVIS annotations use object ids directly), so ids must fit in 1..255;
a larger id is refused rather than silently renumbered. PNG is lossless: reading a file back with PIL gives
the index map exactly.

One pixel holds one index: where masks overlap, the object with the higher track id wins (objects are
painted in ascending id order). ``objects.json`` beside the PNGs maps each index to its track id and label
and lists the frame indices and the frame size.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from segvlm.export.registry import ExportError
from segvlm.types import FrameResult, VideoSegmentation

MAX_INDEX = 255


def voc_colormap(count: int = 256) -> np.ndarray:
    """The PASCAL VOC / DAVIS colour map: a (count, 3) uint8 array (1 = (128, 0, 0), 2 = (0, 128, 0), ...).

    Index ``i``'s bits are dealt round-robin to R, G, B, from the most significant bit down.
    """
    indices = np.arange(count)  # (count,)
    colours = np.zeros((count, 3), dtype=np.int64)  # (count, 3)
    code = indices.copy()
    for shift in range(7, -1, -1):
        for channel in range(3):
            colours[:, channel] |= ((code >> channel) & 1) << shift
        code >>= 3
    return colours.astype(np.uint8)


def index_map(frame: FrameResult, height: int, width: int) -> np.ndarray:
    """One frame's objects as an (H, W) uint8 map of track ids, 0 = background, higher id on top."""
    indices = np.zeros((height, width), dtype=np.uint8)  # (H, W)
    for obj in sorted(frame.objects, key=lambda o: o.track_id):
        indices[obj.mask] = obj.track_id
    return indices


def _check_track_ids(result: VideoSegmentation) -> None:
    for track_id in result.track_ids:
        if not 1 <= track_id <= MAX_INDEX:
            raise ExportError(
                f"track id {track_id} does not fit an 8-bit PNG mask (object indices are 1..{MAX_INDEX}, 0 is "
                f"background); remove or renumber that track first (result.remove_track({track_id})), or export "
                "'ytvis' or 'coco', which have no id limit"
            )


def write_png_masks(result: VideoSegmentation, out_dir: str | Path, video: Any = None) -> list[Path]:
    """Write ``{frame_index:05d}.png`` per processed frame and ``objects.json`` into ``out_dir``; returns the paths.

    ``video`` is not read (the masks are in the result); it is there for the export registry's signature."""
    from PIL import Image

    _check_track_ids(result)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    palette = voc_colormap().reshape(-1).tolist()  # 768 ints: R, G, B per index
    written: list[Path] = []
    labels: dict[int, str] = {}
    for frame in result:
        for obj in frame:
            labels.setdefault(obj.track_id, obj.label)
        indices = index_map(frame, frame.height, frame.width)  # (H, W) uint8
        picture = Image.frombytes("P", (frame.width, frame.height), np.ascontiguousarray(indices).tobytes())
        picture.putpalette(palette)
        path = out_dir / f"{frame.frame_index:05d}.png"
        picture.save(path, optimize=False)
        written.append(path)
    objects = {
        "objects": {str(track_id): {"track_id": track_id, "label": labels[track_id]} for track_id in sorted(labels)},
        "frames": [frame.frame_index for frame in result],
        "height": result.info.height,
        "width": result.info.width,
    }
    path = out_dir / "objects.json"
    path.write_text(json.dumps(objects, indent=1))
    written.append(path)
    return written
