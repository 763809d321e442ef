"""Corrections on a finished result: clicks or a box on any frame, a new object, then re-propagation.

Only the corrected track is recomputed, and only on the frames the correction can affect: from the
corrected frame to the end of the video (and, for a new object, backwards to the start). Every other
track's masks stay exactly as they were. The source is decoded again as a stream, so the source must be
re-readable: a path or a list of frames, not a one-shot iterator.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from segvlm.masks import RLE
from segvlm.segmentation.base import FrameMasks, ObjectPrompt
from segvlm.types import Box, ObjectMask
from segvlm.video import read_frames

if TYPE_CHECKING:
    from segvlm.tracking import Pipeline
    from segvlm.types import VideoSegmentation


class Corrector:
    """Applies corrections to ``result`` with ``pipeline``'s segmenter, re-reading frames from ``video``."""

    def __init__(self, pipeline: Pipeline, result: VideoSegmentation, video: Any = None):
        self.pipeline = pipeline
        self.result = result
        self.video = video if video is not None else result.info.source
        if isinstance(self.video, str) and self.video.startswith("<"):
            raise ValueError(
                "this result came from a one-shot frame iterator, which cannot be read again for corrections; "
                "attach with result.attach(pipeline, video=<path or list of frames>)"
            )

    # -- public operations --------------------------------------------------------------------------------
    def add_points(
        self, track_id: int, frame_index: int, points: list[tuple[float, float]], labels: list[int]
    ) -> list[int]:
        position = self._check(track_id, frame_index)
        current = self.result[position].get(track_id)
        box = current.box_xyxy if current is not None else None
        prompt = ObjectPrompt(track_id, box=box, points=[tuple(p) for p in points], labels=list(labels))
        return self._repropagate(track_id, position, prompt, backwards=False)

    def add_box(self, track_id: int, frame_index: int, box_xyxy: Box) -> list[int]:
        position = self._check(track_id, frame_index)
        return self._repropagate(track_id, position, ObjectPrompt(track_id, box=tuple(box_xyxy)), backwards=False)

    def add_object(self, frame_index: int, box_xyxy: Box, label: str = "object") -> int:
        position = self.result.position_of(frame_index)
        track_id = max(self.result.track_ids, default=0) + 1
        self._repropagate(track_id, position, ObjectPrompt(track_id, box=tuple(box_xyxy)), backwards=True, label=label)
        return track_id

    # -- internals ----------------------------------------------------------------------------------------
    def _check(self, track_id: int, frame_index: int) -> int:
        self.result.track(track_id)  # KeyError naming the known ids
        return self.result.position_of(frame_index)

    def _images(self, first: int, last: int) -> Iterator[np.ndarray]:
        """Decoded frames at processed positions ``first..last`` (inclusive), streamed from the source."""
        info = self.result.info
        for position, frame in enumerate(read_frames(self.video, stride=info.stride, max_frames=last + 1)):
            if position >= first:
                yield frame.image

    def _template(self, track_id: int) -> ObjectMask | None:
        for frame in self.result:
            found = frame.get(track_id)
            if found is not None:
                return found
        return None

    def _repropagate(
        self, track_id: int, position: int, prompt: ObjectPrompt, backwards: bool, label: str = "object"
    ) -> list[int]:
        segmenter = self.pipeline.segmenter
        template = self._template(track_id)
        label = template.label if template else label
        phrase = template.phrase if template else self.result.query
        score = template.score if template else 1.0
        min_area = self.pipeline.config.tracking.min_mask_area

        def apply(target: int, output: FrameMasks) -> int:
            """Replace the track's mask in processed frame ``target``; returns that frame's position."""
            frame = self.result[target]
            others = [obj for obj in frame.objects if obj.track_id != track_id]
            mask = output.masks[output.obj_ids.index(track_id)] if track_id in output.obj_ids else None
            if mask is not None and mask.sum() >= min_area:
                rle = RLE.encode(mask)
                others.append(ObjectMask(track_id, label, phrase, score, rle.bbox_xyxy(), rle))
            frame.objects = sorted(others, key=lambda obj: obj.track_id)
            return target

        last = len(self.result) - 1
        # Forwards the frames stream through; backwards needs them reversed, so frames 0..position are held.
        forward = segmenter.track_clip(self._images(position, last), [prompt])
        changed = {apply(target, output) for target, output in zip(range(position, last + 1), forward)}
        if backwards and position > 0:
            past = list(self._images(0, position))[::-1]
            reverse = segmenter.track_clip(past, [prompt])
            changed |= {apply(target, output) for target, output in zip(range(position, -1, -1), reverse)}
        return [self.result[target].frame_index for target in sorted(changed)]
