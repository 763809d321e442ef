"""A model-free labeler, for tests, examples and benchmarks of the dataset builder.

:class:`SyntheticLabeler` finds pure red, green and blue blobs by thresholding the decoded frames, so its
masks are exact and predictable without any model; :func:`segvlm.testing.media.write_test_video` draws such
blobs moving over a black background. Together they exercise every part of the builder (decoding, RLE,
shards, resume, Ray) in milliseconds. Name it as ``--labeler segvlm.testing:SyntheticLabeler``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from segvlm.masks import RLE
from segvlm.types import FrameResult, ObjectMask, VideoInfo, VideoSegmentation


@dataclass
class SyntheticLabeler:
    """Labels phrase ``k`` of the query as the pixels where colour channel ``k % 3`` is bright and the
    others dark (red, green, blue), one track per phrase.

    Attributes:
        seconds_per_frame: simulated model time per frame, to make builds slow enough to interrupt or
            to measure scaling.
        busy: burn CPU for that time (a stand-in for a model) instead of sleeping.
    """

    seconds_per_frame: float = 0.0
    busy: bool = False
    name: str = "synthetic"

    def _work(self) -> None:
        if self.seconds_per_frame <= 0:
            return
        deadline = time.perf_counter() + self.seconds_per_frame
        if not self.busy:
            time.sleep(self.seconds_per_frame)
            return
        block = np.ones((64, 64), dtype=np.float32)
        while time.perf_counter() < deadline:
            block = np.tanh(block @ block)

    def __call__(self, query: str | list[str], source: str, max_frames: int | None, stride: int) -> VideoSegmentation:
        from segvlm.video import read_frames

        phrases = [query] if isinstance(query, str) else list(query)
        frames = read_frames(source, stride=stride, max_frames=max_frames)
        results = []
        for frame in frames:
            self._work()
            image = frame.image.astype(np.int16)  # (H, W, 3)
            height, width = image.shape[:2]
            objects = []
            for k, phrase in enumerate(phrases):
                channel = k % 3
                others = [c for c in range(3) if c != channel]
                mask = (image[:, :, channel] > 127) & (image[:, :, others] < 128).all(axis=2)  # (H, W)
                if not mask.any():
                    continue
                rle = RLE.encode(mask)
                objects.append(
                    ObjectMask(
                        track_id=k + 1,
                        label=phrase,
                        phrase=phrase,
                        score=0.9,
                        box_xyxy=rle.bbox_xyxy(),
                        rle=rle,
                    )
                )
            results.append(
                FrameResult(
                    frame_index=frame.index,
                    height=height,
                    width=width,
                    timestamp=frame.timestamp,
                    objects=objects,
                )
            )
        meta = frames.meta
        return VideoSegmentation(
            info=VideoInfo(source=str(source), height=meta.height, width=meta.width, fps=meta.fps, stride=stride),
            query=query if isinstance(query, str) else ", ".join(query),
            phrases=phrases,
            frames=results,
            meta={"labeler": self.name, "thresholds": {"channel_on": 127, "channel_off": 128}},
        )


@dataclass
class SlowSyntheticLabeler(SyntheticLabeler):
    """:class:`SyntheticLabeler` that sleeps 50 ms per frame: slow enough to interrupt a build mid-way."""

    seconds_per_frame: float = 0.05


@dataclass
class BusySyntheticLabeler(SyntheticLabeler):
    """:class:`SyntheticLabeler` that burns 50 ms of CPU per frame: a model stand-in for scaling benchmarks."""

    seconds_per_frame: float = 0.05
    busy: bool = True
